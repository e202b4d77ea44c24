"""device lifecycle (retired_at, replaced_by) and the command audit log

Revision ID: 0004_device_lifecycle_commands
Revises: 0003_web_users
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_device_lifecycle_commands"
down_revision = "0003_web_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replaced_by", sa.String(length=64), nullable=True))
    op.create_table(
        "command_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("command_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("args", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=254), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_log")),
        sa.UniqueConstraint("command_id", name=op.f("uq_command_log_command_id")),
    )
    op.create_index("ix_command_log_device_id_requested_at", "command_log", ["device_id", "requested_at"])


def downgrade() -> None:
    op.drop_index("ix_command_log_device_id_requested_at", table_name="command_log")
    op.drop_table("command_log")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("replaced_by")
        batch.drop_column("retired_at")
