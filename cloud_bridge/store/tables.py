"""The bridge's tables (SQLAlchemy Core). The Alembic migrations in `migrations/versions/` create
exactly these; `tests/bridge/test_bridge_store.py` checks that the two agree.

Rules the schema keeps for everyone who writes to it:
- a reading is never updated or deleted; a correction is a new row pointing at it;
- (device_id, seq) is unique: a redelivered reading is a no-op;
- a device has at most one open binding (valid_to IS NULL); a re-bind closes it and opens another;
- a submission is unique per idempotency key `payer:meter:period`, a points row per (payer, period);
- times are UTC (`UtcDateTime` gives back aware datetimes on SQLite and PostgreSQL alike);
- values are decimal strings as the device sent them ("00123.456"), never floats.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; gives back aware UTC datetimes (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

devices = Table(
    "devices", metadata,
    Column("device_id", String(64), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("note", Text),
    # `devices retire`: its account revoked, its retained topics cleared; its readings stay.
    Column("retired_at", UtcDateTime),
    Column("replaced_by", String(64)),  # `devices replace OLD NEW`: the Pi that took over its meter
)

meters = Table(
    "meters", metadata,
    Column("serial", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # The wheels a resident's photo is read with (`meters add --digits --decimals`); NULL: from its values.
    Column("digits", Integer),
    Column("decimals", Integer),
    CheckConstraint("kind IN ('cold', 'hot')", name="kind"),
)

payers = Table(
    "payers", metadata,
    Column("payer_code", String(10), primary_key=True),
    Column("address", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

bindings = Table(
    "bindings", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    # NULL: a meter with no device, read from residents' photos (`meter-bridge meters add`)
    Column("device_id", String(64), ForeignKey("devices.device_id")),
    Column("meter_serial", String(64), ForeignKey("meters.serial"), nullable=False),
    Column("payer_code", String(10), ForeignKey("payers.payer_code"), nullable=False),
    Column("valid_from", UtcDateTime, nullable=False),
    Column("valid_to", UtcDateTime),  # NULL: in force
    Column("note", Text),
    Index("ix_bindings_device_id_valid_from", "device_id", "valid_from"),
    Index("ix_bindings_payer_code", "payer_code"),
    Index("ix_bindings_meter_serial", "meter_serial"),
    # At most one open binding per device (a partial unique index on both databases).
    Index("uq_bindings_open_device", "device_id", unique=True,
          sqlite_where=text("valid_to IS NULL"), postgresql_where=text("valid_to IS NULL")),
    # At most one open device-less (photo) binding per meter.
    Index("uq_bindings_open_photo_meter", "meter_serial", unique=True,
          sqlite_where=text("device_id IS NULL AND valid_to IS NULL"),
          postgresql_where=text("device_id IS NULL AND valid_to IS NULL")),
)

readings = Table(
    "readings", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    # NULL for a resident's photo reading (source 'photo': no device, epoch 0, seq 0; see photo_readings)
    Column("device_id", String(64), ForeignKey("devices.device_id")),
    Column("epoch", BigInteger, nullable=False, server_default="0"),  # the device's outbox; 0 = v1 device
    Column("seq", BigInteger, nullable=False),
    Column("taken_at", UtcDateTime, nullable=False),
    Column("stored_at", UtcDateTime, nullable=False),
    Column("status", String(8), nullable=False),
    Column("value", String(24)),  # decimal string as sent; NULL when nothing could be read
    Column("unit", String(8), nullable=False, server_default="m3"),
    Column("confidence", Float, nullable=False),
    Column("reason", Text),
    Column("binding_id", ID, ForeignKey("bindings.id")),  # in force when stored; kept for ever
    Column("model", String(128), nullable=False, server_default=""),
    Column("raw", Text, nullable=False),  # the payload exactly as received (UTF-8 JSON)
    Column("source", String(8), nullable=False, server_default="device"),  # device / photo (a resident's)
    UniqueConstraint("device_id", "epoch", "seq"),
    CheckConstraint("status IN ('ok', 'suspect', 'error')", name="status"),
    CheckConstraint("source IN ('device', 'photo')", name="source"),
    Index("ix_readings_binding_id_taken_at", "binding_id", "taken_at"),
    Index("ix_readings_stored_at", "stored_at"),
    Index("ix_readings_device_id_taken_at", "device_id", "taken_at"),
)

# Each device's newest reading and what the fleet needs about its history, kept up to date by whatever
# stores a reading, in the same transaction (cloud_bridge/store/device_latest.py), so the device-state
# query reads one row per device instead of scanning every reading (migration 0008 backfilled it).
# Order of readings: (taken_at, id), as in the device-state query. A device with no reading has no row.
device_latest = Table(
    "device_latest", metadata,
    Column("device_id", String(64), ForeignKey("devices.device_id"), primary_key=True),
    Column("n", BigInteger, nullable=False),  # how many readings it has
    # The newest reading (greatest taken_at, then id), copied: a reading is never updated.
    Column("last_id", ID, ForeignKey("readings.id")),
    Column("last_seq", BigInteger),
    Column("last_taken_at", UtcDateTime),
    Column("last_stored_at", UtcDateTime),
    Column("last_value", String(24)),
    Column("last_status", String(8)),
    Column("last_reason", Text),
    Column("last_model", String(128)),
    Column("ok_id", ID),  # the newest `ok` reading (NULL: none)
    Column("ok_taken_at", UtcDateTime),
    Column("suspect_at", UtcDateTime),  # taken_at of the newest `suspect` reading
    Column("error_at", UtcDateTime),  # taken_at of the newest `error` reading
    Column("not_ok_n", BigInteger, nullable=False),  # readings after the newest ok one that are not ok
)

corrections = Table(
    "corrections", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("reading_id", ID, ForeignKey("readings.id"), nullable=False),
    Column("value", String(24), nullable=False),
    Column("by", String(16), nullable=False),
    Column("note", Text),
    Column("created_at", UtcDateTime, nullable=False),
    # What the bridge's checks said (cloud_bridge/corrections.py): only an accepted one reaches billing;
    # a refused one is kept so the resident sees why; review waits for an operator.
    Column("state", String(8), nullable=False, server_default="accepted"),
    Column("reason", Text),
    Column("plausible_low", String(24)),
    Column("plausible_high", String(24)),
    CheckConstraint("by IN ('resident', 'installer', 'operator')", name="by"),
    CheckConstraint("state IN ('accepted', 'refused', 'review')", name="state"),
    Index("ix_corrections_reading_id", "reading_id"),
)

# Settlement of each reading (cloud_bridge/settlement): derived from the meter's readings around it,
# so unlike a reading it is rewritten as later readings arrive (pending -> settled | outlier).
settlements = Table(
    "settlements", metadata,
    Column("reading_id", ID, ForeignKey("readings.id"), primary_key=True),
    Column("meter_serial", String(64), nullable=False),
    Column("state", String(8), nullable=False),
    Column("reason", Text),
    Column("value", String(24)),  # the value settled on: the reading's, or its accepted correction's
    Column("correction_id", ID, ForeignKey("corrections.id")),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("state IN ('settled', 'outlier', 'pending')", name="state"),
    Index("ix_settlements_meter_serial_state", "meter_serial", "state"),
)

PHOTO_MAX_BYTES = 3 * 1024 * 1024
"""The most a stored photo may take (a re-encoded JPEG, long side at most 2000 px: typically 0.2-0.8 MB)."""

# A resident's photo of a meter (cloud_bridge/photo/upload.py, the portal's photo page): the re-encoded
# JPEG (no metadata), what the reader proposed, and, once the resident sent a value, the reading it
# became (`reading_id`) with whether they edited the proposal and what the checks said. A photo never
# sent is a draft, deleted after a day. In the database, not in files: any worker may serve the next step.
photo_readings = Table(
    "photo_readings", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("user_id", ID, ForeignKey("users.id"), nullable=False),
    Column("payer_code", String(10), ForeignKey("payers.payer_code"), nullable=False),
    Column("meter_serial", String(64), ForeignKey("meters.serial"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("image", LargeBinary, nullable=False),  # JPEG, EXIF and every other metadata stripped
    Column("image_bytes", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),  # of the stored JPEG
    Column("upload_format", String(8), nullable=False),  # JPEG / PNG / HEIF as uploaded
    Column("upload_bytes", Integer, nullable=False),
    Column("proposal", Text, nullable=False),  # the reader's answer (PhotoReading.to_json()), newest read
    Column("proposed_value", String(24)),
    Column("reader_status", String(16), nullable=False),  # ok / unsure / no_counter
    Column("box_moved", Boolean, nullable=False, server_default="0"),  # the resident dragged the counter box
    Column("reading_id", ID, ForeignKey("readings.id")),  # NULL: not sent (a draft)
    Column("value", String(24)),  # what the resident sent
    Column("edited", Boolean),  # value differs from the reader's proposal
    Column("state", String(8)),  # the checks' verdict when sent: accepted / review
    Column("reason", Text),
    Column("sent_at", UtcDateTime),
    UniqueConstraint("reading_id"),
    CheckConstraint(f"image_bytes > 0 AND image_bytes <= {PHOTO_MAX_BYTES}", name="image_bytes"),
    CheckConstraint("reader_status IN ('ok', 'unsure', 'no_counter')", name="reader_status"),
    CheckConstraint("state IS NULL OR state IN ('accepted', 'review')", name="state"),
    Index("ix_photo_readings_payer_code_created_at", "payer_code", "created_at"),
    Index("ix_photo_readings_created_at", "created_at"),
)

refusals = Table(
    "refusals", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("topic", Text, nullable=False),
    Column("device_id", String(64)),  # no FK: an unknown device is one of the reasons
    Column("seq", BigInteger),
    Column("reason", String(32), nullable=False),
    Column("detail", Text),
    Column("size", Integer, nullable=False),
    Column("payload", LargeBinary),  # kept (up to 16 KiB) so an operator can replay after a fix
    Index("ix_refusals_at", "at"),
    Index("ix_refusals_reason", "reason"),
    Index("ix_refusals_device_id_seq", "device_id", "seq"),
)

# What is not a row anywhere (messages received, duplicates). One row per (name, shard) so that
# workers never wait on each other's counter row; readers sum over shards.
counters = Table(
    "counters", metadata,
    Column("name", String(64), primary_key=True),
    Column("shard", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

device_status = Table(
    "device_status", metadata,
    Column("device_id", String(64), ForeignKey("devices.device_id"), primary_key=True),
    Column("online", Boolean, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
)

# The newest telemetry each device published (retained `meters/{id}/telemetry`), for the fleet page,
# `devices list` and metrics. One row per device, replaced by a newer message; `at` is the device's clock.
device_telemetry = Table(
    "device_telemetry", metadata,
    Column("device_id", String(64), ForeignKey("devices.device_id"), primary_key=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("uptime_s", Float, nullable=False),
    Column("outbox_depth", Integer, nullable=False),
    Column("outbox_dropped", Integer, nullable=False),
    Column("outbox_rejected", Integer, nullable=False),
    Column("last_error", Text),
    Column("cpu_temp_c", Float),
    Column("free_disk_bytes", BigInteger),
    Column("disk_full", Boolean, nullable=False),
    Column("model", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("last_seq", BigInteger),
    Column("commands_refused", Integer, nullable=False),
)

# Billing: one row per (payer, meter, period); the row is the outbox. States:
# pending -> sending -> accepted | refused | (back to pending with next_attempt_at) ; needs_attention.
submissions = Table(
    "submissions", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(100), nullable=False),  # payer:meter:period
    Column("payer_code", String(10), ForeignKey("payers.payer_code"), nullable=False),
    Column("meter_serial", String(64), ForeignKey("meters.serial"), nullable=False),
    Column("period", String(7), nullable=False),  # YYYY-MM in the utility's time zone
    Column("reading_id", ID, ForeignKey("readings.id")),
    Column("correction_id", ID, ForeignKey("corrections.id")),
    Column("value", String(24)),
    Column("taken_at", UtcDateTime),
    Column("state", String(16), nullable=False),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime),
    Column("submission_id", String(100)),  # billing's id once accepted
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("idempotency_key"),
    CheckConstraint(
        "state IN ('pending', 'sending', 'accepted', 'refused', 'needs_attention')", name="state"),
    Index("ix_submissions_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_submissions_payer_code_period", "payer_code", "period"),
    Index("ix_submissions_meter_serial_period", "meter_serial", "period"),
)

# Loyalty: append-only ledger, one row per (payer, period); the credit report state rides on the row.
points_ledger = Table(
    "points_ledger", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("payer_code", String(10), ForeignKey("payers.payer_code"), nullable=False),
    Column("period", String(7), nullable=False),
    Column("points", Integer, nullable=False),
    Column("submission_id", ID, ForeignKey("submissions.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("idempotency_key", String(100), nullable=False),  # credit:payer:period
    Column("credit_state", String(16), nullable=False, server_default="pending"),
    Column("credit_reason", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime),
    Column("credit_id", String(100)),  # loyalty's id once credited
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("payer_code", "period"),
    UniqueConstraint("idempotency_key"),
    CheckConstraint(
        "credit_state IN ('pending', 'sending', 'credited', 'refused', 'needs_attention')", name="credit_state"),
    Index("ix_points_ledger_credit_state_next_attempt_at", "credit_state", "next_attempt_at"),
)

# The web portal (cloud_bridge/web): people who sign in, the payer codes a resident has linked with a
# one-time link code, and failed attempts counted for the sign-in limits (in the store, so every worker
# counts the same ones).
users = Table(
    "users", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("login", String(254), nullable=False),  # e-mail (lower case), +phone digits, or sso:<identity>
    Column("role", String(16), nullable=False),
    Column("password_hash", Text),  # argon2id; NULL: signs in only through single sign-on
    Column("must_change_password", Boolean, nullable=False, server_default="0"),
    Column("session_version", Integer, nullable=False, server_default="0"),  # +1 signs out every session
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_login_at", UtcDateTime),
    UniqueConstraint("login"),
    CheckConstraint("role IN ('resident', 'operator')", name="role"),
)

link_codes = Table(
    "link_codes", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("code_hash", String(64), nullable=False),  # sha256 hex of the normalised code; the code is not kept
    Column("payer_code", String(10), ForeignKey("payers.payer_code"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime),
    Column("used_by", ID, ForeignKey("users.id")),
    UniqueConstraint("code_hash"),
    Index("ix_link_codes_payer_code", "payer_code"),
)

payer_links = Table(
    "payer_links", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("user_id", ID, ForeignKey("users.id"), nullable=False),
    Column("payer_code", String(10), ForeignKey("payers.payer_code"), nullable=False),
    Column("link_code_id", ID, ForeignKey("link_codes.id")),  # NULL: linked by an operator's command
    Column("linked_at", UtcDateTime, nullable=False),
    UniqueConstraint("user_id", "payer_code"),
    Index("ix_payer_links_payer_code", "payer_code"),
)

web_failures = Table(
    "web_failures", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False),  # login:<login>, ip:<address>, link:<user id>
    Column("at", UtcDateTime, nullable=False),
    Index("ix_web_failures_key_at", "key", "at"),
)

# Every command an operator sent to a device (`meter-bridge cmd`, the fleet page): who, when, what, and
# the device's answer (`meters/{id}/cmd/{name}/result`), or why none came.
command_log = Table(
    "command_log", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("command_id", String(32), nullable=False),  # the `id` sent with the command, echoed in the answer
    Column("device_id", String(64), nullable=False),
    Column("name", String(16), nullable=False),
    Column("args", Text),  # JSON, e.g. {"value": "00123.456", "at": "…"}
    Column("requested_by", String(254), nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),  # sent | done | accepted | refused | no_answer | blocked
    Column("reason", Text),
    Column("answered_at", UtcDateTime),
    UniqueConstraint("command_id"),
    Index("ix_command_log_device_id_requested_at", "device_id", "requested_at"),
)
