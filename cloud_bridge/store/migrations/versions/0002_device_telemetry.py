"""device_telemetry: the newest telemetry of each device (fleet page, devices list, metrics)

Revision ID: 0002_device_telemetry
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_device_telemetry"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_telemetry",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uptime_s", sa.Float(), nullable=False),
        sa.Column("outbox_depth", sa.Integer(), nullable=False),
        sa.Column("outbox_dropped", sa.Integer(), nullable=False),
        sa.Column("outbox_rejected", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("cpu_temp_c", sa.Float(), nullable=True),
        sa.Column("free_disk_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disk_full", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("commands_refused", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"],
                                name=op.f("fk_device_telemetry_device_id_devices")),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_telemetry")),
    )


def downgrade() -> None:
    op.drop_table("device_telemetry")
