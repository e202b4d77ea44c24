"""Settle a meter's stored readings: which are billable (`settled`), which are ruled out (`outlier`, with
the reason) and which wait for later readings (`pending`).

The rules over a sequence live in one pure function, `contract.settlement.settle` (the device runs the
same one). The bridge adds what only it knows, before the sequence goes in (`bridge_checks`):
- no more digits than a meter has (`settlement.max_integer_digits`, `max_decimals`, and the number of
  wheels the device read), so `999999999999.000000` is an outlier even when the device says `ok`;
- no decrease against what billing already holds for the meter, and no rise since then faster than
  `settlement.max_rate_m3_per_h`.
A reading ruled out here does not take part in settling its neighbours.

A reading's settlement is a row of `settlements`, rewritten whenever the meter's sequence changes (a
new reading, an accepted correction, a new billed value); the running bridge settles the meters that got
readings every `settlement.every_s` (`settle_dirty`), a submission pass settles each meter it chooses
for, and `meter-bridge settle` settles stored history. Everything here is deterministic and idempotent,
so any worker may do it at any time, twice, or concurrently.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, select

from cloud_bridge.settlement.settings import SettlementSection
from cloud_bridge.store.engine import upsert_insert
from cloud_bridge.store.tables import bindings, corrections, photo_readings, readings, settlements, submissions
from contract import settlement as rules
from contract.payloads import format_utc

log = logging.getLogger(__name__)

STATES = ("settled", "outlier", "pending")


@dataclass(frozen=True)
class Billed:
    """What billing holds for a meter: the latest accepted submission's value and when it was taken."""

    value: Decimal
    taken_at: datetime
    period: str
    reading_id: int | None


@dataclass(frozen=True)
class Row:
    """One stored reading of a meter, with its newest accepted correction if any."""

    reading_id: int
    taken_at: datetime
    status: str
    value: str | None
    reason: str | None
    raw: str
    correction_id: int | None = None
    corrected_value: str | None = None
    source: str = "device"  # device / photo
    photo_state: str | None = None  # a photo reading's checks when sent: accepted / review

    @property
    def person_checked(self) -> bool:
        """A person's value that the checks accepted: a correction, or a resident's photo reading."""
        return self.correction_id is not None or (self.source == "photo" and self.photo_state == "accepted")

    @property
    def effective_value(self) -> str | None:
        return self.corrected_value if self.correction_id is not None else self.value


@dataclass(frozen=True)
class Result:
    reading_id: int
    taken_at: datetime
    state: str
    reason: str | None
    value: str | None
    correction_id: int | None
    status: str  # the device's status (ok / suspect / error)


@dataclass
class MeterSettlement:
    meter_serial: str
    results: list[Result] = field(default_factory=list)
    written: int = 0

    def counts(self) -> Counter[str]:
        return Counter(r.state for r in self.results)


def parse_value(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def digit_problem(value: str, wheels: int | None, limits: SettlementSection) -> str | None:
    """Why `value` has more digits than a meter has, or None. Leading zeros are wheels showing 0."""
    whole, _, frac = value.partition(".")
    significant = whole.lstrip("0")
    if len(significant) > limits.max_integer_digits:
        return (f"more digits than a meter has: {len(significant)} before the point "
                f"(settlement.max_integer_digits is {limits.max_integer_digits})")
    if len(frac) > limits.max_decimals:
        return (f"more digits than a meter has: {len(frac)} after the point "
                f"(settlement.max_decimals is {limits.max_decimals})")
    if wheels and len(whole) + len(frac) > wheels:
        return f"more digits than the {wheels} wheels the device read: {value}"
    return None


def rate_limit(limits: SettlementSection, since: datetime, until: datetime) -> Decimal:
    hours = max((until - since).total_seconds() / 3600.0, 0.0)
    return Decimal(str(round(limits.max_rate_m3_per_h * hours, 6)))


def billed_problem(value: Decimal, taken_at: datetime, billed: Billed | None, limits: SettlementSection,
                   reading_id: int | None = None) -> str | None:
    """Why a value taken at `taken_at` contradicts what billing holds, or None."""
    if billed is None or taken_at <= billed.taken_at or reading_id == billed.reading_id:
        return None
    if value < billed.value:
        return (f"below what billing holds: {billed.value} for {billed.period}, taken "
                f"{format_utc(billed.taken_at)} (a meter does not run backwards)")
    limit = rate_limit(limits, billed.taken_at, taken_at)
    if value - billed.value > limit:
        return (f"rises {value - billed.value} m3 since what billing holds ({billed.value} for {billed.period}): "
                f"faster than settlement.max_rate_m3_per_h {limits.max_rate_m3_per_h:g}")
    return None


def _wheels(raw: str) -> tuple[Any, ...]:
    try:
        data = json.loads(raw)
    except ValueError:
        return ()
    digits = data.get("digits") if isinstance(data, dict) else None
    return rules.digits_from_wire(digits) if isinstance(digits, list) else ()


def bridge_checks(row: Row, billed: Billed | None, limits: SettlementSection) -> str | None:
    """The bridge's own reason to rule a reading out before settlement, or None. Like the shared rules'
    reasons, `code: sentence` (codes `too_many_digits`, `below_billed`, `too_fast_since_billed`)."""
    text = row.effective_value
    value = parse_value(text)
    if text is None or value is None:
        return None  # nothing to bill anyway; settlement says what it is
    wheels = None if row.correction_id is not None or row.source == "photo" else len(_wheels(row.raw)) or None
    digits = digit_problem(text, wheels, limits)
    if digits is not None:
        return f"too_many_digits: {text} has {digits}"
    billed_says = billed_problem(value, row.taken_at, billed, limits, row.reading_id)
    if billed_says is not None:
        code = "below_billed" if billed is not None and value < billed.value else "too_fast_since_billed"
        return f"{code}: {text} is {billed_says}"
    return None


def billed_for(conn: Connection, meter_serial: str) -> Billed | None:
    """The meter's latest value billing accepted (any payer: the meter only turns forward)."""
    row = conn.execute(
        select(submissions.c.value, submissions.c.taken_at, submissions.c.period, submissions.c.reading_id)
        .where(submissions.c.meter_serial == meter_serial, submissions.c.state == "accepted",
               submissions.c.value.is_not(None), submissions.c.taken_at.is_not(None))
        .order_by(submissions.c.taken_at.desc(), submissions.c.id.desc()).limit(1)).first()
    if row is None or parse_value(row.value) is None:
        return None
    return Billed(parse_value(row.value), row.taken_at, row.period, row.reading_id)  # type: ignore[arg-type]


def latest_accepted_corrections() -> Any:
    """Subquery: the newest accepted correction of each corrected reading."""
    ok = corrections.c.state == "accepted"
    newest = (select(corrections.c.reading_id, func.max(corrections.c.id).label("cid")).where(ok)
              .group_by(corrections.c.reading_id).subquery("newest_accepted"))
    return (select(corrections.c.id, corrections.c.reading_id, corrections.c.value, corrections.c.by)
            .join(newest, corrections.c.id == newest.c.cid).subquery("accepted_correction"))


def meter_rows(conn: Connection, meter_serial: str, since: datetime | None = None,
               exclude_reading: int | None = None, *, context: int = 0) -> list[Row]:
    """The meter's readings (under any binding) taken from `since` (None: all), oldest first, with their
    accepted corrections, plus the `context` readings taken just before `since`."""
    lc = latest_accepted_corrections()
    q = (select(readings.c.id, readings.c.taken_at, readings.c.status, readings.c.value, readings.c.reason,
                readings.c.raw, lc.c.id.label("correction_id"), lc.c.value.label("corrected_value"),
                readings.c.source, photo_readings.c.state.label("photo_state"))
         .join(bindings, bindings.c.id == readings.c.binding_id)
         .outerjoin(lc, lc.c.reading_id == readings.c.id)
         .outerjoin(photo_readings, photo_readings.c.reading_id == readings.c.id)
         .where(bindings.c.meter_serial == meter_serial))
    if exclude_reading is not None:
        q = q.where(readings.c.id != exclude_reading)
    found = []
    if since is not None and context > 0:
        found = list(reversed(conn.execute(q.where(readings.c.taken_at < since)
                                           .order_by(readings.c.taken_at.desc(), readings.c.id.desc())
                                           .limit(context)).all()))
    if since is not None:
        q = q.where(readings.c.taken_at >= since)
    found += conn.execute(q.order_by(readings.c.taken_at, readings.c.id)).all()
    return [Row(r.id, r.taken_at, r.status, r.value, r.reason, r.raw, r.correction_id, r.corrected_value,
                r.source, r.photo_state) for r in found]


def observation(row: Row) -> rules.Observation:
    """A stored reading for the shared rules. A person's checked value (an accepted correction, or a
    resident's photo reading the checks accepted when it was sent) is `trusted`: an anchor that is
    settled at once. A photo read once a month has no later readings to wait for (docs/decisions.md)."""
    text = row.effective_value
    corrected = row.correction_id is not None
    photo = row.source == "photo"
    return rules.Observation(
        key=row.reading_id, taken_at=row.taken_at, value=parse_value(text),
        status="corrected" if corrected else "photo" if photo else row.status,
        digits=() if corrected or photo else _wheels(row.raw),
        decimals=len(text.partition(".")[2]) if text else 3,
        trusted=row.person_checked)


def settle_rows(rows: Sequence[Row], billed: Billed | None, limits: SettlementSection) -> list[Result]:
    """Settle one meter's rows (oldest first): the bridge's checks, then the shared rules."""
    ruled_out: dict[int, str] = {}
    for row in rows:
        problem = bridge_checks(row, billed, limits)
        if problem is not None:
            ruled_out[row.reading_id] = problem
    obs = [observation(r) for r in rows if r.reading_id not in ruled_out]
    decided = {s.key: s for s in rules.settle(
        obs, max_rate_m3_per_h=limits.max_rate_m3_per_h, min_after=limits.min_after,
        billed=billed.value if billed else None, billed_at=billed.taken_at if billed else None)} if obs else {}
    out = []
    for r in rows:
        state: str
        reason: str | None
        if r.reading_id in ruled_out:
            state, reason = "outlier", ruled_out[r.reading_id]
        else:
            s = decided.get(r.reading_id)
            state, reason = (s.state, s.reason) if s is not None else ("pending", "not settled yet")
        if state not in STATES:
            raise ValueError(f"settlement gave an unknown state {state!r} for reading {r.reading_id}")
        out.append(Result(r.reading_id, r.taken_at, state, (reason or None) and str(reason)[:500],
                          r.effective_value, r.correction_id, r.status))
    return out


def write_results(conn: Connection, meter_serial: str, results: Sequence[Result], now: datetime) -> int:
    """Upsert the rows that changed; returns how many were written."""
    if not results:
        return 0
    ids = [r.reading_id for r in results]
    have: dict[int, tuple[Any, ...]] = {}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk:chunk + 500]
        for s in conn.execute(select(settlements.c.reading_id, settlements.c.state, settlements.c.reason,
                                     settlements.c.value, settlements.c.correction_id)
                              .where(settlements.c.reading_id.in_(part))).all():
            have[s.reading_id] = (s.state, s.reason, s.value, s.correction_id)
    changed = [{"reading_id": r.reading_id, "meter_serial": meter_serial, "state": r.state, "reason": r.reason,
                "value": r.value, "correction_id": r.correction_id, "updated_at": now}
               for r in sorted(results, key=lambda r: r.reading_id)
               if have.get(r.reading_id) != (r.state, r.reason, r.value, r.correction_id)]
    if changed:
        stmt = upsert_insert(conn, settlements)
        stmt = stmt.on_conflict_do_update(index_elements=["reading_id"], set_={
            c: stmt.excluded[c] for c in ("meter_serial", "state", "reason", "value", "correction_id", "updated_at")})
        conn.execute(stmt, changed)
    return len(changed)


def settle_meter(conn: Connection, meter_serial: str, limits: SettlementSection, now: datetime, *,
                 since: datetime | None = None, write: bool = True) -> MeterSettlement:
    """Settle the meter's readings taken from `since` (None: all), in the caller's transaction.

    Readings before `since` are not rewritten; the `context_readings` taken just before it are read as
    context (a bounded cost per change, however often the meter is read)."""
    rows = meter_rows(conn, meter_serial, since, context=limits.context_readings)
    results = settle_rows(rows, billed_for(conn, meter_serial), limits)
    keep = results if since is None else [r for r in results if r.taken_at >= since]
    out = MeterSettlement(meter_serial, keep)
    if write:
        out.written = write_results(conn, meter_serial, keep, now)
    return out


def dirty_meters(conn: Connection, now: datetime, *, within: timedelta = timedelta(days=2),
                 limit: int = 1000) -> dict[str, datetime]:
    """{meter: earliest taken_at} of readings stored in the last `within` that have no settlement yet."""
    unsettled = ~exists().where(settlements.c.reading_id == readings.c.id)
    rows = conn.execute(
        select(bindings.c.meter_serial, func.min(readings.c.taken_at))
        .join(bindings, bindings.c.id == readings.c.binding_id)
        .where(and_(readings.c.stored_at >= now - within, unsettled))
        .group_by(bindings.c.meter_serial).order_by(bindings.c.meter_serial).limit(limit)).all()
    return {r[0]: r[1] for r in rows}


def settle_dirty(engine: Engine, limits: SettlementSection, now: datetime) -> dict[str, Counter[str]]:
    """Settle every meter that got readings not settled yet, one transaction per meter."""
    with engine.begin() as conn:
        dirty = dirty_meters(conn, now)
    done: dict[str, Counter[str]] = {}
    for serial, earliest in dirty.items():
        with engine.begin() as conn:
            done[serial] = settle_meter(conn, serial, limits, now, since=earliest).counts()
    if dirty:
        log.debug("settled %d meters", len(dirty))
    return done


def all_meters(conn: Connection, serials: Iterable[str] | None = None) -> list[str]:
    q = select(bindings.c.meter_serial).distinct().order_by(bindings.c.meter_serial)
    if serials is not None:
        q = q.where(bindings.c.meter_serial.in_(list(serials)))
    return list(conn.execute(q).scalars())


def settlement_of(conn: Connection, reading_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """{reading id: (state, reason)} as stored."""
    out: dict[int, tuple[str, str | None]] = {}
    for chunk in range(0, len(reading_ids), 500):
        for s in conn.execute(select(settlements.c.reading_id, settlements.c.state, settlements.c.reason)
                              .where(settlements.c.reading_id.in_(list(reading_ids[chunk:chunk + 500])))).all():
            out[s.reading_id] = (s.state, s.reason)
    return out
