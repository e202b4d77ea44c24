"""device_latest: each device's newest reading and what the device-state query needs about its history,
kept by ingest in the reading's transaction, so the fleet page, metrics and sweep stop scanning every
reading; backfilled here from the readings (one pass, like the query it replaces)

Revision ID: 0008_device_latest
Revises: 0007_photo_readings
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_device_latest"
down_revision = "0007_photo_readings"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LAST = ("seq", "taken_at", "stored_at", "value", "status", "reason", "model")

# The readings table as this migration knows it (only the columns it reads).
readings = sa.table("readings", sa.column("id"), sa.column("device_id"), sa.column("taken_at"),
                    sa.column("status"), *(sa.column(c) for c in LAST if c not in ("taken_at", "status")))


def _backfill() -> None:
    """The rows from every reading: the same computation as cloud_bridge.store.device_latest.latest_from_readings
    when this was written (kept here so later changes to that module cannot change what this migration does)."""
    def newest(status: str) -> sa.ColumnElement[object]:
        return sa.func.max(sa.case((readings.c.status == status, readings.c.taken_at)))

    per = (sa.select(readings.c.device_id, sa.func.count().label("n"),
                     sa.func.max(readings.c.taken_at).label("last_at"), newest("ok").label("ok_at"),
                     newest("suspect").label("suspect_at"), newest("error").label("error_at"))
           .where(readings.c.device_id.is_not(None)).group_by(readings.c.device_id).cte("per_device"))
    r = readings.alias("r")
    last_id = (sa.select(sa.func.max(r.c.id)).where(sa.and_(r.c.device_id == per.c.device_id,
                                                            r.c.taken_at == per.c.last_at)).scalar_subquery())
    ok_id = (sa.select(sa.func.max(r.c.id)).where(sa.and_(r.c.device_id == per.c.device_id, r.c.taken_at == per.c.ok_at,
                                                          r.c.status == "ok")).scalar_subquery())
    ids = sa.select(per.c.device_id, last_id.label("last_id"), ok_id.label("ok_id")).cte("newest_ids")
    since_ok = (sa.select(sa.func.count()).where(sa.and_(
        r.c.device_id == per.c.device_id, r.c.taken_at >= per.c.ok_at, r.c.status != "ok",
        sa.or_(r.c.taken_at > per.c.ok_at, r.c.id > ids.c.ok_id))).scalar_subquery())
    not_ok_n = sa.func.coalesce(sa.case((per.c.ok_at.is_(None), per.c.n), else_=since_ok), 0)
    last = readings.alias("last")
    src = (sa.select(per.c.device_id, per.c.n, ids.c.last_id, *(last.c[c] for c in LAST), ids.c.ok_id, per.c.ok_at,
                     per.c.suspect_at, per.c.error_at, not_ok_n)
           .select_from(per).join(ids, ids.c.device_id == per.c.device_id).join(last, last.c.id == ids.c.last_id))
    target = sa.table("device_latest", *(sa.column(c) for c in (
        "device_id", "n", "last_id", *(f"last_{c}" for c in LAST), "ok_id", "ok_taken_at", "suspect_at", "error_at",
        "not_ok_n")))
    op.execute(target.insert().from_select([c.name for c in target.columns], src))


def upgrade() -> None:
    op.create_table(
        "device_latest",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("last_id", ID, nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_value", sa.String(length=24), nullable=True),
        sa.Column("last_status", sa.String(length=8), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=True),
        sa.Column("last_model", sa.String(length=128), nullable=True),
        sa.Column("ok_id", ID, nullable=True),
        sa.Column("ok_taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspect_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_ok_n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], name=op.f("fk_device_latest_device_id_devices")),
        sa.ForeignKeyConstraint(["last_id"], ["readings.id"], name=op.f("fk_device_latest_last_id_readings")),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_latest")),
    )
    # Workers of the previous version still running during the upgrade store readings without this table:
    # run `meter-bridge db upgrade` with the workers stopped, or rebuild afterwards (docs/operate-city-scale.md).
    _backfill()


def downgrade() -> None:
    op.drop_table("device_latest")
