"""A resident's notifications, as data the utility can send on (SMS, e-mail, push): derived from the
store each time, so nothing is kept twice and nothing drifts.

Kinds: `billed` (billing accepted a meter's value for a period), `points` (points credited),
`offline` (a device has not been heard from for a day), `attention` (the window is open, closes within
ATTENTION_DAYS, and a meter has no value sure enough to bill yet), `correction` (what became of a
correction). Each event has a stable `id`, so a sender can remember what it already sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from cloud_bridge.device_health import device_health
from cloud_bridge.store.tables import bindings, points_ledger, submissions
from cloud_bridge.web.portal import payer_view
from contract.payloads import format_utc

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig

OFFLINE_AFTER = timedelta(days=1)
ATTENTION_DAYS = 3
FEED_DAYS = 90


@dataclass
class Event:
    id: str
    kind: str  # billed / points / offline / attention / correction
    at: datetime
    payer_code: str
    meter_serial: str | None = None
    device_id: str | None = None
    period: str | None = None
    value: str | None = None
    points: int | None = None
    state: str | None = None
    until: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "at": format_utc(self.at), "payer_code": self.payer_code,
                "meter_serial": self.meter_serial, "device_id": self.device_id, "period": self.period,
                "value": self.value, "points": self.points, "state": self.state,
                "until": format_utc(self.until) if self.until else None}


def payer_events(conn: Connection, config: BridgeConfig, payer_code: str, now: datetime) -> list[Event]:
    """Events of one payer code, newest first (the last FEED_DAYS days, plus what is true now)."""
    since = now - timedelta(days=FEED_DAYS)
    out: list[Event] = []
    for s in conn.execute(select(submissions).where(
            submissions.c.payer_code == payer_code, submissions.c.state == "accepted",
            submissions.c.updated_at >= since)):
        out.append(Event(f"billed:{s.id}", "billed", s.updated_at, payer_code, s.meter_serial, period=s.period,
                         value=s.value))
    for p in conn.execute(select(points_ledger).where(
            points_ledger.c.payer_code == payer_code, points_ledger.c.credit_state == "credited",
            points_ledger.c.updated_at >= since)):
        out.append(Event(f"points:{p.id}", "points", p.updated_at, payer_code, period=p.period, points=p.points))
    # Devices in force for this payer not heard from for a day: offline (retained status) since then, or,
    # with no status, no reading since then.
    mine = conn.execute(select(bindings.c.device_id).where(  # a meter read from photos has no device to go offline
        bindings.c.payer_code == payer_code, bindings.c.valid_to.is_(None), bindings.c.device_id.is_not(None)))
    for d in device_health(conn, now, config.fleet, mine.scalars()):
        if d.online is True:
            continue
        heard = max(t for t in (d.last_taken_at, d.bound_since, d.online_changed_at) if t is not None)
        if now - heard >= OFFLINE_AFTER:
            out.append(Event(f"offline:{d.device_id}:{format_utc(heard)}", "offline", heard + OFFLINE_AFTER,
                             payer_code, d.meter_serial, device_id=d.device_id, data={"since": format_utc(heard)}))
    view = payer_view(conn, config, payer_code, now)
    w = view.window
    warn_from = max(w.opens_at, w.closes_at - timedelta(days=ATTENTION_DAYS))
    if w.is_open and now >= warn_from:
        for m in view.meters:
            if m.needs_attention:
                out.append(Event(f"attention:{payer_code}:{m.serial}:{w.period}", "attention", warn_from, payer_code,
                                 m.serial, device_id=m.device_id, period=w.period, until=w.closes_at,
                                 data={"read_from": "device" if m.device_id else "photo"}))
    for c in view.corrections:
        if c.created_at >= since:
            state = c.submission_state or ("kept" if c.counts else c.state)
            out.append(Event(f"correction:{c.id}:{state}", "correction", c.created_at, payer_code, c.meter_serial,
                             value=c.value, state=c.submission_state,
                             data={"reading_id": c.reading_id, "check": c.state}))
    out.sort(key=lambda e: (e.at, e.id), reverse=True)
    return out
