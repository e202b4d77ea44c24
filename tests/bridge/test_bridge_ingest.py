"""Ingest against a real Mosquitto and both databases: exactly once, duplicates, refusals, attribution."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bridge_helpers import Device, InProcessBridge, config, reading, register, wait_until
from sqlalchemy import Engine, func, select

from cloud_bridge import registry
from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.store.tables import bindings, counters, device_status, readings, refusals
from contract.payloads import DeviceState, FleetCounts, format_utc

pytestmark = pytest.mark.mosquitto


def count(engine: Engine, table: object, *where: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


def test_2000_readings_50_devices_every_tenth_twice(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                    tmp_path: Path) -> None:
    devices = [f"sim-{i:02d}" for i in range(50)]
    register(engine, devices)
    cfg = config(db_url, broker.port, tmp_path)
    dev = Device(broker.port)
    with InProcessBridge(engine, cfg):
        for n in range(2000):
            r = reading(devices[n % 50], n // 50, f"{n:05d}.000")
            dev.publish_reading(r)
            if n % 10 == 9:
                dev.publish_reading(r)
        assert wait_until(lambda: len(dev.acks) >= 2200, timeout=60), dev.acks_by_state()
    assert count(engine, readings) == 2000
    assert dev.acks_by_state() == {"stored": 2000, "duplicate": 200}
    with engine.connect() as conn:
        rows = conn.execute(select(readings.c.device_id, readings.c.seq, readings.c.value)).all()
        received = conn.execute(select(func.sum(counters.c.value)).where(counters.c.name == "received")).scalar()
    expected = {(devices[n % 50], n // 50, f"{n:05d}.000") for n in range(2000)}
    assert set(rows) == expected  # 0 lost, each exactly once, values exact
    assert received == 2200
    dev.close()


def test_refusals_are_recorded_answered_and_dead_lettered(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                          tmp_path: Path) -> None:
    register(engine, ["known"])
    register(engine, ["unbound"], bind=False)
    cfg = config(db_url, broker.port, tmp_path)
    dev = Device(broker.port)
    with InProcessBridge(engine, cfg) as bridge:
        dev.publish_reading(reading("stranger", 1))
        dev.publish_reading(reading("unbound", 2))
        dev.publish("meters/known/reading", reading("other", 3).to_json_bytes())
        dev.publish("meters/known/reading", b"{not json")
        dev.publish("meters/known/reading", json.dumps({"v": 2, "seq": 4}).encode())
        dev.publish("meters/known/reading", b"x" * (16 * 1024 + 1))
        assert wait_until(lambda: len(dev.on_topic("bridge/deadletter")) >= 6)
        assert bridge.alive
    with engine.connect() as conn:
        got = sorted(conn.execute(select(refusals.c.device_id, refusals.c.reason)).all(), key=str)
    assert got == sorted([("stranger", "unknown_device"), ("unbound", "unbound_device"),
                          ("known", "device_id_mismatch"), ("known", "bad_json"), ("known", "unknown_version"),
                          ("known", "oversized")], key=str)
    assert count(engine, readings) == 0
    rejected = [a for a in dev.acks if a["state"] == "rejected"]
    assert {(a["device_id"], a["reason"]) for a in rejected} >= {("unbound", "unbound_device"),
                                                                 ("known", "device_id_mismatch")}
    letters = [json.loads(p) for p in dev.on_topic("bridge/deadletter")]
    assert {ltr["reason"] for ltr in letters} == {r for _, r in got}
    # Never a payer code on the dead letter topic (payer codes of registered devices start with 1000000000).
    assert all("100000000" not in p.decode() for p in dev.on_topic("bridge/deadletter"))
    dev.close()


def test_a_reading_dated_ahead_of_the_bridge_clock_is_refused_kept_answered_and_dead_lettered(
        broker: MosquittoBroker, engine: Engine, db_url: str, tmp_path: Path) -> None:
    """A device whose clock runs ahead: its reading could be billed in a later period. Past
    ingest.max_clock_skew_s it is refused as future_time, its payload kept; inside it, stored."""
    register(engine, ["fast"])
    cfg = config(db_url, broker.port, tmp_path, ingest={"max_clock_skew_s": 120})
    dev = Device(broker.port)
    now = datetime.now(UTC)
    ahead = reading("fast", 1, "00001.000", taken_at=format_utc(now + timedelta(minutes=10)))
    with InProcessBridge(engine, cfg) as bridge:
        dev.publish_reading(ahead)
        dev.publish_reading(reading("fast", 2, "00001.100", taken_at=format_utc(now + timedelta(seconds=60))))
        dev.publish_reading(reading("fast", 3, "00001.200", taken_at="2026-10-01T00:00:00Z"))  # old: fine
        assert wait_until(lambda: len(dev.acks) == 3 and len(dev.on_topic("bridge/deadletter")) == 1)
        assert bridge.alive
    by_seq = {a["seq"]: a for a in dev.acks}
    assert by_seq[1]["state"] == "rejected" and by_seq[1]["reason"] == "future_time", by_seq[1]
    assert by_seq[2]["state"] == "stored" and by_seq[3]["state"] == "stored"
    with engine.connect() as conn:
        stored = {r.seq for r in conn.execute(select(readings.c.seq)).all()}
        refused = conn.execute(select(refusals)).one()
    assert stored == {2, 3}
    assert (refused.device_id, refused.seq, refused.reason) == ("fast", 1, "future_time")
    assert bytes(refused.payload) == ahead.to_json_bytes()  # kept for replay: nothing lost
    assert "ahead of the bridge's clock" in refused.detail and "max_clock_skew_s = 120" in refused.detail
    [letter] = [json.loads(p) for p in dev.on_topic("bridge/deadletter")]
    assert (letter["reason"], letter["device_id"], letter["seq"]) == ("future_time", "fast", 1)
    dev.close()


def test_max_clock_skew_is_checked_when_the_config_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cloud_bridge.config import BridgeConfig, ConfigError, load_bridge_config

    assert BridgeConfig().ingest.max_clock_skew_s == 300
    toml = tmp_path / "bridge.toml"
    toml.write_text("[ingest]\nmax_clock_skew_s = 30\n")
    assert load_bridge_config(toml).ingest.max_clock_skew_s == 30
    monkeypatch.setenv("BRIDGE_INGEST__MAX_CLOCK_SKEW_S", "-5")
    with pytest.raises(ConfigError, match="max_clock_skew_s"):
        load_bridge_config(toml)


def test_binding_in_force_at_store_time_and_old_readings_kept(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                              tmp_path: Path) -> None:
    register(engine, ["dev-a"])
    cfg = config(db_url, broker.port, tmp_path)
    dev = Device(broker.port)
    with InProcessBridge(engine, cfg):
        # taken a month ago (the device was offline): stored, never refused for its age
        dev.publish_reading(reading("dev-a", 1, "00001.000", taken_at="2026-10-01T00:00:00Z"))
        assert wait_until(lambda: len(dev.acks) == 1)
        with engine.begin() as conn:
            old, new = registry.rebind(conn, "dev-a", meter_serial="SN-new", kind="hot", payer_code="5555555555",
                                       address="New flat")
        dev.publish_reading(reading("dev-a", 2, "00002.000", taken_at="2026-09-01T00:00:00Z"))
        assert wait_until(lambda: len(dev.acks) == 2)
    assert [a["state"] for a in dev.acks] == ["stored", "stored"]
    with engine.connect() as conn:
        by_seq = dict(conn.execute(select(readings.c.seq, readings.c.binding_id)).all())
        history = conn.execute(select(bindings.c.id, bindings.c.valid_to).order_by(bindings.c.id)).all()
    assert by_seq == {1: old.id, 2: new.id}
    assert history[0].valid_to is not None and history[1].valid_to is None
    dev.close()


def test_status_and_fleet_state_are_retained_and_masked(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                        tmp_path: Path) -> None:
    register(engine, ["dev-s", "dev-quiet"])
    cfg = config(db_url, broker.port, tmp_path)
    dev = Device(broker.port, subscribe=("meters/+/ack",))
    dev.publish("meters/dev-s/status", b"online", retain=True)
    with InProcessBridge(engine, cfg):
        dev.publish_reading(reading("dev-s", 7, "00123.456"))
        # the newest; inside ingest.max_clock_skew_s (an hour ahead is refused as future_time)
        soon = format_utc(datetime.now(UTC) + timedelta(seconds=60))
        dev.publish_reading(reading("dev-s", 8, status="suspect", taken_at=soon))
        assert wait_until(lambda: len(dev.acks) == 2)
        assert wait_until(lambda: count(engine, device_status, device_status.c.online.is_(True)) == 1)
        # A dashboard connecting later gets the retained state.
        late = Device(broker.port, subscribe=("bridge/#",))
        assert wait_until(lambda: any(json.loads(p).get("last_reading", {}) and json.loads(p)["last_reading"]["seq"]
                                      == 8 for p in late.on_topic("bridge/devices/dev-s/state")), timeout=10)
        assert wait_until(lambda: any(json.loads(p)["online"] == 1 for p in late.on_topic("bridge/fleet")))
    state = DeviceState.model_validate_json(late.on_topic("bridge/devices/dev-s/state")[-1])
    assert state.online is True and state.binding is not None
    assert state.binding.payer_masked == "******0000"
    assert state.last_reading is not None and state.last_reading.status == "suspect"
    fleet = FleetCounts.model_validate_json(late.on_topic("bridge/fleet")[-1])
    assert fleet.devices == 2 and fleet.online == 1 and fleet.suspect_last_day == 1
    assert all(b"1000000000" not in p for t, p, _ in late.messages)  # payer codes never leave the bridge
    late.close()
    dev.close()


def test_bridge_reconnects_and_resubscribes_after_a_broker_restart(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                    tmp_path: Path) -> None:
    register(engine, ["rs"])
    cfg = config(db_url, broker.port, tmp_path)
    with InProcessBridge(engine, cfg) as bridge:
        dev = Device(broker.port)
        for seq in range(100):
            dev.publish_reading(reading("rs", seq))
        assert wait_until(lambda: count(engine, readings) == 100)
        dev.close()
        broker.restart()  # SIGTERM: Mosquitto saves sessions; the bridge reconnects and subscribes again
        # Mosquitto 2.0 does not restore *shared* subscriptions from its persistence file: what is published
        # before the bridge is back has no subscriber (devices republish unacknowledged readings for that).
        assert wait_until(lambda: bridge.source.connects >= 2, timeout=30)
        time.sleep(0.3)
        dev = Device(broker.port)
        for seq in range(100, 200):
            dev.publish_reading(reading("rs", seq))
        assert wait_until(lambda: count(engine, readings) == 200, timeout=30)
        assert bridge.alive and bridge.source.connects >= 2
        dev.close()
