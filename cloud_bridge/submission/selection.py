"""Which reading of a period goes to billing: the latest *settled* one (cloud_bridge/settlement) taken up
to the pass's time. A device's `ok` is not enough: the readings after it must agree with it, and a
correction counts only once its checks accepted it (cloud_bridge/corrections.py).

A reading belongs to the meter and payer of the binding it was stored under (kept for ever), so a
re-bind in the middle of a month never moves old readings to the new payer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select, union

from cloud_bridge.settlement import Result, settle_meter
from cloud_bridge.settlement.settings import SettlementSection
from cloud_bridge.store.tables import bindings, readings
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
    attention: str | None = None  # why nothing can be sent: no_readings / only_suspect_readings / nothing_settled


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


def choose(conn: Connection, meter: BoundMeter, period: Period, at: datetime, tz_start: datetime,
           tz_end: datetime, limits: SettlementSection | None = None, *, write: bool = True) -> Choice:
    """The reading to submit for `meter` in `period`: the latest *settled* one taken up to `at` that the
    device sent `ok` or a person corrected (`billable`).

    The meter is settled first (in this transaction; `write=False` for a dry run), so the choice never
    rests on a stale settlement. Settlement may use readings taken after `at`: they only make it surer."""
    limits = limits or SettlementSection()
    until = min(tz_end, at)
    settled = settle_meter(conn, meter.meter_serial, limits, at, since=tz_start, write=write)
    rows = conn.execute(
        select(readings.c.id, readings.c.taken_at, readings.c.status, readings.c.reason)
        .join(bindings, bindings.c.id == readings.c.binding_id)
        .where(and_(bindings.c.payer_code == meter.payer_code, bindings.c.meter_serial == meter.meter_serial,
                    readings.c.taken_at >= tz_start, readings.c.taken_at < tz_end, readings.c.taken_at <= until))
        .order_by(readings.c.taken_at.desc(), readings.c.id.desc())
    ).all()
    if not rows:
        return Choice(meter, attention="no_readings")
    by_id = {r.reading_id: r for r in settled.results}
    for r in rows:
        s = by_id.get(r.id)
        if s is not None and billable(s):
            return Choice(meter, r.id, s.correction_id, s.value, r.taken_at)
    return Choice(meter, attention=nothing_settled(rows, by_id))


def billable(s: Result) -> bool:
    """Settled, and either sent `ok` by the device or corrected by a person (checked). A reading the device
    held back as suspect may be settled (the readings around it agree) and then corroborates its
    neighbours, but is not billed itself: the device doubted that very value."""
    return s.state == "settled" and s.value is not None and (s.status == "ok" or s.correction_id is not None)


def nothing_settled(rows: Sequence[Any], by_id: dict[int, Result]) -> str:
    """Why no reading of the period can be billed, for operators and residents (newest first in `rows`)."""
    mine = [by_id[r.id] for r in rows if r.id in by_id]
    if not any(x.status == "ok" or x.correction_id is not None for x in mine):
        last = rows[0]
        detail = f"{last.status}: {last.reason}" if last.reason else last.status
        return f"only_suspect_readings ({len(rows)}; last {detail})"[:300]
    counts = {k: sum(1 for x in mine if x.state == k) for k in ("pending", "outlier")}
    parts = []
    if counts["pending"]:
        parts.append(f"{counts['pending']} pending (waiting for later readings to agree)")
    outliers = [x for x in mine if x.state == "outlier"]
    if outliers:
        parts.append(f"{len(outliers)} outlier (newest: {outliers[0].value or '-'}, {outliers[0].reason})")
    return f"nothing_settled: {len(rows)} readings; " + "; ".join(parts)[:280]
