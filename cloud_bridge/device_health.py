"""Each device's health in one row, from the store: what `devices list`, the fleet page and the metrics
show. The same few grouped queries for one device or the whole fleet (no query per device).

- last reading: the one with the highest seq (the device's own order), its value, status and reason;
- not ok in a row: how many of the newest readings in a row are not `ok` (`suspect` or `error`);
- stale: no reading taken for `fleet.stale_factor` x `fleet.device_interval_s` (since it was added, when
  it never sent one);
- online: from the retained `meters/{id}/status` (None: never heard);
- telemetry: the newest `meters/{id}/telemetry` (outbox depth, last error, CPU temperature, free disk,
  model, version).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, true

from cloud_bridge.config import FleetSection, WindowSection
from cloud_bridge.fleet import current_period, stale_after
from cloud_bridge.store.tables import (
    bindings,
    device_status,
    device_telemetry,
    devices,
    meters,
    readings,
    settlements,
    submissions,
)
from contract.payloads import format_utc, mask_payer


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


def device_health(conn: Connection, now: datetime, fleet: FleetSection,
                  device_ids: Iterable[str] | None = None) -> list[DeviceHealth]:
    """Health rows ordered by device id; only `device_ids` when given."""
    wanted = None if device_ids is None else sorted(set(device_ids))

    def only(col: Any) -> Any:
        return true() if wanted is None else col.in_(wanted)

    # The newest reading is the last one stored (max id), not the highest seq: a device with a new outbox
    # (a new epoch) starts at seq 1 again, and (device_id, seq) is no longer unique.
    per_device = (select(readings.c.device_id, func.count().label("n"), func.max(readings.c.id).label("last_id"))
                  .where(only(readings.c.device_id)).group_by(readings.c.device_id).subquery("per_device"))
    last = readings.alias("last")
    last_ok = (select(readings.c.device_id, func.max(readings.c.id).label("ok_id"))
               .where(and_(readings.c.status == "ok", only(readings.c.device_id)))
               .group_by(readings.c.device_id).subquery("last_ok"))
    not_ok = (select(readings.c.device_id, func.count().label("n"))
              .select_from(readings.outerjoin(last_ok, last_ok.c.device_id == readings.c.device_id))
              .where(and_(readings.c.status != "ok", only(readings.c.device_id),
                          or_(last_ok.c.ok_id.is_(None), readings.c.id > last_ok.c.ok_id)))
              .group_by(readings.c.device_id).subquery("not_ok"))
    open_binding = (select(bindings.c.device_id, bindings.c.meter_serial, bindings.c.payer_code,
                           bindings.c.valid_from, meters.c.kind)
                    .join(meters, meters.c.serial == bindings.c.meter_serial)
                    .where(bindings.c.valid_to.is_(None)).subquery("open_binding"))
    tel = device_telemetry
    q = (select(devices.c.device_id, devices.c.created_at, devices.c.note, devices.c.retired_at,
                device_status.c.online, device_status.c.changed_at.label("online_changed_at"),
                per_device.c.n, last.c.seq.label("last_seq"), last.c.taken_at, last.c.value, last.c.status,
                last.c.reason,
                last.c.model.label("reading_model"), not_ok.c.n.label("not_ok_n"),
                settlements.c.state.label("settlement"), settlements.c.reason.label("settlement_reason"),
                open_binding.c.meter_serial, open_binding.c.kind, open_binding.c.payer_code, open_binding.c.valid_from,
                tel.c.at.label("telemetry_at"), tel.c.outbox_depth, tel.c.last_error, tel.c.cpu_temp_c,
                tel.c.free_disk_bytes, tel.c.disk_full, tel.c.uptime_s, tel.c.model, tel.c.version)
         .select_from(devices)
         .outerjoin(device_status, device_status.c.device_id == devices.c.device_id)
         .outerjoin(per_device, per_device.c.device_id == devices.c.device_id)
         .outerjoin(last, and_(last.c.device_id == devices.c.device_id, last.c.id == per_device.c.last_id))
         .outerjoin(settlements, settlements.c.reading_id == last.c.id)
         .outerjoin(not_ok, not_ok.c.device_id == devices.c.device_id)
         .outerjoin(open_binding, open_binding.c.device_id == devices.c.device_id)
         .outerjoin(tel, tel.c.device_id == devices.c.device_id)
         .where(only(devices.c.device_id))
         .order_by(devices.c.device_id))
    cutoff = now - stale_after(fleet)
    out = []
    for r in conn.execute(q).all():
        since = r.taken_at or r.created_at
        out.append(DeviceHealth(
            device_id=r.device_id, created_at=r.created_at, note=r.note, online=r.online,
            online_changed_at=r.online_changed_at, readings=int(r.n or 0), last_seq=r.last_seq,
            last_taken_at=r.taken_at, last_value=r.value, last_status=r.status, last_reason=r.reason,
            not_ok_in_row=int(r.not_ok_n or 0), stale=since < cutoff and r.retired_at is None,
            meter_serial=r.meter_serial, meter_kind=r.kind, payer_code=r.payer_code, bound_since=r.valid_from,
            telemetry_at=r.telemetry_at, outbox_depth=r.outbox_depth, last_error=r.last_error,
            cpu_temp_c=r.cpu_temp_c, free_disk_bytes=r.free_disk_bytes, disk_full=r.disk_full,
            uptime_s=r.uptime_s, model=r.model or r.reading_model or None, version=r.version or None,
            retired_at=r.retired_at, last_settlement=r.settlement, last_settlement_reason=r.settlement_reason))
    return out


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


def meter_states(conn: Connection, period: str) -> dict[tuple[str, str], str]:
    """{(payer, meter): state} for the period: `accepted` when any of its rows was accepted (the first
    submission or a correction), else the state of its newest row."""
    rows = conn.execute(select(submissions.c.payer_code, submissions.c.meter_serial, submissions.c.state)
                        .where(submissions.c.period == period).order_by(submissions.c.id)).all()
    states: dict[tuple[str, str], str] = {}
    for r in rows:
        key = (r.payer_code, r.meter_serial)
        if states.get(key) != "accepted":
            states[key] = r.state
    return states


def period_progress(conn: Connection, now: datetime, window: WindowSection) -> PeriodProgress:
    from cloud_bridge.submission.periods import Period, WindowRule

    period = current_period(now, window)
    opens, closes = WindowRule(window.start_day, window.end_day, window.timezone).window(Period.parse(period))
    states = meter_states(conn, period)
    bound = {(r.payer_code, r.meter_serial) for r in conn.execute(
        select(bindings.c.payer_code, bindings.c.meter_serial).where(bindings.c.valid_to.is_(None))).all()}
    by_state: dict[str, int] = {}
    for state in states.values():
        by_state[state] = by_state.get(state, 0) + 1
    corrections = conn.execute(select(func.count()).where(and_(
        submissions.c.period == period, submissions.c.idempotency_key.like("%:c%"),
        submissions.c.state == "accepted"))).scalar_one()
    return PeriodProgress(period=period, window_opens=opens, window_closes=closes, window_open=opens <= now < closes,
                          meters_bound=len(bound), by_state=by_state,
                          not_billed=sum(1 for k in bound if states.get(k) != "accepted"),
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


def apply_filter(rows: list[DeviceHealth], flt: FleetFilter, states: dict[tuple[str, str], str],
                 progress: PeriodProgress, now: datetime) -> list[DeviceHealth]:
    out = []
    q = flt.query.strip().lower()
    for h in rows:
        if flt.offline_h is not None:
            since = h.offline_since
            if since is None or (now - since).total_seconds() < flt.offline_h * 3600:
                continue
        if flt.not_ok is not None and h.not_ok_in_row < flt.not_ok:
            continue
        if flt.stale and not h.stale:
            continue
        if flt.unbilled and (h.meter_serial is None or billing_state(h, states) == "accepted"):
            continue
        if flt.attention and not attention_reasons(h, states, progress, now):
            continue
        if q and q not in h.device_id.lower() and q not in (h.meter_serial or "").lower():
            continue
        out.append(h)
    return out
