"""readings.epoch: (device_id, epoch, seq) is unique, so a device with a new outbox (seq from 1 again)
loses nothing. v1 readings (no epoch on the wire) are filed under epoch 0.

Revision ID: 0006_readings_epoch
Revises: 0005_settlements
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_readings_epoch"
down_revision = "0005_settlements"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("readings") as batch:
        batch.add_column(sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False))
        batch.drop_constraint(op.f("uq_readings_device_id_seq"), type_="unique")
        batch.create_unique_constraint(op.f("uq_readings_device_id_epoch_seq"), ["device_id", "epoch", "seq"])


def downgrade() -> None:
    # Only possible while no device has two epochs with the same seq.
    with op.batch_alter_table("readings") as batch:
        batch.drop_constraint(op.f("uq_readings_device_id_epoch_seq"), type_="unique")
        batch.create_unique_constraint(op.f("uq_readings_device_id_seq"), ["device_id", "seq"])
        batch.drop_column("epoch")
