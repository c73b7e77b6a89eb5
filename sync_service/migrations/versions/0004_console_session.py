"""consolesession: release console logins (sync_service/console/sessions.py).

Revision ID: 0004_console_session
Revises: 0003_audit_event
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_console_session"
down_revision: str | None = "0003_audit_event"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consolesession",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["apitoken.id"]),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    op.create_index(op.f("ix_consolesession_token_id"), "consolesession", ["token_id"], unique=False)
    op.create_index(op.f("ix_consolesession_expires_at"), "consolesession", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_consolesession_expires_at"), table_name="consolesession")
    op.drop_index(op.f("ix_consolesession_token_id"), table_name="consolesession")
    op.drop_table("consolesession")
