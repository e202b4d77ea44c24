"""settlements: each reading's settled / outlier / pending; corrections keep the checks' verdict

Revision ID: 0005_settlements
Revises: 0004_device_lifecycle_commands
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_settlements"
down_revision = "0004_device_lifecycle_commands"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "settlements",
        sa.Column("reading_id", ID, nullable=False),
        sa.Column("meter_serial", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("value", sa.String(length=24), nullable=True),
        sa.Column("correction_id", ID, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('settled', 'outlier', 'pending')", name=op.f("ck_settlements_state")),
        sa.ForeignKeyConstraint(["correction_id"], ["corrections.id"],
                                name=op.f("fk_settlements_correction_id_corrections")),
        sa.ForeignKeyConstraint(["reading_id"], ["readings.id"], name=op.f("fk_settlements_reading_id_readings")),
        sa.PrimaryKeyConstraint("reading_id", name=op.f("pk_settlements")),
    )
    op.create_index("ix_settlements_meter_serial_state", "settlements", ["meter_serial", "state"], unique=False)
    # Corrections made before the checks existed count as accepted (they may already be billed).
    with op.batch_alter_table("corrections") as batch:
        batch.add_column(sa.Column("state", sa.String(length=8), server_default="accepted", nullable=False))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("plausible_low", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("plausible_high", sa.String(length=24), nullable=True))
        batch.create_check_constraint("state", "state IN ('accepted', 'refused', 'review')")


def downgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.drop_constraint(op.f("ck_corrections_state"), type_="check")
        batch.drop_column("plausible_high")
        batch.drop_column("plausible_low")
        batch.drop_column("reason")
        batch.drop_column("state")
    op.drop_index("ix_settlements_meter_serial_state", table_name="settlements")
    op.drop_table("settlements")
