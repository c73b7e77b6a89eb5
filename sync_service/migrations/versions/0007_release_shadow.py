"""release.mode, report_rows, report_hours: shadow releases (docs/behaviour.md "Shadow runs").

Revision ID: 0007_release_shadow
Revises: 0006_release_phases
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_release_shadow"
down_revision: str | None = "0006_release_phases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("release", schema=None) as batch:
        batch.add_column(sa.Column("mode", sa.String(length=16), nullable=False, server_default="install"))
        batch.add_column(sa.Column("report_rows", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("report_hours", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("release", schema=None) as batch:
        batch.drop_column("report_hours")
        batch.drop_column("report_rows")
        batch.drop_column("mode")
