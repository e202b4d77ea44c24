"""What a resident sees and may change: the history of a payer code (readings, submissions, points)
and corrections of a reading's value.

A correction is a new row in `corrections` pointing at the reading (the reading itself is never
updated). If the reading's period is still open and the corrected value differs from what billing was
sent for that meter and period, the correction is submitted under its own idempotency key
`payer:meter:period:c<correction id>`: billing has cached its answer to `payer:meter:period`, so the
same key would only replay the old answer. Billing's rules apply to it (a lower value is refused as
decreasing_value)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, select

from cloud_bridge.corrections import Verdict, check_correction
from cloud_bridge.delivery import Clock, Sleep
from cloud_bridge.settlement import settle_meter, settlement_of
from cloud_bridge.settlement.settings import SettlementSection
from cloud_bridge.store.tables import (
    bindings,
    corrections,
    meters,
    payers,
    photo_readings,
    points_ledger,
    readings,
    submissions,
    utcnow,
)
from cloud_bridge.submission.passes import MeterOutcome, run_submission_pass, submission_key, window_rule
from cloud_bridge.submission.periods import Period
from contract.payloads import VALUE_PATTERN, format_utc

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig
    from cloud_bridge.gateways.base import Gateways

CORRECTED_BY = ("resident", "installer", "operator")


class ResidentError(ValueError):
    """A request that cannot be done; the message says why."""


def _iso(value: datetime | None) -> str | None:
    return format_utc(value) if value else None


def payer_history(conn: Connection, payer_code: str, *, timezone: str = "Europe/Moscow",
                  limit: int | None = None, settle_first: SettlementSection | bool = False) -> dict[str, Any]:
    """Everything about one payer code, newest first, as one JSON-ready object.

    Each reading carries its `settlement` (`settled`, `outlier` with the reason, `pending`) as stored;
    `settle_first` (a writing connection) settles the payer's meters' recent readings before."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(timezone)
    payer = conn.execute(select(payers).where(payers.c.payer_code == payer_code)).first()
    if payer is None:
        raise ResidentError(f"no payer with code {payer_code} (see `meter-bridge devices list`)")
    binds = conn.execute(
        select(bindings.c.id, bindings.c.device_id, bindings.c.meter_serial, meters.c.kind, bindings.c.valid_from,
               bindings.c.valid_to)
        .join(meters, meters.c.serial == bindings.c.meter_serial)
        .where(bindings.c.payer_code == payer_code).order_by(bindings.c.valid_from)).all()
    by_binding = {b.id: b for b in binds}
    if settle_first:
        limits = settle_first if isinstance(settle_first, SettlementSection) else SettlementSection()
        for serial in sorted({b.meter_serial for b in binds}):
            settle_meter(conn, serial, limits, utcnow(), since=utcnow() - timedelta(days=limits.lookback_days))
    q = (select(readings.c.id, readings.c.device_id, readings.c.seq, readings.c.taken_at, readings.c.value,
                readings.c.status, readings.c.reason, readings.c.confidence, readings.c.binding_id,
                readings.c.stored_at, readings.c.source)
         .where(readings.c.binding_id.in_(list(by_binding) or [-1]))
         .order_by(readings.c.taken_at.desc(), readings.c.id.desc()))
    if limit:
        q = q.limit(limit)
    rows = conn.execute(q).all()
    corr_rows = conn.execute(
        select(corrections).where(corrections.c.reading_id.in_([r.id for r in rows] or [-1]))
        .order_by(corrections.c.id)).all()
    latest: dict[int, Any] = {}
    for corr in corr_rows:
        if corr.state == "accepted":
            latest[corr.reading_id] = corr
    settled = settlement_of(conn, [r.id for r in rows])
    photos = {p.reading_id: p for p in conn.execute(
        select(photo_readings.c.id, photo_readings.c.reading_id, photo_readings.c.proposed_value,
               photo_readings.c.edited, photo_readings.c.box_moved, photo_readings.c.state)
        .where(photo_readings.c.reading_id.in_([r.id for r in rows if r.source == "photo"] or [-1]))).all()}
    out_readings = []
    for r in rows:
        c = latest.get(r.id)
        state, why = settled.get(r.id, ("pending", "not settled yet"))
        out_readings.append({
            "id": r.id, "device_id": r.device_id, "seq": r.seq, "taken_at": _iso(r.taken_at), "value": r.value,
            "status": r.status, "reason": r.reason, "confidence": r.confidence, "source": r.source,
            "meter_serial": by_binding[r.binding_id].meter_serial, "period": str(Period.of(r.taken_at, tz)),
            "corrected_value": c.value if c else None, "correction_id": c.id if c else None,
            "corrected_by": c.by if c else None, "stored_at": _iso(r.stored_at),
            "settlement": {"state": state, "reason": why},
            "photo": None if r.id not in photos else {
                "photo_id": photos[r.id].id, "proposed_value": photos[r.id].proposed_value,
                "edited": bool(photos[r.id].edited), "box_moved": bool(photos[r.id].box_moved),
                "checks": photos[r.id].state}})
    subs = conn.execute(select(submissions).where(submissions.c.payer_code == payer_code)
                        .order_by(submissions.c.period.desc(), submissions.c.meter_serial, submissions.c.id)).all()
    pts = conn.execute(select(points_ledger).where(points_ledger.c.payer_code == payer_code)
                       .order_by(points_ledger.c.period.desc())).all()
    return {
        "payer": payer_code,
        "address": payer.address,
        "meters": [{"meter_serial": b.meter_serial, "kind": b.kind, "device_id": b.device_id,
                    "valid_from": _iso(b.valid_from), "valid_to": _iso(b.valid_to)} for b in binds],
        "readings": out_readings,
        "corrections": [{"id": c.id, "reading_id": c.reading_id, "value": c.value, "by": c.by, "note": c.note,
                         "created_at": _iso(c.created_at), "state": c.state, "reason": c.reason,
                         "plausible_low": c.plausible_low, "plausible_high": c.plausible_high} for c in corr_rows],
        "submissions": [{"key": s.idempotency_key, "meter_serial": s.meter_serial, "period": s.period,
                         "value": s.value, "taken_at": _iso(s.taken_at), "state": s.state, "reason": s.reason,
                         "attempts": s.attempts, "submission_id": s.submission_id, "reading_id": s.reading_id,
                         "correction_id": s.correction_id, "updated_at": _iso(s.updated_at)} for s in subs],
        "points": [{"period": p.period, "points": p.points, "state": p.credit_state, "reason": p.credit_reason,
                    "credit_id": p.credit_id, "created_at": _iso(p.created_at)} for p in pts],
        "balance": sum(p.points for p in pts),
    }


@dataclass
class CorrectionResult:
    correction_id: int
    reading_id: int
    old_value: str | None
    value: str
    period: str | None
    action: str  # submitted / recorded / refused / review
    message: str
    submission: MeterOutcome | None = None
    verdict: Verdict | None = None

    def to_json(self) -> dict[str, Any]:
        return {"correction_id": self.correction_id, "reading_id": self.reading_id, "old_value": self.old_value,
                "value": self.value, "period": self.period, "action": self.action, "message": self.message,
                "verdict": self.verdict.to_json() if self.verdict else None,
                "submission": self.submission.to_json() if self.submission else None}


def correct_reading(
    engine: Engine,
    config: BridgeConfig,
    reading_id: int,
    value: str,
    *,
    by: str = "resident",
    note: str | None = None,
    confirm: bool = False,
    at: datetime | None = None,
    gateways: Gateways,
    clock: Clock = lambda: datetime.now(UTC),
    sleep: Sleep = time.sleep,
) -> CorrectionResult:
    """Check a correction (cloud_bridge/corrections.py), record it with the verdict, and, when accepted
    and inside an open window, submit it if it changes what billing has.

    A refused correction (outside what the meter's readings around it allow, or below what billing
    holds) or one held for review is recorded but never used for billing; `message` says why and which
    range is plausible. `confirm` (operators and installers only) accepts a value held for review."""
    if not re.match(VALUE_PATTERN, value):
        raise ResidentError(f"value {value!r} is not a meter value: digits with an optional decimal part, "
                            "e.g. 00123.456")
    if by not in CORRECTED_BY:
        raise ResidentError(f"--by must be one of {', '.join(CORRECTED_BY)}")
    if confirm and by == "resident":
        raise ResidentError("only an operator or an installer may confirm a value held for review (--by)")
    now = clock()
    at = at or now
    rule = window_rule(config)
    limits = config.settlement
    with engine.begin() as conn:
        r = conn.execute(
            select(readings.c.id, readings.c.value, readings.c.taken_at, readings.c.binding_id,
                   bindings.c.payer_code, bindings.c.meter_serial)
            .outerjoin(bindings, bindings.c.id == readings.c.binding_id).where(readings.c.id == reading_id)).first()
        if r is None:
            raise ResidentError(f"no reading with id {reading_id} (see `meter-bridge history --payer CODE`)")
        if r.meter_serial is None:
            verdict = Verdict("review", "the reading belongs to no meter, so there is nothing to check it against")
        else:
            verdict = check_correction(conn, r.meter_serial, value, r.taken_at, limits, reading_id=reading_id)
        if verdict.state == "review" and confirm:
            verdict = Verdict("accepted", f"confirmed by {by}: {verdict.reason}", verdict.plausible_low,
                              verdict.plausible_high)
        inserted = conn.execute(corrections.insert().values(
            reading_id=reading_id, value=value, by=by, note=note, created_at=now, state=verdict.state,
            reason=verdict.reason,
            plausible_low=None if verdict.plausible_low is None else str(verdict.plausible_low),
            plausible_high=None if verdict.plausible_high is None else str(verdict.plausible_high),
        )).inserted_primary_key
        assert inserted is not None
        cid = int(inserted[0])
        if verdict.accepted and r.meter_serial is not None:
            settle_meter(conn, r.meter_serial, limits, now, since=r.taken_at)
    if not verdict.accepted:
        action = "refused" if verdict.state == "refused" else "review"
        what = "refused" if verdict.state == "refused" else "held for an operator to confirm"
        return CorrectionResult(cid, reading_id, r.value, value, None, action,
                                f"{what}: {verdict.reason}; nothing is sent to billing", verdict=verdict)
    result = CorrectionResult(cid, reading_id, r.value, value, None, "recorded", "", verdict=verdict)
    if r.payer_code is None:
        result.message = "recorded; the reading belongs to no binding, so it is not submitted"
        return result
    period = Period.of(r.taken_at, rule.tz)
    result.period = str(period)
    opens, closes = rule.window(period)
    always = config.submission.window_always_open and period == Period.of(at, rule.tz)
    if not always and at >= closes:
        result.message = f"recorded; the window of {period} closed at {format_utc(closes)}, so it is not submitted"
        return result
    if not always and at < opens:
        result.message = (f"recorded; the window of {period} opens at {format_utc(opens)}, and the pass then "
                          "submits the meter's latest reading")
        return result
    key = submission_key(r.payer_code, r.meter_serial, str(period))
    with engine.begin() as conn:
        # What billing holds (or is about to): the newest accepted or in-flight value; a refused one is not.
        sent = conn.execute(
            select(submissions.c.value, submissions.c.taken_at, submissions.c.state)
            .where(submissions.c.payer_code == r.payer_code, submissions.c.meter_serial == r.meter_serial,
                   submissions.c.period == str(period), submissions.c.value.is_not(None),
                   submissions.c.state.in_(("accepted", "pending", "sending")))
            .order_by(submissions.c.id.desc()).limit(1)).first()
        if sent is not None:
            if sent.value == value:
                result.message = "recorded; billing already has this value for the period"
                return result
            if r.taken_at < sent.taken_at:
                result.message = ("recorded; a later reading was submitted for the period, so this older one "
                                  "is not sent")
                return result
            conn.execute(submissions.insert().values(
                idempotency_key=submission_key(r.payer_code, r.meter_serial, str(period), cid),
                payer_code=r.payer_code, meter_serial=r.meter_serial, period=str(period), reading_id=reading_id,
                correction_id=cid, value=value, taken_at=r.taken_at, state="pending", attempts=0,
                created_at=now, updated_at=now))
    report = run_submission_pass(engine, config, at, period=period, gateways=gateways, clock=clock,
                                 sleep=sleep, only=[(r.payer_code, r.meter_serial)])
    mine = [m for m in report.meters if m.key.endswith(f":c{cid}")] or [m for m in report.meters if m.key == key]
    result.submission = mine[-1] if mine else None
    result.action = "submitted"
    s = result.submission
    result.message = (f"submitted: {s.state}" + (f" ({s.reason})" if s.reason else "")) if s else "submitted"
    return result
