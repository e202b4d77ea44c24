"""The fleet sweep publishes a device's retained state only when it changed since the last publish: through
a real Mosquitto, an unchanged device is not published again (not even when only its age moved), a
changed one is, and a new publisher (a bridge restart) publishes every device once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from bridge_helpers import register
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.config import BridgeConfig
from cloud_bridge.fleet import FleetPublisher
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle_batch
from contract.payloads import DeviceState, Reading

pytestmark = pytest.mark.mosquitto
NOW = datetime.now(UTC).replace(microsecond=0)  # devices are added at the real time: stale counts from it
DONE = "test/sweep-done"


def _reading(device_id: str, seq: int, at: datetime) -> Message:
    r = Reading(device_id=device_id, seq=seq, taken_at=at, value=f"{10 + seq:09.3f}", status="ok", confidence=0.9)
    return Message(f"meters/{device_id}/reading", r.to_json_bytes())


class Watcher:
    """Subscribes to every device state; `sweep()` runs one publisher tick and returns what arrived."""

    def __init__(self, port: int) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.done = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([("bridge/devices/+/state", 1), (DONE, 1)])
        assert subscribed.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == DONE:
            self.done.set()
        else:
            self.got.append((msg.topic, bytes(msg.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Bridge:
    """The publisher's side: a paho client that publishes QoS 1, then a marker, on the same connection
    (so the marker arrives after everything the sweep published)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_sweep_publishes_only_changed_devices(engine: Engine, broker: MosquittoBroker) -> None:
    register(engine, ["p-same", "p-new", "p-gone"])
    with engine.begin() as conn:
        handle_batch(conn, [_reading("p-same", 1, NOW - timedelta(minutes=30)),
                            _reading("p-new", 1, NOW - timedelta(minutes=30))], NOW)
    cfg = BridgeConfig()
    clock = [NOW]
    watcher, bridge = Watcher(broker.port), Bridge(broker.port)
    try:
        def sweep(publisher: FleetPublisher) -> dict[str, DeviceState]:
            watcher.got.clear()
            watcher.done.clear()
            publisher.tick(force=True)
            bridge.publish(DONE, b"", 1, False)
            assert watcher.done.wait(10)
            return {t.split("/")[2]: DeviceState.model_validate_json(p) for t, p in watcher.got}

        publisher = FleetPublisher(engine, bridge.publish, cfg.fleet, cfg.window, sweep=True, clock=lambda: clock[0])
        first = sweep(publisher)
        assert set(first) == {"p-same", "p-new", "p-gone"}  # the first sweep publishes every device
        assert first["p-same"].age_s == 1800.0

        clock[0] = NOW + timedelta(minutes=10)  # only the clock moved: age_s differs, nothing else
        assert sweep(publisher) == {}

        clock[0] = NOW + timedelta(hours=1)
        with engine.begin() as conn:  # p-new reads again: only it changed
            handle_batch(conn, [_reading("p-new", 2, NOW + timedelta(minutes=55))], clock[0])
        second = sweep(publisher)
        assert set(second) == {"p-new"}
        assert second["p-new"].last_reading is not None and second["p-new"].last_reading.seq == 2

        # p-gone (never read) and p-same go stale (2 h without a reading): a change without any message
        clock[0] = NOW + timedelta(hours=2, minutes=15)
        third = sweep(publisher)
        assert set(third) == {"p-same", "p-gone"} and all(s.stale for s in third.values())

        restarted = FleetPublisher(engine, bridge.publish, cfg.fleet, cfg.window, sweep=True,
                                   clock=lambda: clock[0])
        assert set(sweep(restarted)) == {"p-same", "p-new", "p-gone"}  # after a restart: all, once
        assert sweep(restarted) == {}
    finally:
        watcher.close()
        bridge.close()
