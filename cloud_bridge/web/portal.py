"""What a resident's pages show, read from the store: meters with their current value, what billing
holds for the period and when it was sent, the submission window in local time, history with plain
words, consumption per day and month, points, and corrections. Pure reads; no page logic here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from cloud_bridge.settlement import settlement_of
from cloud_bridge.store.tables import (
    bindings,
    corrections,
    meters,
    payers,
    photo_readings,
    points_ledger,
    readings,
    submissions,
)
from cloud_bridge.submission.passes import window_rule
from cloud_bridge.submission.periods import Period, WindowRule
from contract.payloads import format_utc

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig

DAYS_IN_CHART = 31
MONTHS_IN_CHART = 12
HISTORY_ROWS = 1000


@dataclass
class WindowView:
    """The submission window around `now`: the period billed now (or last), and the next window."""

    period: str  # the period whose window is open, else the last one that opened
    is_open: bool
    opens_at: datetime
    closes_at: datetime
    next_period: str
    next_opens_at: datetime
    next_closes_at: datetime


@dataclass
class ReadingRow:
    id: int
    taken_at: datetime
    meter_serial: str
    value: str | None
    status: str  # ok / suspect / error, as the device sent it
    reason_code: str | None  # the stable code before ':' (decrease, frame_failed, ...)
    reason: str | None
    corrected_value: str | None = None
    correction_id: int | None = None
    settlement: str | None = None  # settled / outlier / pending (cloud_bridge.settlement), None: not yet
    settlement_code: str | None = None  # the code before ':' of its reason (disagrees, awaiting_later, ...)
    source: str = "device"  # device / photo (the resident's)
    photo_id: int | None = None  # a photo reading's evidence
    edited: bool = False  # a photo reading whose value the resident typed over the reader's proposal

    @property
    def shown_value(self) -> str | None:
        return self.corrected_value or self.value

    @property
    def usable(self) -> str | None:
        """The value billing could take: a correction, else an ok reading's value that settlement did not
        rule out as an outlier (a pending one still may be billed once later readings confirm it)."""
        if self.corrected_value:
            return self.corrected_value
        return self.value if self.status == "ok" and self.settlement != "outlier" else None


@dataclass
class Billed:
    period: str
    value: str | None
    state: str  # pending / sending / accepted / refused / needs_attention
    reason: str | None
    updated_at: datetime
    reading_id: int | None
    correction_id: int | None


@dataclass
class CorrectionRow:
    id: int
    reading_id: int
    meter_serial: str
    old_value: str | None
    value: str
    by: str
    note: str | None
    created_at: datetime
    submission_state: str | None  # the state of the submission it caused, if any
    submission_reason: str | None
    state: str | None = None  # the plausibility verdict (cloud_bridge.corrections): accepted / refused / review
    reason: str | None = None
    plausible_low: str | None = None
    plausible_high: str | None = None

    @property
    def counts(self) -> bool:
        """Whether the correction replaces the reading's value (a refused one, or one under review, does not)."""
        return self.state in (None, "accepted")


@dataclass
class MeterView:
    serial: str
    kind: str
    device_id: str | None  # None: read from residents' photos
    in_force: bool
    current: ReadingRow | None  # newest usable reading
    latest: ReadingRow | None  # newest reading of any status
    billed: Billed | None  # for window.period
    needs_attention: bool = False  # window open, nothing billed and no usable reading of the period yet
    daily: list[tuple[str, Decimal]] = field(default_factory=list)  # (YYYY-MM-DD local, m³)
    monthly: list[tuple[str, Decimal]] = field(default_factory=list)  # (YYYY-MM, m³)


@dataclass
class PayerView:
    payer_code: str
    address: str
    window: WindowView
    meters: list[MeterView]
    readings: list[ReadingRow]
    corrections: list[CorrectionRow]
    points: list[dict[str, Any]]
    balance: int
    timezone: str

    def to_json(self) -> dict[str, Any]:
        def conv(o: Any) -> Any:
            if isinstance(o, datetime):
                return format_utc(o)
            if isinstance(o, Decimal):
                return str(o)
            if isinstance(o, dict):
                return {k: conv(v) for k, v in o.items()}
            if isinstance(o, list | tuple):
                return [conv(v) for v in o]
            return o

        return conv(asdict(self))  # type: ignore[no-any-return]


def window_view(rule: WindowRule, now: datetime) -> WindowView:
    open_p = rule.open_period(now)
    if open_p is not None:
        period = open_p
    else:
        period = Period.of(now, rule.tz)
        if rule.window(period)[0] > now:
            period = period.previous()
    opens, closes = rule.window(period)
    nxt = period.next()
    n_opens, n_closes = rule.window(nxt)
    return WindowView(str(period), open_p is not None, opens, closes, str(nxt), n_opens, n_closes)


def reason_code(reason: str | None) -> str | None:
    if not reason:
        return None
    head = reason.split(":", 1)[0].strip()
    return head if head.replace("_", "").isalpha() and len(head) <= 40 else None


def _dec(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value is not None else None
    except InvalidOperation:
        return None


def consumption(rows: list[ReadingRow], key: Any, keep: int) -> list[tuple[str, Decimal]]:
    """m³ per bucket (`key(taken_at)` → label) from usable values, oldest first, the last `keep` buckets:
    the bucket's last value minus the last value before it (the first bucket counts from its first)."""
    last_in: dict[str, Decimal] = {}
    first: Decimal | None = None
    for r in sorted(rows, key=lambda r: (r.taken_at, r.id)):
        v = _dec(r.usable)
        if v is None:
            continue
        if first is None:
            first = v
        last_in[key(r.taken_at)] = v
    out: list[tuple[str, Decimal]] = []
    previous = first
    for label in sorted(last_in):
        v = last_in[label]
        assert previous is not None
        out.append((label, max(Decimal(0), v - previous)))
        previous = v
    return out[-keep:]


def payer_view(conn: Connection, config: BridgeConfig, payer_code: str, now: datetime,
               history_limit: int = HISTORY_ROWS) -> PayerView:
    """Everything one payer's pages show. `history_limit` 0: meters and window only (the overview)."""
    rule = window_rule(config)
    tz = rule.tz
    win = window_view(rule, now)
    payer = conn.execute(select(payers).where(payers.c.payer_code == payer_code)).one()
    binds = conn.execute(
        select(bindings.c.id, bindings.c.device_id, bindings.c.meter_serial, meters.c.kind, bindings.c.valid_to)
        .join(meters, meters.c.serial == bindings.c.meter_serial)
        .where(bindings.c.payer_code == payer_code).order_by(bindings.c.valid_from)).all()
    by_binding = {b.id: b for b in binds}
    since = now - timedelta(days=400)  # charts: 12 months back, and the reading before them
    q = (select(readings.c.id, readings.c.taken_at, readings.c.value, readings.c.status, readings.c.reason,
                readings.c.binding_id, readings.c.source)
         .where(readings.c.binding_id.in_(list(by_binding) or [-1]), readings.c.taken_at >= since)
         .order_by(readings.c.taken_at.desc(), readings.c.id.desc()))
    rows = [ReadingRow(r.id, r.taken_at, by_binding[r.binding_id].meter_serial, r.value, r.status,
                       reason_code(r.reason), r.reason, source=r.source) for r in conn.execute(q)]
    by_id = {r.id: r for r in rows}
    photo_ids = [r.id for r in rows if r.source == "photo"]
    for chunk in range(0, len(photo_ids), 500):
        for p in conn.execute(select(photo_readings.c.id, photo_readings.c.reading_id, photo_readings.c.edited)
                              .where(photo_readings.c.reading_id.in_(photo_ids[chunk:chunk + 500]))):
            by_id[p.reading_id].photo_id, by_id[p.reading_id].edited = p.id, bool(p.edited)
    for rid, (state, why) in settlement_of(conn, list(by_id)).items():
        by_id[rid].settlement, by_id[rid].settlement_code = state, reason_code(why)
    corr = conn.execute(select(corrections, readings.c.value.label("old_value"), bindings.c.meter_serial)
                        .join(readings, readings.c.id == corrections.c.reading_id)
                        .join(bindings, bindings.c.id == readings.c.binding_id)
                        .where(bindings.c.payer_code == payer_code).order_by(corrections.c.id)).all()
    subs = conn.execute(select(submissions).where(submissions.c.payer_code == payer_code)
                        .order_by(submissions.c.id)).all()
    sub_by_corr = {s.correction_id: s for s in subs if s.correction_id is not None}
    corrections_out = []
    for c in corr:
        s = sub_by_corr.get(c.id)
        row = CorrectionRow(c.id, c.reading_id, c.meter_serial, c.old_value, c.value, c.by, c.note, c.created_at,
                            s.state if s else None, s.reason if s else None, c.state, c.reason, c.plausible_low,
                            c.plausible_high)
        corrections_out.append(row)
        if c.reading_id in by_id and row.counts:
            by_id[c.reading_id].corrected_value = c.value
            by_id[c.reading_id].correction_id = c.id
    meters_out = []
    seen: set[str] = set()
    for b in reversed(binds):  # the newest binding of a meter describes it
        if b.meter_serial in seen:
            continue
        seen.add(b.meter_serial)
        mine = [r for r in rows if r.meter_serial == b.meter_serial]
        current = next((r for r in mine if r.usable is not None), None)
        billed_rows = [s for s in subs if s.meter_serial == b.meter_serial and s.period == win.period]
        s = billed_rows[-1] if billed_rows else None
        billed = (Billed(s.period, s.value, s.state, s.reason, s.updated_at, s.reading_id, s.correction_id)
                  if s else None)
        daily_since = (now - timedelta(days=DAYS_IN_CHART + 1))
        usable_in_period = any(r.usable is not None and str(Period.of(r.taken_at, tz)) == win.period for r in mine)
        attention = (win.is_open and b.valid_to is None and not usable_in_period
                     and not (billed is not None and billed.state == "accepted"))
        meters_out.append(MeterView(
            b.meter_serial, b.kind, b.device_id, b.valid_to is None, current, mine[0] if mine else None, billed,
            needs_attention=attention,
            daily=consumption([r for r in mine if r.taken_at >= daily_since - timedelta(days=1)],
                              lambda t: t.astimezone(tz).strftime("%Y-%m-%d"), DAYS_IN_CHART),
            monthly=consumption(mine, lambda t: str(Period.of(t, tz)), MONTHS_IN_CHART)))
    meters_out.sort(key=lambda m: (not m.in_force, m.kind, m.serial))
    pts = conn.execute(select(points_ledger).where(points_ledger.c.payer_code == payer_code)
                       .order_by(points_ledger.c.period.desc())).all()
    return PayerView(
        payer_code=payer_code, address=payer.address, window=win, meters=meters_out,
        readings=rows[:history_limit] if history_limit else [],
        corrections=list(reversed(corrections_out)) if history_limit else [],
        points=[{"period": p.period, "points": p.points, "state": p.credit_state, "created_at": p.created_at}
                for p in pts],
        balance=sum(p.points for p in pts if p.credit_state != "refused"), timezone=config.window.timezone)
