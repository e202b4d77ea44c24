"""initial schema: registry, readings, refusals, counters, billing, loyalty

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "shard", name=op.f("pk_counters")),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_table(
        "meters",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('cold', 'hot')", name=op.f("ck_meters_kind")),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_meters")),
    )
    op.create_table(
        "payers",
        sa.Column("payer_code", sa.String(length=10), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payer_code", name=op.f("pk_payers")),
    )
    op.create_table(
        "refusals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refusals")),
    )
    op.create_index("ix_refusals_at", "refusals", ["at"], unique=False)
    op.create_index("ix_refusals_device_id_seq", "refusals", ["device_id", "seq"], unique=False)
    op.create_index("ix_refusals_reason", "refusals", ["reason"], unique=False)

    op.create_table(
        "bindings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("meter_serial", sa.String(length=64), nullable=False),
        sa.Column("payer_code", sa.String(length=10), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], name=op.f("fk_bindings_device_id_devices")),
        sa.ForeignKeyConstraint(["meter_serial"], ["meters.serial"], name=op.f("fk_bindings_meter_serial_meters")),
        sa.ForeignKeyConstraint(["payer_code"], ["payers.payer_code"], name=op.f("fk_bindings_payer_code_payers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bindings")),
    )
    op.create_index("ix_bindings_device_id_valid_from", "bindings", ["device_id", "valid_from"], unique=False)
    op.create_index("ix_bindings_meter_serial", "bindings", ["meter_serial"], unique=False)
    op.create_index("ix_bindings_payer_code", "bindings", ["payer_code"], unique=False)
    op.create_index(
        "uq_bindings_open_device",
        "bindings",
        ["device_id"],
        unique=True,
        sqlite_where=sa.text("valid_to IS NULL"),
        postgresql_where=sa.text("valid_to IS NULL"),
    )

    op.create_table(
        "device_status",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], name=op.f("fk_device_status_device_id_devices")),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_status")),
    )
    op.create_table(
        "readings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=24), nullable=True),
        sa.Column("unit", sa.String(length=8), server_default="m3", nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("binding_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("model", sa.String(length=128), server_default="", nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('ok', 'suspect', 'error')", name=op.f("ck_readings_status")),
        sa.ForeignKeyConstraint(["binding_id"], ["bindings.id"], name=op.f("fk_readings_binding_id_bindings")),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], name=op.f("fk_readings_device_id_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_readings")),
        sa.UniqueConstraint("device_id", "seq", name=op.f("uq_readings_device_id_seq")),
    )
    op.create_index("ix_readings_binding_id_taken_at", "readings", ["binding_id", "taken_at"], unique=False)
    op.create_index("ix_readings_device_id_taken_at", "readings", ["device_id", "taken_at"], unique=False)
    op.create_index("ix_readings_stored_at", "readings", ["stored_at"], unique=False)

    op.create_table(
        "corrections",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("reading_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("value", sa.String(length=24), nullable=False),
        sa.Column("by", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("by IN ('resident', 'installer', 'operator')", name=op.f("ck_corrections_by")),
        sa.ForeignKeyConstraint(["reading_id"], ["readings.id"], name=op.f("fk_corrections_reading_id_readings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corrections")),
    )
    op.create_index("ix_corrections_reading_id", "corrections", ["reading_id"], unique=False)

    op.create_table(
        "submissions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("payer_code", sa.String(length=10), nullable=False),
        sa.Column("meter_serial", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("reading_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("correction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("value", sa.String(length=24), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submission_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'sending', 'accepted', 'refused', 'needs_attention')",
            name=op.f("ck_submissions_state"),
        ),
        sa.ForeignKeyConstraint(
            ["correction_id"], ["corrections.id"], name=op.f("fk_submissions_correction_id_corrections")
        ),
        sa.ForeignKeyConstraint(["meter_serial"], ["meters.serial"], name=op.f("fk_submissions_meter_serial_meters")),
        sa.ForeignKeyConstraint(["payer_code"], ["payers.payer_code"], name=op.f("fk_submissions_payer_code_payers")),
        sa.ForeignKeyConstraint(["reading_id"], ["readings.id"], name=op.f("fk_submissions_reading_id_readings")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_submissions_idempotency_key")),
    )
    op.create_index("ix_submissions_meter_serial_period", "submissions", ["meter_serial", "period"], unique=False)
    op.create_index("ix_submissions_payer_code_period", "submissions", ["payer_code", "period"], unique=False)
    op.create_index("ix_submissions_state_next_attempt_at", "submissions", ["state", "next_attempt_at"], unique=False)

    op.create_table(
        "points_ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("payer_code", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("credit_state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("credit_reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credit_id", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "credit_state IN ('pending', 'sending', 'credited', 'refused', 'needs_attention')",
            name=op.f("ck_points_ledger_credit_state"),
        ),
        sa.ForeignKeyConstraint(["payer_code"], ["payers.payer_code"], name=op.f("fk_points_ledger_payer_code_payers")),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"], name=op.f("fk_points_ledger_submission_id_submissions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_ledger")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_points_ledger_idempotency_key")),
        sa.UniqueConstraint("payer_code", "period", name=op.f("uq_points_ledger_payer_code_period")),
    )
    op.create_index(
        "ix_points_ledger_credit_state_next_attempt_at",
        "points_ledger",
        ["credit_state", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_points_ledger_credit_state_next_attempt_at", table_name="points_ledger")

    op.drop_table("points_ledger")
    op.drop_index("ix_submissions_state_next_attempt_at", table_name="submissions")
    op.drop_index("ix_submissions_payer_code_period", table_name="submissions")
    op.drop_index("ix_submissions_meter_serial_period", table_name="submissions")

    op.drop_table("submissions")
    op.drop_index("ix_corrections_reading_id", table_name="corrections")

    op.drop_table("corrections")
    op.drop_index("ix_readings_stored_at", table_name="readings")
    op.drop_index("ix_readings_device_id_taken_at", table_name="readings")
    op.drop_index("ix_readings_binding_id_taken_at", table_name="readings")

    op.drop_table("readings")
    op.drop_table("device_status")
    op.drop_index(
        "uq_bindings_open_device",
        table_name="bindings",
        sqlite_where=sa.text("valid_to IS NULL"),
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.drop_index("ix_bindings_payer_code", table_name="bindings")
    op.drop_index("ix_bindings_meter_serial", table_name="bindings")
    op.drop_index("ix_bindings_device_id_valid_from", table_name="bindings")

    op.drop_table("bindings")
    op.drop_index("ix_refusals_reason", table_name="refusals")
    op.drop_index("ix_refusals_device_id_seq", table_name="refusals")
    op.drop_index("ix_refusals_at", table_name="refusals")

    op.drop_table("refusals")
    op.drop_table("payers")
    op.drop_table("meters")
    op.drop_table("devices")
    op.drop_table("counters")
