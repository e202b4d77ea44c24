"""Issue 17 item 2: `devices unbind|retire|replace` through the real CLI, with a real Mosquitto: a retired
device is cut off at once and its retained topics (status, telemetry, state, HA discovery) are cleared,
its readings stay; a replacement Pi carries on the meter's binding and history."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from bridge_helpers import reading
from click.testing import CliRunner, Result

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.cli import main
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle
from cloud_bridge.store.engine import open_store
from cloud_bridge.store.tables import utcnow

pytestmark = pytest.mark.mosquitto

HA_CONFIGS = ["homeassistant/sensor/pi-old/water/config", "homeassistant/binary_sensor/pi-old/problem/config",
              "homeassistant/button/pi-old/capture/config"]


@pytest.fixture
def cli(db_url: str, auth_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for k in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(k, raising=False)
    env = {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_MQTT__PORT": str(auth_broker.port),
           "BRIDGE_BROKER__ADMIN_PASSWORD_FILE": str(auth_broker.admin_password_file)}

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env)

    assert run("db", "upgrade").exit_code == 0
    run.broker = auth_broker  # type: ignore[attr-defined]
    run.db_url = db_url  # type: ignore[attr-defined]
    return run


class Device:
    """A device on the broker with its own account, a last will, and its retained topics published."""

    def __init__(self, port: int, device_id: str, password: str) -> None:
        self.disconnected = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(device_id, password)
        self.c.will_set(f"meters/{device_id}/status", b"offline", qos=1, retain=True)
        self.c.reconnect_delay_set(30, 60)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        for topic, payload in [(f"meters/{device_id}/status", b"online"), (f"meters/{device_id}/telemetry", b"{}"),
                               (f"meters/{device_id}/state", b'{"value": "00012.345"}'),
                               *[(t.replace("pi-old", device_id), b'{"name": null}') for t in HA_CONFIGS]]:
            self.c.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def retained(port: int, password: str) -> dict[str, bytes]:
    """What a fresh operator subscription gets as retained messages."""
    got: dict[str, bytes] = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="op", protocol=mqtt.MQTTv5)
    c.username_pw_set("op", password)
    c.on_message = lambda _c, _u, m: got.__setitem__(m.topic, bytes(m.payload)) if m.retain else None
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([("meters/#", 1), ("homeassistant/#", 1), ("bridge/#", 1)])
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(0.8)
    c.disconnect()
    c.loop_stop()
    return got


def _add(cli: Any, device_id: str) -> str:
    r = cli("devices", "add", device_id, "--json")
    assert r.exit_code == 0, r.output
    return str(json.loads(r.output)["password"])


def _store_readings(db_url: str, device_id: str, seqs: range) -> None:
    engine = open_store(db_url, create=False)
    with engine.begin() as conn:
        for seq in seqs:
            r = reading(device_id, seq, f"{12 + seq:05d}.000")
            handle(conn, Message(f"meters/{device_id}/reading", r.to_json_bytes()), utcnow())
    engine.dispose()


def test_retire_revokes_clears_retained_and_keeps_history(cli: Any) -> None:
    port = cli.broker.port
    op_pw = cli.broker.add_account("op", "operator")
    pw = _add(cli, "pi-old")
    other_pw = _add(cli, "pi-other")
    assert cli("bind", "pi-old", "--meter", "SN-1", "--kind", "cold", "--payer", "0123456789",
               "--address", "Flat 1").exit_code == 0
    _store_readings(cli.db_url, "pi-old", range(1, 4))
    dev, other = Device(port, "pi-old", pw), Device(port, "pi-other", other_pw)
    bridge_pw = cli.broker.add_account("bridge", "bridge")  # the bridge's retained dashboard state of it
    b = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bridge-0", protocol=mqtt.MQTTv5)
    b.username_pw_set("bridge", bridge_pw)
    b.connect("127.0.0.1", port)
    b.loop_start()
    b.publish("bridge/devices/pi-old/state", b"{}", qos=1, retain=True).wait_for_publish(5)
    b.disconnect()
    b.loop_stop()
    before = retained(port, op_pw)
    assert set(HA_CONFIGS) <= set(before) and "meters/pi-old/state" in before
    assert "bridge/devices/pi-old/state" in before

    r = cli("devices", "retire", "pi-old", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["closed"]["meter_serial"] == "SN-1" and set(HA_CONFIGS) <= set(out["cleared"])
    assert dev.disconnected.wait(5), "the retired device stayed connected"
    dev.close()
    after = retained(port, op_pw)
    assert not [t for t in after if "/pi-old/" in t], f"left behind: {[t for t in after if '/pi-old/' in t]}"
    assert "meters/pi-other/state" in after and "homeassistant/sensor/pi-other/water/config" in after
    other.close()
    # cannot log in again
    again = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pi-old", protocol=mqtt.MQTTv5)
    again.username_pw_set("pi-old", pw)
    codes: list[Any] = []
    again.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc)
    again.connect("127.0.0.1", port)
    for _ in range(40):
        again.loop(0.05)
        if codes:
            break
    assert codes and codes[0].is_failure
    # history kept
    shown = json.loads(cli("devices", "show", "pi-old", "--json").output)["bindings"]
    assert [b["meter_serial"] for b in shown] == ["SN-1"] and shown[0]["valid_to"] is not None
    hist = json.loads(cli("history", "--payer", "0123456789", "--json").output)
    assert len([r for r in hist["readings"] if r.get("device_id", "pi-old") == "pi-old"]) == 3
    # refused afterwards, with what to do
    for args, message in ((("devices", "retire", "pi-old"), "retired already"),
                          (("bind", "pi-old", "--meter", "SN-9", "--kind", "cold", "--payer", "0123456789"), "retired"),
                          (("devices", "retire", "ghost"), "unknown device")):
        r = cli(*args)
        assert r.exit_code == 1 and message in r.output, r.output


def test_replace_keeps_the_meters_binding_and_history(cli: Any) -> None:
    port = cli.broker.port
    old_pw = _add(cli, "pi-old")
    new_pw = _add(cli, "pi-new")
    assert cli("bind", "pi-old", "--meter", "SN-1", "--kind", "cold", "--payer", "0123456789",
               "--address", "Flat 1").exit_code == 0
    _store_readings(cli.db_url, "pi-old", range(1, 3))
    dev = Device(port, "pi-old", old_pw)

    r = cli("devices", "replace", "pi-old", "pi-new", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["binding"]["device_id"] == "pi-new" and out["binding"]["meter_serial"] == "SN-1"
    assert out["binding"]["payer_code"] == "0123456789" and out["closed"]["valid_to"] == out["binding"]["valid_from"]
    assert dev.disconnected.wait(5)
    dev.close()
    new = Device(port, "pi-new", new_pw)  # the new Pi logs in and publishes as before
    new.close()
    _store_readings(cli.db_url, "pi-new", range(1, 3))
    hist = json.loads(cli("history", "--payer", "0123456789", "--json").output)
    assert len(hist["readings"]) == 4, hist["readings"]
    listed = {d["device_id"]: d for d in json.loads(cli("devices", "list", "--json").output)["devices"]}
    assert listed["pi-new"]["binding"]["meter_serial"] == "SN-1" and listed["pi-old"]["binding"] is None

    for args, message in ((("devices", "replace", "pi-new", "pi-new"), "same device"),
                          (("devices", "replace", "pi-old", "pi-new"), "retired"),
                          (("devices", "replace", "pi-new", "ghost"), "unknown device")):
        r = cli(*args)
        assert r.exit_code == 1 and message in r.output, r.output


def test_unbind_is_a_devices_subcommand(cli: Any) -> None:
    _add(cli, "pi-1")
    r = cli("devices", "unbind", "pi-1")
    assert r.exit_code == 1 and "not bound" in r.output
    assert cli("bind", "pi-1", "--meter", "SN-1", "--kind", "cold", "--payer", "0123456789",
               "--address", "Flat 1").exit_code == 0
    r = cli("devices", "unbind", "pi-1", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["closed"]["meter_serial"] == "SN-1", r.output


def test_a_retired_device_leaves_the_fleet_counts(cli: Any) -> None:
    """Retired devices never read again: they must not count as devices, stale or unbound (false alerts)."""
    from datetime import timedelta

    from cloud_bridge.config import BridgeConfig
    from cloud_bridge.device_health import device_health
    from cloud_bridge.fleet import fleet_counts

    for d in ("pi-1", "pi-2"):
        _add(cli, d)
    cfg = BridgeConfig(database_url=cli.db_url)
    later = utcnow() + timedelta(days=2)  # both stale by then
    engine = open_store(cli.db_url, create=False)
    try:
        with engine.connect() as conn:
            before = fleet_counts(conn, later, cfg.fleet, cfg.window)
        assert (before.devices, before.stale) == (2, 2)
        assert cli("devices", "retire", "pi-1").exit_code == 0
        with engine.connect() as conn:
            after = fleet_counts(conn, later, cfg.fleet, cfg.window)
            health = {h.device_id: h for h in device_health(conn, later, cfg.fleet)}
        assert (after.devices, after.stale) == (1, 1)
        assert health["pi-1"].retired_at is not None and not health["pi-1"].stale and health["pi-2"].stale
    finally:
        engine.dispose()
    listed = {d["device_id"]: d for d in json.loads(cli("devices", "list", "--json").output)["devices"]}
    assert listed["pi-1"]["retired_at"] is not None and listed["pi-2"]["retired_at"] is None
