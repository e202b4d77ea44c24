"""photo readings: a resident's photo of a meter as a reading (readings.source), meters with no device
(bindings.device_id NULL), the wheels a meter has, and the photos themselves as evidence

Revision ID: 0007_photo_readings
Revises: 0006_readings_epoch
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_photo_readings"
down_revision = "0006_readings_epoch"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PHOTO_MAX_BYTES = 3 * 1024 * 1024  # cloud_bridge.store.tables.PHOTO_MAX_BYTES when this was written
OPEN_PHOTO = "device_id IS NULL AND valid_to IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("meters") as batch:
        batch.add_column(sa.Column("digits", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("decimals", sa.Integer(), nullable=True))
    with op.batch_alter_table("bindings") as batch:
        batch.alter_column("device_id", existing_type=sa.String(length=64), nullable=True)
    op.create_index("uq_bindings_open_photo_meter", "bindings", ["meter_serial"], unique=True,
                    sqlite_where=sa.text(OPEN_PHOTO), postgresql_where=sa.text(OPEN_PHOTO))
    with op.batch_alter_table("readings") as batch:
        batch.alter_column("device_id", existing_type=sa.String(length=64), nullable=True)
        batch.add_column(sa.Column("source", sa.String(length=8), server_default="device", nullable=False))
        batch.create_check_constraint("source", "source IN ('device', 'photo')")
    op.create_table(
        "photo_readings",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("payer_code", sa.String(length=10), nullable=False),
        sa.Column("meter_serial", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("image_bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("upload_format", sa.String(length=8), nullable=False),
        sa.Column("upload_bytes", sa.Integer(), nullable=False),
        sa.Column("proposal", sa.Text(), nullable=False),
        sa.Column("proposed_value", sa.String(length=24), nullable=True),
        sa.Column("reader_status", sa.String(length=16), nullable=False),
        sa.Column("box_moved", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("reading_id", ID, nullable=True),
        sa.Column("value", sa.String(length=24), nullable=True),
        sa.Column("edited", sa.Boolean(), nullable=True),
        sa.Column("state", sa.String(length=8), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"image_bytes > 0 AND image_bytes <= {PHOTO_MAX_BYTES}",
                           name=op.f("ck_photo_readings_image_bytes")),
        sa.CheckConstraint("reader_status IN ('ok', 'unsure', 'no_counter')",
                           name=op.f("ck_photo_readings_reader_status")),
        sa.CheckConstraint("state IS NULL OR state IN ('accepted', 'review')", name=op.f("ck_photo_readings_state")),
        sa.ForeignKeyConstraint(["meter_serial"], ["meters.serial"],
                                name=op.f("fk_photo_readings_meter_serial_meters")),
        sa.ForeignKeyConstraint(["payer_code"], ["payers.payer_code"],
                                name=op.f("fk_photo_readings_payer_code_payers")),
        sa.ForeignKeyConstraint(["reading_id"], ["readings.id"], name=op.f("fk_photo_readings_reading_id_readings")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_photo_readings_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photo_readings")),
        sa.UniqueConstraint("reading_id", name=op.f("uq_photo_readings_reading_id")),
    )
    op.create_index("ix_photo_readings_payer_code_created_at", "photo_readings", ["payer_code", "created_at"])
    op.create_index("ix_photo_readings_created_at", "photo_readings", ["created_at"])


def downgrade() -> None:
    # Only possible while no photo reading and no device-less binding exists.
    op.drop_index("ix_photo_readings_created_at", table_name="photo_readings")
    op.drop_index("ix_photo_readings_payer_code_created_at", table_name="photo_readings")
    op.drop_table("photo_readings")
    with op.batch_alter_table("readings") as batch:
        batch.drop_constraint(op.f("ck_readings_source"), type_="check")
        batch.drop_column("source")
        batch.alter_column("device_id", existing_type=sa.String(length=64), nullable=False)
    op.drop_index("uq_bindings_open_photo_meter", table_name="bindings")
    with op.batch_alter_table("bindings") as batch:
        batch.alter_column("device_id", existing_type=sa.String(length=64), nullable=False)
    with op.batch_alter_table("meters") as batch:
        batch.drop_column("decimals")
        batch.drop_column("digits")
