"""auditevent: who (token id and name) changed which release, when, and the index version
the change signed (GET /v1/audit, `modelsync release audit`).

Revision ID: 0003_audit_event
Revises: 0002_health_since
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_audit_event"
down_revision: str | None = "0002_health_since"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auditevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_token_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("index_version", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["actor_token_id"], ["apitoken.id"]),
        sa.ForeignKeyConstraint(["release_id"], ["release.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_auditevent_at"), "auditevent", ["at"], unique=False)
    op.create_index(op.f("ix_auditevent_release_id"), "auditevent", ["release_id"], unique=False)
    op.create_index(op.f("ix_auditevent_fleet"), "auditevent", ["fleet"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_auditevent_fleet"), table_name="auditevent")
    op.drop_index(op.f("ix_auditevent_release_id"), table_name="auditevent")
    op.drop_index(op.f("ix_auditevent_at"), table_name="auditevent")
    op.drop_table("auditevent")
