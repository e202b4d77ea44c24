"""Fleet state for dashboards: retained `bridge/devices/{id}/state` and `bridge/fleet`.

Everything is computed from the store (so any worker, or `meter-bridge status`, gets the same answer);
the publisher only remembers which devices changed since its last publish and a digest of what it last
published on each topic, so a device whose state did not change is not published again (a sweep over 10
million devices publishes the few thousand that changed, not 10 million retained messages). Publishing is
debounced: at most every `fleet.publish_every_s`, plus a sweep every `fleet.sweep_every_s` that catches
devices going stale, and bindings, submissions and points changed by other processes, without any message.
The digests live in the process: after a restart every device's state is published once again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, func, select

from cloud_bridge.config import FleetSection, WindowSection
from cloud_bridge.device_health import DeviceHealth, device_health, fleet_summary, period_progress
from cloud_bridge.store.engine import read_only
from cloud_bridge.store.tables import devices, points_ledger, submissions, utcnow
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
BATCH = 500  # devices per query when publishing many states (bound parameters stay well under limits)


def _newest_submissions(conn: Connection, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], SubmissionView]:
    """The newest submission (latest period, then the last row: a correction) of each (payer, meter)."""
    if not pairs:
        return {}
    s = submissions.c
    serials = sorted({meter for _, meter in pairs})
    newest_period = (select(s.payer_code, s.meter_serial, func.max(s.period).label("period"))
                     .where(s.meter_serial.in_(serials)).group_by(s.payer_code, s.meter_serial).subquery())
    newest_id = (select(func.max(s.id).label("id"))
                 .join(newest_period, and_(newest_period.c.payer_code == s.payer_code,
                                           newest_period.c.meter_serial == s.meter_serial,
                                           newest_period.c.period == s.period))
                 .group_by(s.payer_code, s.meter_serial).subquery())
    rows = conn.execute(select(s.payer_code, s.meter_serial, s.period, s.state, s.value, s.reason)
                        .join(newest_id, newest_id.c.id == s.id)).all()
    return {(r.payer_code, r.meter_serial): SubmissionView(period=r.period, state=r.state, value=r.value,
                                                           reason=r.reason)
            for r in rows if (r.payer_code, r.meter_serial) in pairs}


def _newest_points(conn: Connection, payers: set[str]) -> dict[str, LoyaltyView]:
    """Each payer's points of the latest period (one row per payer and period)."""
    if not payers:
        return {}
    p = points_ledger.c
    newest = (select(p.payer_code, func.max(p.period).label("period")).where(p.payer_code.in_(sorted(payers)))
              .group_by(p.payer_code).subquery())
    rows = conn.execute(select(p.payer_code, p.period, p.points, p.credit_state)
                        .join(newest, and_(newest.c.payer_code == p.payer_code, newest.c.period == p.period))).all()
    return {r.payer_code: LoyaltyView(period=r.period, points=r.points, state=r.credit_state) for r in rows}


def device_states(conn: Connection, device_ids: Iterable[str], now: datetime,
                  fleet: FleetSection) -> list[DeviceState]:
    """What `bridge/devices/{id}/state` says for each known device among `device_ids`: its row of the
    device-state query (cloud_bridge.device_health) with the newest submission of its meter and the newest
    points of its payer, both through the binding in force. A few queries per batch, none per device."""
    out: list[DeviceState] = []
    ids = sorted(set(device_ids))
    for i in range(0, len(ids), BATCH):
        rows = device_health(conn, now, fleet, ids[i:i + BATCH])
        bound = [h for h in rows if h.payer_code is not None and h.meter_serial is not None]
        subs = _newest_submissions(conn, {(h.payer_code, h.meter_serial) for h in bound})  # type: ignore[misc]
        points = _newest_points(conn, {h.payer_code for h in bound})  # type: ignore[misc]
        out += [_state(h, subs, points, now) for h in rows]
    return out


def _state(h: DeviceHealth, subs: dict[tuple[str, str], SubmissionView], points: dict[str, LoyaltyView],
           now: datetime) -> DeviceState:
    last = None
    if h.last_seq is not None:
        assert h.last_taken_at is not None and h.last_stored_at is not None and h.last_status is not None
        last = LastReading(seq=h.last_seq, taken_at=h.last_taken_at, stored_at=h.last_stored_at, value=h.last_value,
                           status=h.last_status, reason=h.last_reason)  # type: ignore[arg-type]
    binding = None
    if h.meter_serial is not None and h.payer_code is not None:
        assert h.meter_kind is not None and h.bound_since is not None
        binding = BindingView(meter_serial=h.meter_serial, kind=h.meter_kind,  # type: ignore[arg-type]
                              payer_masked=mask_payer(h.payer_code), since=h.bound_since)
    age = (now - h.last_taken_at).total_seconds() if h.last_taken_at is not None else None
    return DeviceState(device_id=h.device_id, online=h.online, last_reading=last,
                       age_s=round(age, 1) if age is not None else None, stale=h.stale, binding=binding,
                       submission=subs.get((h.payer_code, h.meter_serial)) if binding else None,  # type: ignore[arg-type]
                       loyalty=points.get(h.payer_code) if binding else None,  # type: ignore[arg-type]
                       at=now)


def device_state(conn: Connection, device_id: str, now: datetime, fleet: FleetSection) -> DeviceState | None:
    """One device's `device_states` (None: no such device)."""
    found = device_states(conn, [device_id], now, fleet)
    return found[0] if found else None


def fleet_counts(conn: Connection, now: datetime, fleet: FleetSection, window: WindowSection) -> FleetCounts:
    """`bridge/fleet` and `meter-bridge status`: the devices in service (fleet_summary) and the current
    period's meters (period_progress): the same numbers as the metrics and the fleet page."""
    summary = fleet_summary(conn, now, fleet)
    progress = period_progress(conn, now, window)
    return FleetCounts(devices=summary.devices, online=summary.online, offline=summary.not_online,
                       stale=summary.stale, suspect_last_day=summary.suspect_last_day,
                       errors_last_day=summary.error_last_day, submitted_this_period=progress.accepted,
                       needs_attention=progress.by_state.get("needs_attention", 0),
                       corrections_this_period=progress.corrections_accepted, period=progress.period, at=now)


CLOCK_FIELDS = frozenset({"at", "age_s"})  # change with every computation: not a change of state


def state_digest(state: DeviceState) -> bytes:
    """16 bytes that change when what `bridge/devices/{id}/state` says changes, and not when only the clock
    moved (`at`, `age_s`). What the publisher keeps per device: ~100 bytes with the dict's entry instead of
    the ~500-byte payload."""
    return hashlib.blake2b(state.model_dump_json(exclude=set(CLOCK_FIELDS)).encode(), digest_size=16).digest()


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
        self._published: dict[str, bytes] = {}  # device id -> state_digest of what was published

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
                for state in device_states(conn, ids, now, self.fleet):
                    sent += self._send(state)
                if self._fleet_dirty or sweeping:  # one message: published on every sweep
                    self.publish(topics.BRIDGE_FLEET, fleet_counts(conn, now, self.fleet, self.window)
                                 .to_json_bytes(), 1, True)
                    sent += 1
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

    def _send(self, state: DeviceState) -> int:
        """Publish the device's state unless it is what was published last (clock fields aside)."""
        digest = state_digest(state)
        if self._published.get(state.device_id) == digest:
            return 0
        self.publish(topics.device_state(state.device_id), state.to_json_bytes(), 1, True)
        self._published[state.device_id] = digest
        return 1
