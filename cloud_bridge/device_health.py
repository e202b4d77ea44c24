"""The one device-state query: each registered device's state in one row, from the store. Everything
that shows a device reads it from here: the fleet page, `devices list`, the retained
`bridge/devices/{id}/state` and `bridge/fleet` topics (cloud_bridge.fleet), `meter-bridge status`, the
metrics and the fleet page's "needs attention". Counts over the fleet are aggregates of the same rows
computed by the database (`fleet_summary`), never a loop over every device in Python.

What the columns mean (docs/decisions.md, "One device-state query"):
- binding: the binding in force (valid_to IS NULL), never an older one: an unbound, retired or replaced
  device serves no meter and no payer, so it shows none and no submission or points (the meter and the
  payer keep their history: `devices show`, `history --payer`);
- last reading: the newest one the device took (greatest taken_at, then the last stored), its value,
  status, reason and settlement; a redelivery that arrives late, or a new outbox epoch that starts at
  seq 1 again, never makes an older reading the last;
- not ok in a row: how many readings taken after the newest `ok` one are not `ok` (`suspect`, `error`);
- stale: no reading taken for `fleet.stale_factor` x `fleet.device_interval_s` (since it was added, when
  it never sent one); a retired device is never stale;
- online: from the retained `meters/{id}/status` (None: never heard);
- telemetry: the newest `meters/{id}/telemetry` (outbox depth, last error, CPU temperature, free disk,
  model, version).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, FromClause, Select, and_, case, false, func, literal, or_, select, true

from cloud_bridge.config import FleetSection, WindowSection
from cloud_bridge.store.tables import (
    bindings,
    device_latest,
    device_status,
    device_telemetry,
    devices,
    meters,
    settlements,
    submissions,
)
from cloud_bridge.submission.periods import Period, WindowRule
from contract.payloads import format_utc, mask_payer


def stale_after(cfg: FleetSection) -> timedelta:
    return timedelta(seconds=cfg.device_interval_s * cfg.stale_factor)


def current_period(now: datetime, window: WindowSection) -> str:
    """The billing period being collected now: the one whose submission window is open, else this month."""
    rule = WindowRule(window.start_day, window.end_day, window.timezone)
    period = rule.open_period(now) or Period.of(now, rule.tz)
    return str(period)


@dataclass(frozen=True)
class DeviceHealth:
    device_id: str
    created_at: datetime
    note: str | None
    online: bool | None
    online_changed_at: datetime | None
    readings: int
    last_seq: int | None
    last_taken_at: datetime | None
    last_value: str | None
    last_status: str | None
    last_reason: str | None
    not_ok_in_row: int
    stale: bool
    meter_serial: str | None
    meter_kind: str | None
    payer_code: str | None
    bound_since: datetime | None
    telemetry_at: datetime | None
    outbox_depth: int | None
    last_error: str | None
    cpu_temp_c: float | None
    free_disk_bytes: int | None
    disk_full: bool | None
    uptime_s: float | None
    model: str | None
    version: str | None
    retired_at: datetime | None = None  # `devices retire`: kept for its history, never stale
    last_settlement: str | None = None  # settled | outlier | pending, as the bridge stored it (None: not yet)
    last_settlement_reason: str | None = None
    last_stored_at: datetime | None = None

    @property
    def offline_since(self) -> datetime | None:
        return self.online_changed_at if self.online is False else None

    def as_json(self, *, show_payer: bool = False) -> dict[str, Any]:
        def t(v: datetime | None) -> str | None:
            return format_utc(v) if v else None

        payer = None
        if self.payer_code is not None:
            payer = self.payer_code if show_payer else mask_payer(self.payer_code)
        return {
            "device_id": self.device_id, "created_at": t(self.created_at), "note": self.note,
            "online": self.online, "online_changed_at": t(self.online_changed_at), "stale": self.stale,
            "readings": self.readings,
            "last_reading": None if self.last_seq is None else {
                "seq": self.last_seq, "taken_at": t(self.last_taken_at), "value": self.last_value,
                "status": self.last_status, "reason": self.last_reason,
                "settlement": None if self.last_settlement is None else {
                    "state": self.last_settlement, "reason": self.last_settlement_reason}},
            "not_ok_in_row": self.not_ok_in_row,
            "binding": None if self.meter_serial is None else {
                "meter_serial": self.meter_serial, "kind": self.meter_kind, "payer_code": payer,
                "since": t(self.bound_since)},
            "telemetry": None if self.telemetry_at is None else {
                "at": t(self.telemetry_at), "outbox_depth": self.outbox_depth, "last_error": self.last_error,
                "cpu_temp_c": self.cpu_temp_c, "free_disk_bytes": self.free_disk_bytes,
                "disk_full": self.disk_full, "uptime_s": self.uptime_s},
            "model": self.model, "version": self.version, "retired_at": t(self.retired_at),
        }


def device_rows(now: datetime, fleet: FleetSection, device_ids: Iterable[str] | None = None, *,
                latest: FromClause | None = None) -> Select[Any]:
    """THE device-state query: one row per registered device (only `device_ids` when given), with every
    column the module docstring describes. `stale`, `suspect_last_day` and `error_last_day` are 0/1
    columns computed by the database, so a count over the fleet is a SUM over this query.

    Each device's newest reading and its not-ok run come from its row of `device_latest`, which the store
    keeps as readings are stored (cloud_bridge/store/device_latest.py): one row per device, however long
    its history. `latest` replaces that table by another source with its columns: the bench and the
    tests pass `latest_from_readings(...)`, the same facts recomputed from every reading."""
    wanted = None if device_ids is None else sorted(set(device_ids))

    def only(col: Any) -> Any:
        return true() if wanted is None else col.in_(wanted)

    dl = device_latest if latest is None else latest
    open_binding = (select(bindings.c.device_id, bindings.c.meter_serial, bindings.c.payer_code,
                           bindings.c.valid_from, meters.c.kind)
                    .join(meters, meters.c.serial == bindings.c.meter_serial)
                    .where(and_(bindings.c.valid_to.is_(None), only(bindings.c.device_id)))
                    .subquery("open_binding"))
    tel = device_telemetry
    day_ago = now - timedelta(days=1)
    since = func.coalesce(dl.c.last_taken_at, devices.c.created_at)
    stale = case((and_(devices.c.retired_at.is_(None), since < now - stale_after(fleet)), 1), else_=0)

    def within_day(col: Any) -> Any:
        return case((col >= day_ago, 1), else_=0)

    return (select(devices.c.device_id, devices.c.created_at, devices.c.note, devices.c.retired_at,
                   device_status.c.online, device_status.c.changed_at.label("online_changed_at"),
                   func.coalesce(dl.c.n, literal(0)).label("n"), dl.c.last_seq.label("last_seq"),
                   dl.c.last_taken_at.label("taken_at"), dl.c.last_stored_at.label("stored_at"),
                   dl.c.last_value.label("value"), dl.c.last_status.label("status"),
                   dl.c.last_reason.label("reason"), dl.c.last_model.label("reading_model"),
                   func.coalesce(dl.c.not_ok_n, literal(0)).label("not_ok_n"),
                   settlements.c.state.label("settlement"), settlements.c.reason.label("settlement_reason"),
                   open_binding.c.meter_serial, open_binding.c.kind, open_binding.c.payer_code,
                   open_binding.c.valid_from, tel.c.at.label("telemetry_at"), tel.c.outbox_depth, tel.c.last_error,
                   tel.c.cpu_temp_c, tel.c.free_disk_bytes, tel.c.disk_full, tel.c.uptime_s, tel.c.model,
                   tel.c.version, stale.label("stale"),
                   within_day(dl.c.suspect_at).label("suspect_last_day"),
                   within_day(dl.c.error_at).label("error_last_day"))
            .select_from(devices)
            .outerjoin(device_status, device_status.c.device_id == devices.c.device_id)
            .outerjoin(dl, dl.c.device_id == devices.c.device_id)
            .outerjoin(settlements, settlements.c.reading_id == dl.c.last_id)
            .outerjoin(open_binding, open_binding.c.device_id == devices.c.device_id)
            .outerjoin(tel, tel.c.device_id == devices.c.device_id)
            .where(only(devices.c.device_id))
            .order_by(devices.c.device_id))


def device_health(conn: Connection, now: datetime, fleet: FleetSection,
                  device_ids: Iterable[str] | None = None) -> list[DeviceHealth]:
    """Health rows ordered by device id; only `device_ids` when given."""
    return [_health(r) for r in conn.execute(device_rows(now, fleet, device_ids)).all()]


@dataclass(frozen=True)
class FleetSummary:
    """Counts over the fleet's devices in service (retired ones are history, not fleet), from the same
    rows as `device_health`, summed by the database."""

    devices: int
    online: int
    offline: int  # retained status `offline` (last will or clean stop); never heard is neither
    stale: int
    unbound: int
    last_ok: int
    last_suspect: int
    last_error: int
    last_outlier: int
    not_ok_3_in_row: int
    suspect_last_day: int
    error_last_day: int
    reporting_telemetry: int
    outbox_readings: int
    outbox_readings_max: int
    disk_full: int
    cpu_temp_max_c: float | None
    free_disk_min_bytes: int | None

    @property
    def not_online(self) -> int:
        return self.devices - self.online


def fleet_summary(conn: Connection, now: datetime, fleet: FleetSection) -> FleetSummary:
    rows = device_rows(now, fleet).order_by(None).subquery("device_rows")
    c = rows.c

    def count_if(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    r = conn.execute(select(
        func.count().label("devices"),
        count_if(c.online.is_(True)).label("online"), count_if(c.online.is_(False)).label("offline"),
        func.coalesce(func.sum(c.stale), 0).label("stale"), count_if(c.meter_serial.is_(None)).label("unbound"),
        count_if(c.status == "ok").label("last_ok"), count_if(c.status == "suspect").label("last_suspect"),
        count_if(c.status == "error").label("last_error"), count_if(c.settlement == "outlier").label("last_outlier"),
        count_if(c.not_ok_n >= 3).label("not_ok_3"),
        func.coalesce(func.sum(c.suspect_last_day), 0).label("suspect_last_day"),
        func.coalesce(func.sum(c.error_last_day), 0).label("error_last_day"),
        func.count(c.telemetry_at).label("telemetry"),
        func.coalesce(func.sum(case((c.telemetry_at.is_not(None), func.coalesce(c.outbox_depth, 0)), else_=0)),
                      0).label("outbox"),
        func.coalesce(func.max(case((c.telemetry_at.is_not(None), func.coalesce(c.outbox_depth, 0)))), 0)
        .label("outbox_max"),
        count_if(and_(c.telemetry_at.is_not(None), c.disk_full.is_(True))).label("disk_full"),
        func.max(case((c.telemetry_at.is_not(None), c.cpu_temp_c))).label("cpu_max"),
        func.min(case((c.telemetry_at.is_not(None), c.free_disk_bytes))).label("disk_min"),
    ).where(c.retired_at.is_(None))).one()
    return FleetSummary(
        devices=int(r.devices), online=int(r.online), offline=int(r.offline), stale=int(r.stale),
        unbound=int(r.unbound), last_ok=int(r.last_ok), last_suspect=int(r.last_suspect),
        last_error=int(r.last_error), last_outlier=int(r.last_outlier), not_ok_3_in_row=int(r.not_ok_3),
        suspect_last_day=int(r.suspect_last_day), error_last_day=int(r.error_last_day),
        reporting_telemetry=int(r.telemetry), outbox_readings=int(r.outbox), outbox_readings_max=int(r.outbox_max),
        disk_full=int(r.disk_full), cpu_temp_max_c=None if r.cpu_max is None else float(r.cpu_max),
        free_disk_min_bytes=None if r.disk_min is None else int(r.disk_min))


@dataclass(frozen=True)
class PeriodProgress:
    """How far the current period's submissions are: each bound meter counted once."""

    period: str
    window_opens: datetime
    window_closes: datetime
    window_open: bool
    meters_bound: int
    by_state: dict[str, int]
    not_billed: int
    corrections_accepted: int

    @property
    def accepted(self) -> int:
        return self.by_state.get("accepted", 0)


def _meter_states(period: str) -> Any:
    """(payer_code, meter_serial, state) per meter of the period: `accepted` when any of its rows was
    accepted (the first submission or a correction), else the state of its newest row."""
    per_meter = (select(submissions.c.payer_code, submissions.c.meter_serial,
                        func.max(submissions.c.id).label("newest"),
                        func.max(case((submissions.c.state == "accepted", 1), else_=0)).label("accepted"))
                 .where(submissions.c.period == period)
                 .group_by(submissions.c.payer_code, submissions.c.meter_serial).subquery("per_meter"))
    state = case((per_meter.c.accepted == 1, literal("accepted")), else_=submissions.c.state)
    return (select(per_meter.c.payer_code, per_meter.c.meter_serial, state.label("state"))
            .join(submissions, submissions.c.id == per_meter.c.newest).subquery("meter_states"))


def meter_states(conn: Connection, period: str) -> dict[tuple[str, str], str]:
    """{(payer, meter): state} for the period (`_meter_states`)."""
    states = _meter_states(period)
    return {(r.payer_code, r.meter_serial): r.state for r in conn.execute(select(states)).all()}


def period_progress(conn: Connection, now: datetime, window: WindowSection) -> PeriodProgress:
    period = current_period(now, window)
    opens, closes = WindowRule(window.start_day, window.end_day, window.timezone).window(Period.parse(period))
    states = _meter_states(period)
    by_state = {str(state): int(n) for state, n in conn.execute(
        select(states.c.state, func.count()).group_by(states.c.state)).all()}
    bound = (select(bindings.c.payer_code, bindings.c.meter_serial).where(bindings.c.valid_to.is_(None))
             .distinct().subquery("bound"))
    billed = and_(states.c.payer_code == bound.c.payer_code, states.c.meter_serial == bound.c.meter_serial,
                  states.c.state == "accepted")
    meters_bound, not_billed = conn.execute(select(
        func.count(), func.coalesce(func.sum(case((states.c.state.is_(None), 1), else_=0)), 0))
        .select_from(bound.outerjoin(states, billed))).one()
    corrections = conn.execute(select(func.count()).where(and_(
        submissions.c.period == period, submissions.c.idempotency_key.like("%:c%"),
        submissions.c.state == "accepted"))).scalar_one()
    return PeriodProgress(period=period, window_opens=opens, window_closes=closes, window_open=opens <= now < closes,
                          meters_bound=int(meters_bound), by_state=by_state, not_billed=int(not_billed),
                          corrections_accepted=int(corrections))


@dataclass(frozen=True)
class FleetFilter:
    """The fleet page's filters; every one that is set must hold (AND)."""

    offline_h: float | None = None  # offline (retained status) for more than this many hours
    not_ok: int | None = None  # at least this many of the newest readings in a row not ok
    attention: bool = False  # needs attention before the current period's window closes
    unbilled: bool = False  # its meter has no accepted submission this period
    stale: bool = False
    query: str = ""  # part of the device id or meter serial

    @property
    def active(self) -> bool:
        return bool(self.offline_h is not None or self.not_ok is not None or self.attention or self.unbilled
                    or self.stale or self.query)


def billing_state(h: DeviceHealth, states: dict[tuple[str, str], str]) -> str | None:
    """The device's meter's submission state this period (None: nothing submitted yet, or unbound)."""
    if h.payer_code is None or h.meter_serial is None:
        return None
    return states.get((h.payer_code, h.meter_serial))


def attention_reasons(h: DeviceHealth, states: dict[tuple[str, str], str], progress: PeriodProgress,
                      now: datetime) -> list[str]:
    """Why a bound device's meter may miss this period's bill: codes, empty when nothing is wrong, the
    meter is already billed, or the window has closed. `offline`, `stale`, `not_ok`, `needs_attention`,
    `refused`, `no_reading`."""
    if h.meter_serial is None or now >= progress.window_closes:
        return []
    state = billing_state(h, states)
    if state == "accepted":
        return []
    out = []
    if h.online is False:
        out.append("offline")
    if h.stale:
        out.append("stale")
    if h.last_seq is None:
        out.append("no_reading")
    elif h.not_ok_in_row:
        out.append("not_ok")
    if state in ("needs_attention", "refused"):
        out.append(state)
    return out


def _health(r: Any) -> DeviceHealth:
    return DeviceHealth(
        device_id=r.device_id, created_at=r.created_at, note=r.note, online=r.online,
        online_changed_at=r.online_changed_at, readings=int(r.n), last_seq=r.last_seq,
        last_taken_at=r.taken_at, last_value=r.value, last_status=r.status, last_reason=r.reason,
        not_ok_in_row=int(r.not_ok_n), stale=bool(r.stale),
        meter_serial=r.meter_serial, meter_kind=r.kind, payer_code=r.payer_code, bound_since=r.valid_from,
        telemetry_at=r.telemetry_at, outbox_depth=r.outbox_depth, last_error=r.last_error,
        cpu_temp_c=r.cpu_temp_c, free_disk_bytes=r.free_disk_bytes, disk_full=r.disk_full,
        uptime_s=r.uptime_s, model=r.model or r.reading_model or None, version=r.version or None,
        retired_at=r.retired_at, last_settlement=r.settlement, last_settlement_reason=r.settlement_reason,
        last_stored_at=r.stored_at)


@dataclass(frozen=True)
class FleetListing:
    """What the fleet page lists: the first `limit` matching devices (by id) with their meter's submission
    state this period, how many match and how many devices there are."""

    rows: list[DeviceHealth]
    states: dict[tuple[str, str], str]  # (payer, meter) -> state, for the listed rows
    matched: int
    total: int


def fleet_listing(conn: Connection, now: datetime, fleet: FleetSection, flt: FleetFilter, progress: PeriodProgress,
                  limit: int) -> FleetListing:
    """The fleet page's devices, filtered by the database (the same conditions as `attention_reasons` and
    `billing_state`, which say why for each listed row), so a fleet of millions is never read row by row."""
    rows = device_rows(now, fleet).order_by(None).subquery("device_rows")
    states = _meter_states(progress.period)
    c = rows.c
    state = states.c.state
    bound = c.meter_serial.is_not(None)
    not_billed = or_(state.is_(None), state != "accepted")
    conds: list[Any] = []
    if flt.offline_h is not None:
        conds.append(and_(c.online.is_(False), c.online_changed_at <= now - timedelta(hours=flt.offline_h)))
    if flt.not_ok is not None:
        conds.append(c.not_ok_n >= flt.not_ok)
    if flt.stale:
        conds.append(c.stale == 1)
    if flt.unbilled:
        conds.append(and_(bound, not_billed))
    if flt.attention:
        if now >= progress.window_closes:  # too late to act: nothing needs attention
            conds.append(false())
        else:
            conds.append(and_(bound, not_billed, or_(c.online.is_(False), c.stale == 1, c.last_seq.is_(None),
                                                     c.not_ok_n > 0, state.in_(("needs_attention", "refused")))))
    q = flt.query.strip().lower()
    if q:
        conds.append(or_(func.lower(c.device_id).contains(q, autoescape=True),
                         func.lower(func.coalesce(c.meter_serial, "")).contains(q, autoescape=True)))
    source = rows.outerjoin(states, and_(states.c.payer_code == c.payer_code, states.c.meter_serial == c.meter_serial))
    where = and_(true(), *conds)
    listed = conn.execute(select(rows, state.label("meter_state")).select_from(source).where(where)
                          .order_by(c.device_id).limit(limit)).all()
    matched = conn.execute(select(func.count()).select_from(source).where(where)).scalar_one()
    total = conn.execute(select(func.count()).select_from(devices)).scalar_one()
    return FleetListing(rows=[_health(r) for r in listed],
                     states={(r.payer_code, r.meter_serial): r.meter_state for r in listed
                             if r.meter_state is not None},
                     matched=int(matched), total=int(total))
