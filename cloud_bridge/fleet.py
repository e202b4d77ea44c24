"""Fleet state for dashboards: retained `bridge/devices/{id}/state` and `bridge/fleet`.

Everything is computed from the store (so any worker, or `meter-bridge status`, gets the same answer);
the publisher only remembers which devices changed since its last publish and what it last published
(to skip identical payloads). Publishing is debounced: at most every `fleet.publish_every_s`, plus a
sweep every `fleet.sweep_every_s` that catches devices going stale without any message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, func, or_, select

from cloud_bridge.config import FleetSection, WindowSection
from cloud_bridge.store.engine import read_only
from cloud_bridge.store.tables import (
    bindings,
    device_status,
    devices,
    meters,
    points_ledger,
    readings,
    submissions,
    utcnow,
)
from contract import topics
from contract.payloads import (
    BindingView,
    DeviceState,
    FleetCounts,
    LastReading,
    LoyaltyView,
    SubmissionView,
    mask_payer,
)

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int, bool], None]


def stale_after(cfg: FleetSection) -> timedelta:
    return timedelta(seconds=cfg.device_interval_s * cfg.stale_factor)


def current_period(now: datetime, window: WindowSection) -> str:
    """The billing period being collected now: the one whose submission window is open, else this month."""
    from cloud_bridge.submission.periods import Period, WindowRule

    rule = WindowRule(window.start_day, window.end_day, window.timezone)
    period = rule.open_period(now) or Period.of(now, rule.tz)
    return str(period)


def device_state(conn: Connection, device_id: str, now: datetime, fleet: FleetSection) -> DeviceState | None:
    dev = conn.execute(select(devices.c.created_at, device_status.c.online)
                       .outerjoin(device_status, device_status.c.device_id == devices.c.device_id)
                       .where(devices.c.device_id == device_id)).first()
    if dev is None:
        return None
    last = conn.execute(select(readings.c.seq, readings.c.taken_at, readings.c.stored_at, readings.c.value,
                               readings.c.status, readings.c.reason)
                        .where(readings.c.device_id == device_id)
                        .order_by(readings.c.taken_at.desc(), readings.c.id.desc()).limit(1)).first()
    last_reading = LastReading(seq=last.seq, taken_at=last.taken_at, stored_at=last.stored_at, value=last.value,
                               status=last.status, reason=last.reason) if last else None
    age = (now - last.taken_at).total_seconds() if last else None
    since = last.taken_at if last else dev.created_at
    stale = now - since > stale_after(fleet)
    b = conn.execute(select(bindings.c.meter_serial, meters.c.kind, bindings.c.payer_code, bindings.c.valid_from)
                     .join(meters, meters.c.serial == bindings.c.meter_serial)
                     .where(and_(bindings.c.device_id == device_id, bindings.c.valid_to.is_(None)))).first()
    binding = submission = loyalty = None
    if b is not None:
        binding = BindingView(meter_serial=b.meter_serial, kind=b.kind, payer_masked=mask_payer(b.payer_code),
                              since=b.valid_from)
        s = conn.execute(select(submissions.c.period, submissions.c.state, submissions.c.value, submissions.c.reason)
                         .where(and_(submissions.c.meter_serial == b.meter_serial,
                                     submissions.c.payer_code == b.payer_code))
                         .order_by(submissions.c.period.desc(), submissions.c.id.desc()).limit(1)).first()
        if s is not None:
            submission = SubmissionView(period=s.period, state=s.state, value=s.value, reason=s.reason)
        p = conn.execute(select(points_ledger.c.period, points_ledger.c.points, points_ledger.c.credit_state)
                         .where(points_ledger.c.payer_code == b.payer_code)
                         .order_by(points_ledger.c.period.desc()).limit(1)).first()
        if p is not None:
            loyalty = LoyaltyView(period=p.period, points=p.points, state=p.credit_state)
    return DeviceState(device_id=device_id, online=dev.online, last_reading=last_reading,
                       age_s=round(age, 1) if age is not None else None, stale=stale, binding=binding,
                       submission=submission, loyalty=loyalty, at=now)


def fleet_counts(conn: Connection, now: datetime, fleet: FleetSection, window: WindowSection) -> FleetCounts:
    active = devices.c.retired_at.is_(None)  # a retired device is history, not fleet
    n_devices = conn.execute(select(func.count()).select_from(devices).where(active)).scalar_one()
    online = conn.execute(select(func.count()).select_from(device_status)
                          .where(device_status.c.online.is_(True))).scalar_one()
    cutoff = now - stale_after(fleet)
    last = (select(readings.c.device_id, func.max(readings.c.taken_at).label("last"))
            .group_by(readings.c.device_id).subquery())
    stale = conn.execute(
        select(func.count()).select_from(devices.outerjoin(last, last.c.device_id == devices.c.device_id))
        .where(and_(active, or_(last.c.last < cutoff,
                                and_(last.c.last.is_(None), devices.c.created_at < cutoff))))).scalar_one()
    day_ago = now - timedelta(days=1)

    def devices_with(status: str) -> int:
        return int(conn.execute(select(func.count(func.distinct(readings.c.device_id)))
                                .where(and_(readings.c.status == status, readings.c.taken_at >= day_ago)))
                   .scalar_one())

    period = current_period(now, window)
    in_period = submissions.c.period == period
    correction = submissions.c.idempotency_key.like("%:c%")  # `payer:meter:period:c<id>` (passes.py)

    def meters_in(state: str) -> int:
        # A meter counts once however many rows it has (a resident's correction is a second row).
        pairs = (select(submissions.c.payer_code, submissions.c.meter_serial)
                 .where(and_(in_period, submissions.c.state == state)).distinct().subquery())
        return int(conn.execute(select(func.count()).select_from(pairs)).scalar_one())

    corrections_sent = conn.execute(select(func.count()).where(and_(
        in_period, correction, submissions.c.state == "accepted"))).scalar_one()
    return FleetCounts(devices=n_devices, online=online, offline=n_devices - online, stale=stale,
                       suspect_last_day=devices_with("suspect"), errors_last_day=devices_with("error"),
                       submitted_this_period=meters_in("accepted"), needs_attention=meters_in("needs_attention"),
                       corrections_this_period=int(corrections_sent), period=period, at=now)


def _without_clock(payload: bytes) -> bytes:
    # `at` and `age_s` change every time; do not republish a state only because the clock moved.
    import json

    d = json.loads(payload)
    d.pop("at", None)
    d.pop("age_s", None)
    return json.dumps(d, sort_keys=True).encode()


class FleetPublisher:
    """Publishes the state of devices marked as changed, at most every `publish_every_s`."""

    def __init__(self, engine: Engine, publish: Publish, fleet: FleetSection, window: WindowSection, *,
                 sweep: bool = False, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.publish = publish
        self.fleet = fleet
        self.window = window
        self.sweep = sweep
        self.clock = clock
        self._dirty: set[str] = set()
        self._fleet_dirty = True
        self._last_publish = 0.0
        self._last_sweep = 0.0 if sweep else float("inf")
        self._published: dict[str, bytes] = {}

    def mark(self, device_ids: Iterable[str]) -> None:
        for d in device_ids:
            self._dirty.add(d)
            self._fleet_dirty = True

    def tick(self, *, force: bool = False) -> int:
        """Publish what is due; returns how many topics were published."""
        mono = time.monotonic()
        sweeping = self.sweep and (force or mono - self._last_sweep >= self.fleet.sweep_every_s)
        if not sweeping and not force and (mono - self._last_publish < self.fleet.publish_every_s
                                           or not (self._dirty or self._fleet_dirty)):
            return 0
        now = self.clock()
        sent = 0
        try:
            with read_only(self.engine) as conn:
                ids = set(self._dirty)
                if sweeping:
                    ids |= set(conn.execute(select(devices.c.device_id)
                                            .where(devices.c.retired_at.is_(None))).scalars())
                for device_id in sorted(ids):
                    state = device_state(conn, device_id, now, self.fleet)
                    if state is not None:
                        sent += self._send(topics.device_state(device_id), state.to_json_bytes())
                if self._fleet_dirty or sweeping:
                    sent += self._send(topics.BRIDGE_FLEET, fleet_counts(conn, now, self.fleet, self.window)
                                       .to_json_bytes(), dedupe=False)
                conn.rollback()
        except Exception:  # a dashboard must never stop ingest; try again on the next tick
            log.exception("fleet state not published")
            self._last_publish = mono
            return sent
        self._dirty.clear()
        self._fleet_dirty = False
        self._last_publish = mono
        if sweeping:
            self._last_sweep = mono
        return sent

    def _send(self, topic: str, payload: bytes, *, dedupe: bool = True) -> int:
        key = _without_clock(payload)
        if dedupe and self._published.get(topic) == key:
            return 0
        self.publish(topic, payload, 1, True)
        self._published[topic] = key
        return 1
