"""One device-state query: the retained device state, `devices list` / the fleet page (device_health),
`bridge/fleet` and `meter-bridge status` (fleet_counts) and the metrics all say the same about every
device, on SQLite and PostgreSQL, across unbind, retire and replace and readings that arrive out of order.

Before there was one query, two copies disagreed: the device-state helpers showed an unbound device's
old meter and its submission (latest binding) while the fleet topic showed none (binding in force); the
retained state took the newest reading by taken_at and the fleet page the last stored; and the fleet
counts took every retained `online` (retired and unknown devices too) while the metrics did not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge_helpers import register
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from cloud_bridge import registry
from cloud_bridge.config import BridgeConfig
from cloud_bridge.device_health import current_period, device_health, fleet_summary
from cloud_bridge.fleet import device_state, device_states, fleet_counts
from cloud_bridge.health import collect
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle_batch
from cloud_bridge.loyalty import append_points
from cloud_bridge.metrics import StoreCollector
from cloud_bridge.store.tables import submissions
from contract.payloads import Reading


def _r(device_id: str, seq: int, at: datetime, value: str | None, status: str = "ok") -> Message:
    r = Reading(device_id=device_id, seq=seq, taken_at=at, value=value, status=status,  # type: ignore[arg-type]
                reason=None if status == "ok" else "low_confidence", confidence=0.9)
    return Message(f"meters/{device_id}/reading", r.to_json_bytes())


def _world(engine: Engine, now: datetime, period: str) -> None:
    # Payers 1000000000 … (bridge_helpers.register): meters SN-<device>.
    register(engine, ["old", "new", "loose", "late", "quiet"])
    register(engine, ["never-bound"], bind=False)
    hour = timedelta(hours=1)  # stale after 2 h (the default fleet section): nothing near that edge
    with engine.begin() as conn:
        handle_batch(conn, [_r("old", 1, now - 3 * hour, "00010.000"), _r("loose", 1, now - 1.5 * hour, "00020.000"),
                            # `late`: seq 2 (taken later) is stored before seq 1 (a redelivery out of order)
                            _r("late", 2, now - hour, "00031.000", "suspect"),
                            _r("quiet", 1, now - timedelta(days=3), "00040.000")], now - hour)
        handle_batch(conn, [_r("late", 1, now - 1.5 * hour, "00030.000"),
                            Message("meters/old/status", b"online"), Message("meters/new/status", b"online"),
                            Message("meters/quiet/status", b"offline")], now - hour)
        for payer, meter, state in (("1000000000", "SN-old", "accepted"), ("1000000002", "SN-loose", "refused")):
            row = conn.execute(submissions.insert().values(
                idempotency_key=f"{payer}:{meter}:{period}", payer_code=payer, meter_serial=meter, period=period,
                state=state, value="00010.000", created_at=now, updated_at=now)).inserted_primary_key
            if state == "accepted":
                assert append_points(conn, row[0], 10, now)
        # `old` gets a new Pi: it is retired (its status stays `online`, retained), `new` serves its meter
        # and payer; `loose` is unbound, its meter and payer keep their history.
        registry.unbind(conn, "new", now=now - timedelta(minutes=30))  # free it for the replacement
        registry.replace(conn, "old", "new", now=now - timedelta(minutes=20))
        registry.unbind(conn, "loose", now=now - timedelta(minutes=10))


def test_every_reader_of_device_state_agrees(engine: Engine) -> None:
    cfg = BridgeConfig()
    now = datetime.now(UTC)
    period = current_period(now, cfg.window)
    _world(engine, now, period)
    with engine.connect() as conn:
        health = {h.device_id: h for h in device_health(conn, now, cfg.fleet)}
        states = {s.device_id: s for s in device_states(conn, [*health, "no-such-device"], now, cfg.fleet)}
        counts = fleet_counts(conn, now, cfg.fleet, cfg.window)
        summary = fleet_summary(conn, now, cfg.fleet)
        status = collect(conn, cfg, now)
        assert device_state(conn, "no-such-device", now, cfg.fleet) is None

    assert set(states) == set(health) == {"old", "new", "loose", "late", "quiet", "never-bound"}
    # The binding in force, nothing older: the replaced and the unbound device serve no meter and no payer.
    assert states["old"].binding is None and states["old"].submission is None and states["old"].loyalty is None
    assert states["loose"].binding is None and states["loose"].submission is None
    new = states["new"]
    assert new.binding is not None and new.binding.meter_serial == "SN-old"
    assert new.submission is not None and (new.submission.period, new.submission.state) == (period, "accepted")
    assert new.loyalty is not None and new.loyalty.points == 10
    # The newest reading taken is the last one, whatever order the store got them in.
    late = states["late"].last_reading
    assert late is not None and (late.seq, late.status) == (2, "suspect") and health["late"].last_seq == 2
    assert health["late"].not_ok_in_row == 1
    # A retired device is never stale; one silent for three days is.
    assert not states["old"].stale and not health["old"].stale and states["quiet"].stale

    for device_id, h in health.items():  # the retained state and the health row are the same row
        s = states[device_id]
        assert (s.online, s.stale) == (h.online, h.stale), device_id
        assert (s.binding.meter_serial if s.binding else None) == h.meter_serial, device_id
        assert (s.last_reading.seq if s.last_reading else None) == h.last_seq, device_id
        assert (s.last_reading.taken_at if s.last_reading else None) == h.last_taken_at, device_id

    in_service = [h for h in health.values() if h.retired_at is None]
    assert [h.device_id for h in health.values() if h.retired_at] == ["old"]
    online = sum(1 for h in in_service if h.online is True)
    assert online == 1  # `new`: not the retired `old`, whose retained status still says online
    assert (counts.devices, counts.online, counts.offline, counts.stale) == (
        len(in_service), online, len(in_service) - online, sum(1 for h in in_service if h.stale))
    assert (summary.devices, summary.online, summary.stale, summary.unbound) == (
        len(in_service), online, counts.stale, sum(1 for h in in_service if h.meter_serial is None))
    assert summary.offline == sum(1 for h in in_service if h.online is False) == 1
    assert counts.suspect_last_day == 1 and counts.submitted_this_period == 1
    assert status["fleet"] == counts.model_dump(mode="json") | {"at": status["fleet"]["at"]}

    reg = CollectorRegistry()
    reg.register(StoreCollector(engine, cfg))
    got = {s.name: s.value for f in text_string_to_metric_families(generate_latest(reg).decode())
           for s in f.samples if not s.labels}
    assert got["meterfleet_devices"] == counts.devices
    assert got["meterfleet_devices_online"] == counts.online
    assert got["meterfleet_devices_offline"] == summary.offline
    assert got["meterfleet_devices_stale"] == counts.stale
    assert got["meterfleet_devices_unbound"] == summary.unbound
    assert got["meterfleet_devices_suspect_last_day"] == counts.suspect_last_day
