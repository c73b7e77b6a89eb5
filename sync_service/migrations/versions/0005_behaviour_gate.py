"""release.behaviour_gate: a release's behaviour-gate bounds (sync_service/behaviour.py).

Revision ID: 0005_behaviour_gate
Revises: 0004_console_session
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_behaviour_gate"
down_revision: str | None = "0004_console_session"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("release", schema=None) as batch:
        batch.add_column(sa.Column("behaviour_gate", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("release", schema=None) as batch:
        batch.drop_column("behaviour_gate")
