"""One submission pass: pick each bound meter's reading for the open period, put it in the outbox,
deliver what is due to billing, append loyalty points for what billing accepted, report credits.

`run_submission_pass(engine, config, at)` is what the running bridge calls on its timer and what
`meter-bridge submit` calls once. Two clocks: `at` is the business time (which period, which readings:
`--at` replays a missed pass as of that time); `clock()` is the wall clock for retries and leases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from cloud_bridge.delivery import Clock, OutboxSpec, RetryPolicy, Sleep, deliver, due_rows
from cloud_bridge.gateways.base import Accepted, BillingGateway, Gateways, ReadingSubmission
from cloud_bridge.loyalty import CreditOutcome, append_points, deliver_due_credits
from cloud_bridge.settlement.settings import SettlementSection
from cloud_bridge.store.tables import submissions
from cloud_bridge.submission.periods import Period, WindowRule
from cloud_bridge.submission.selection import BoundMeter, Choice, bound_meters, choose
from cloud_bridge.submission.settings import SubmissionSection
from contract.payloads import format_utc, mask_payer

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig

log = logging.getLogger(__name__)

SUBMISSIONS = OutboxSpec(submissions, submissions.c.state, submissions.c.reason, submissions.c.submission_id,
                         "accepted")
OPEN_STATES = ("pending", "sending")


def submission_key(payer_code: str, meter_serial: str, period: str, correction_id: int | None = None) -> str:
    """`payer:meter:period`; a resident's correction sent after it gets `…:c<correction id>`."""
    key = f"{payer_code}:{meter_serial}:{period}"
    return key if correction_id is None else f"{key}:c{correction_id}"


def is_correction_key(key: str) -> bool:
    return key.count(":") == 3


@dataclass
class MeterOutcome:
    key: str
    payer_code: str
    meter_serial: str
    period: str
    value: str | None
    taken_at: datetime | None
    state: str  # pending / sending / accepted / refused / needs_attention; dry run: would_send
    reason: str | None
    attempts: int
    submission_id: str | None
    action: str  # what this pass did: new / sent / unchanged / dry_run

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["payer_masked"] = mask_payer(self.payer_code)
        d["taken_at"] = format_utc(self.taken_at) if self.taken_at else None
        return d


@dataclass
class PassReport:
    at: datetime
    period: str | None
    window: tuple[datetime, datetime] | None
    window_open: bool
    dry_run: bool
    meters: list[MeterOutcome] = field(default_factory=list)
    credits: list[CreditOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.meters:
            out[m.state] = out.get(m.state, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "at": format_utc(self.at),
            "period": self.period,
            "window": None if self.window is None else {
                "opens": format_utc(self.window[0]), "closes": format_utc(self.window[1]), "open": self.window_open},
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "meters": [m.to_json() for m in self.meters],
            "credits": [asdict(c) for c in self.credits],
        }


def window_rule(config: BridgeConfig) -> WindowRule:
    return WindowRule(config.window.start_day, config.window.end_day, config.window.timezone)


def retry_policy(settings: SubmissionSection) -> RetryPolicy:
    return RetryPolicy(settings.max_attempts_per_pass, settings.backoff_base_s, settings.backoff_max_s,
                       settings.max_wait_in_pass_s)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def run_submission_pass(
    engine: Engine,
    config: BridgeConfig,
    at: datetime | None = None,
    *,
    gateways: Gateways | None,
    period: str | Period | None = None,
    dry_run: bool = False,
    clock: Clock = _utcnow,
    sleep: Sleep = time.sleep,
    only: Iterable[tuple[str, str]] | None = None,
) -> PassReport:
    """Run one pass as of `at` (default: now) for `period` (default: the one whose window is open).

    Without `period`, items of any period that are due for a retry are delivered too (the timer's case);
    with it, only that period's. `only` limits the pass to some (payer_code, meter_serial) pairs.
    `gateways` are the caller's (built and closed by it); a dry run calls nobody and may pass None."""
    at = (at or clock()).astimezone(UTC)
    rule = window_rule(config)
    settings = config.submission
    limits = config.settlement
    tz = rule.tz
    explicit = period is not None
    p = Period.parse(period) if isinstance(period, str) else period
    if p is None:
        p = Period.of(at, tz) if settings.window_always_open else rule.open_period(at)
    window = rule.window(p) if p is not None else None
    is_open = p is not None and (settings.window_always_open or rule.is_open(p, at))
    report = PassReport(at, str(p) if p else None, window, is_open, dry_run)
    pairs = None if only is None else set(only)

    actions: dict[str, str] = {}
    if p is not None and is_open:
        start, end = p.starts_at(tz), p.ends_at(tz)
        with engine.begin() as conn:
            meters = bound_meters(conn, start, max(min(end, at), start + timedelta(microseconds=1)))
        for meter in meters:
            if pairs is not None and (meter.payer_code, meter.meter_serial) not in pairs:
                continue
            if dry_run:
                report.meters.append(_dry_run_outcome(engine, meter, p, at, start, end, limits))
            else:
                key, action = _plan(engine, meter, p, at, start, end, clock(), limits)
                actions[key] = action
    elif p is not None:
        log.info("period %s: window %s – %s is not open at %s; nothing new is queued", p,
                 format_utc(window[0]) if window else "?", format_utc(window[1]) if window else "?", format_utc(at))
    if dry_run:
        return report
    if gateways is None:
        raise ValueError("a submission pass that sends needs the billing and loyalty gateways")

    policy = retry_policy(settings)
    scope = str(p) if explicit and p else None
    delivered = _deliver_due(engine, config, gateways.billing, policy, settings, clock, sleep, scope, pairs)
    actions.update({k: "sent" for k in delivered})
    report.credits = deliver_due_credits(engine, gateways.loyalty, policy=policy, lease_s=settings.lease_s,
                                         clock=clock, sleep=sleep, period=scope)
    report.meters = _outcomes(engine, report.period if is_open else None, actions, pairs)
    return report


def logged_pass(engine: Engine, config: BridgeConfig, gateways: Gateways, now: datetime) -> PassReport:
    """The running bridge's pass on its timer: as of `now`, any period, with a line in the log."""
    report = run_submission_pass(engine, config, now, gateways=gateways)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts().items())) or "nothing to do"
    credits = sum(1 for c in report.credits if c.state == "credited")
    log.info("submission pass for %s: %s; %d credits reported", report.period or "(no open window)", counts, credits)
    return report


def _plan(engine: Engine, meter: BoundMeter, p: Period, at: datetime, start: datetime, end: datetime,
          now: datetime, limits: SettlementSection) -> tuple[str, str]:
    """Create (or fill in a needs_attention) outbox row for the meter; a row with a payload is frozen."""
    key = submission_key(meter.payer_code, meter.meter_serial, str(p))
    try:
        with engine.begin() as conn:
            row = conn.execute(select(submissions.c.id, submissions.c.state, submissions.c.reason)
                               .where(submissions.c.idempotency_key == key)).first()
            if row is not None and row.state != "needs_attention":
                return key, "unchanged"
            choice = choose(conn, meter, p, at, start, end, limits)
            payload = _payload(choice)
            if row is None:
                conn.execute(submissions.insert().values(
                    idempotency_key=key, payer_code=meter.payer_code, meter_serial=meter.meter_serial,
                    period=str(p), attempts=0, created_at=now, updated_at=now, **payload))
                return key, "new"
            if payload["state"] == "needs_attention" and payload["reason"] == row.reason:
                return key, "unchanged"
            conn.execute(update(submissions).where(submissions.c.id == row.id, submissions.c.state == "needs_attention")
                         .values(updated_at=now, **payload))
            return key, "new" if payload["state"] == "pending" else "unchanged"
    except IntegrityError:
        log.info("outbox row %s was created by another worker meanwhile", key)
        return key, "unchanged"


def _payload(choice: Choice) -> dict[str, Any]:
    if choice.attention is not None:
        return dict(state="needs_attention", reason=choice.attention, reading_id=None, correction_id=None,
                    value=None, taken_at=None)
    return dict(state="pending", reason=None, reading_id=choice.reading_id, correction_id=choice.correction_id,
                value=choice.value, taken_at=choice.taken_at, next_attempt_at=None)


def _dry_run_outcome(engine: Engine, meter: BoundMeter, p: Period, at: datetime, start: datetime,
                     end: datetime, limits: SettlementSection) -> MeterOutcome:
    key = submission_key(meter.payer_code, meter.meter_serial, str(p))
    with engine.begin() as conn:
        row = conn.execute(select(submissions).where(submissions.c.idempotency_key == key)).first()
        choice = choose(conn, meter, p, at, start, end, limits, write=False)
    if row is not None and row.state != "needs_attention":
        return MeterOutcome(key, meter.payer_code, meter.meter_serial, str(p), row.value, row.taken_at, row.state,
                            row.reason, row.attempts, row.submission_id, "dry_run")
    state = "needs_attention" if choice.attention else "would_send"
    return MeterOutcome(key, meter.payer_code, meter.meter_serial, str(p), choice.value, choice.taken_at, state,
                        choice.attention, 0, None, "dry_run")


def _deliver_due(engine: Engine, config: BridgeConfig, billing: BillingGateway, policy: RetryPolicy,
                 settings: SubmissionSection, clock: Clock, sleep: Sleep, period: str | None,
                 pairs: set[tuple[str, str]] | None) -> list[str]:
    rows = due_rows(engine, SUBMISSIONS, clock(), period=period)
    sent = []
    points = config.loyalty.points

    def credit(conn: Any, row_id: int, answer: Accepted) -> None:
        if append_points(conn, row_id, points, clock()):
            log.info("points for submission row %s appended to the ledger", row_id)

    for row in rows:
        if pairs is not None and (row.payer_code, row.meter_serial) not in pairs:
            continue
        if is_correction_key(row.idempotency_key) and _earlier_open(engine, row):
            continue  # a correction goes after the submission it corrects has its answer
        item = ReadingSubmission(row.payer_code, row.meter_serial, row.period, row.value, format_utc(row.taken_at))
        result = deliver(engine, SUBMISSIONS, row.id,
                         partial(billing.submit_reading, item, row.idempotency_key),
                         policy=policy, lease_s=settings.lease_s, clock=clock, sleep=sleep, on_done=credit)
        if result is not None:
            sent.append(row.idempotency_key)
    return sent


def _earlier_open(engine: Engine, row: Any) -> bool:
    with engine.begin() as conn:
        return conn.execute(select(submissions.c.id).where(and_(
            submissions.c.payer_code == row.payer_code, submissions.c.meter_serial == row.meter_serial,
            submissions.c.period == row.period, submissions.c.id < row.id,
            submissions.c.state.in_(OPEN_STATES))).limit(1)).first() is not None


def _outcomes(engine: Engine, period: str | None, actions: dict[str, str],
              pairs: set[tuple[str, str]] | None) -> list[MeterOutcome]:
    """Every row of the period (after the pass) plus any other row this pass sent."""
    conds = []
    if period is not None:
        conds.append(submissions.c.period == period)
    if actions:
        conds.append(submissions.c.idempotency_key.in_(list(actions)))
    if not conds:
        return []
    with engine.begin() as conn:
        rows = conn.execute(select(submissions).where(or_(*conds))
                            .order_by(submissions.c.period, submissions.c.payer_code, submissions.c.meter_serial,
                                      submissions.c.id)).all()
    return [MeterOutcome(r.idempotency_key, r.payer_code, r.meter_serial, r.period, r.value, r.taken_at, r.state,
                         r.reason, r.attempts, r.submission_id, actions.get(r.idempotency_key, "unchanged"))
            for r in rows if pairs is None or (r.payer_code, r.meter_serial) in pairs]
