"""release.phases, phase, phase_since: phased ramps (sync_service/phases.py).

Revision ID: 0006_release_phases
Revises: 0005_behaviour_gate
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_release_phases"
down_revision: str | None = "0005_behaviour_gate"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("release", schema=None) as batch:
        batch.add_column(sa.Column("phases", sa.Text(), nullable=True))
        batch.add_column(sa.Column("phase", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("phase_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("release", schema=None) as batch:
        batch.drop_column("phase_since")
        batch.drop_column("phase")
        batch.drop_column("phases")
