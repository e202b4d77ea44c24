"""Which reading of a period goes to billing: the latest `ok` or corrected one taken up to the pass's time.

A reading belongs to the meter and payer of the binding it was stored under (kept for ever), so a
re-bind in the middle of a month never moves old readings to the new payer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, or_, select, union

from cloud_bridge.store.tables import bindings, corrections, readings
from cloud_bridge.submission.periods import Period


@dataclass(frozen=True)
class BoundMeter:
    payer_code: str
    meter_serial: str


@dataclass(frozen=True)
class Choice:
    """What a pass would send for one meter: a reading (maybe corrected), or why nothing."""

    meter: BoundMeter
    reading_id: int | None = None
    correction_id: int | None = None
    value: str | None = None
    taken_at: datetime | None = None
    attention: str | None = None  # set when nothing can be sent: no_readings / only_suspect_readings: …


def bound_meters(conn: Connection, start: datetime, end: datetime) -> list[BoundMeter]:
    """Every (payer, meter) with a binding in force at some time in [start, end), and every one that
    holds readings taken in [start, end): a reading belongs to the binding in force when it was stored,
    so a backlog taken before its binding opened (a device offline, then bound) still counts."""
    in_force = (
        select(bindings.c.payer_code, bindings.c.meter_serial)
        .where(bindings.c.valid_from < end, or_(bindings.c.valid_to.is_(None), bindings.c.valid_to > start))
    )
    with_readings = (
        select(bindings.c.payer_code, bindings.c.meter_serial)
        .join(readings, readings.c.binding_id == bindings.c.id)
        .where(readings.c.taken_at >= start, readings.c.taken_at < end)
    )
    both = union(in_force, with_readings).subquery("meters")
    rows = conn.execute(
        select(both.c.payer_code, both.c.meter_serial).order_by(both.c.payer_code, both.c.meter_serial)
    ).all()
    return [BoundMeter(r.payer_code, r.meter_serial) for r in rows]


def latest_corrections():  # type: ignore[no-untyped-def]
    """Subquery: the newest correction of each corrected reading (a later correction wins)."""
    newest = select(corrections.c.reading_id, func.max(corrections.c.id).label("cid")).group_by(
        corrections.c.reading_id).subquery("newest")
    return (select(corrections.c.id, corrections.c.reading_id, corrections.c.value, corrections.c.by)
            .join(newest, corrections.c.id == newest.c.cid).subquery("latest_correction"))


def choose(conn: Connection, meter: BoundMeter, period: Period, at: datetime, tz_start: datetime,
           tz_end: datetime) -> Choice:
    """The reading to submit for `meter` in `period`, looking only at readings taken up to `at`."""
    lc = latest_corrections()
    until = min(tz_end, at)
    rows = conn.execute(
        select(readings.c.id, readings.c.taken_at, readings.c.status, readings.c.value, readings.c.reason,
               lc.c.id.label("correction_id"), lc.c.value.label("corrected_value"))
        .join(bindings, bindings.c.id == readings.c.binding_id)
        .outerjoin(lc, lc.c.reading_id == readings.c.id)
        .where(and_(bindings.c.payer_code == meter.payer_code, bindings.c.meter_serial == meter.meter_serial,
                    readings.c.taken_at >= tz_start, readings.c.taken_at < tz_end, readings.c.taken_at <= until))
        .order_by(readings.c.taken_at.desc(), readings.c.id.desc())
    ).all()
    if not rows:
        return Choice(meter, attention="no_readings")
    for r in rows:
        if r.correction_id is not None:
            return Choice(meter, r.id, r.correction_id, r.corrected_value, r.taken_at)
        if r.status == "ok" and r.value is not None:
            return Choice(meter, r.id, None, r.value, r.taken_at)
    last = rows[0]
    detail = f"{last.status}: {last.reason}" if last.reason else last.status
    return Choice(meter, attention=f"only_suspect_readings ({len(rows)}; last {detail})"[:300])
