"""The project's broker config with passwords and ACL on: a device is confined to its own topics, and the
agent reports a refused publish as a configuration error instead of retrying it in a loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_helpers import AgentThread, add_accounts, edge_config
from paho.mqtt.reasoncodes import ReasonCode

from cloud_bridge.broker import MosquittoBroker
from edge.transport.outbox import Outbox

pytestmark = pytest.mark.mosquitto

ACCOUNTS = {"dev-a": "pw-a-secret", "dev-b": "pw-b-secret", "operator": "pw-op-secret", "bridge": "pw-br-secret"}


class Client:
    """A bare MQTT 5 client that records PUBACK/SUBACK reason codes and messages."""

    def __init__(self, port: int, user: str, password: str | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password if password is not None else ACCOUNTS[user])
        # Mosquitto 2.0 answers a denied QoS 1 publish with PUBACK 0x87 and then drops the connection.
        self.c.reconnect_delay_set(0.1, 0.2)  # type: ignore[arg-type]
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.connack: ReasonCode | None = None
        self.ready = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        self.c.on_message = lambda c, u, m: self.messages.append(m)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5)

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        self.connack = rc
        self.ready.set()

    def publish(self, topic: str, payload: bytes = b"{}") -> ReasonCode:
        info = self.c.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in self.pubacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> ReasonCode:
        _, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None
        deadline = time.monotonic() + 5
        while mid not in self.subacks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.subacks[mid][0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def accounts(auth_broker: MosquittoBroker) -> MosquittoBroker:
    add_accounts(auth_broker, ACCOUNTS)
    return auth_broker


def test_wrong_password_is_refused(accounts: MosquittoBroker) -> None:
    c = Client(accounts.port, "dev-a", "not-the-password")
    assert c.connack is not None and c.connack.is_failure
    c.close()


def test_device_cannot_publish_as_another_device(accounts: MosquittoBroker) -> None:
    a, spy = Client(accounts.port, "dev-a"), Client(accounts.port, "operator")
    try:
        assert not spy.subscribe("meters/#").is_failure
        assert not a.publish("meters/dev-a/reading").is_failure
        for topic in ("meters/dev-b/reading", "meters/dev-b/status", "meters/dev-b/telemetry",
                      "meters/dev-b/ack", "meters/dev-a/ack", "meters/dev-a/cmd/capture",
                      "homeassistant/sensor/dev-b/value/config", "bridge/fleet"):
            assert a.publish(topic).value == 0x87, f"dev-a could publish on {topic}"
        assert not a.publish("homeassistant/sensor/dev-a/value/config").is_failure
        time.sleep(0.3)
        assert [m.topic for m in spy.messages] == ["meters/dev-a/reading"]
    finally:
        a.close()
        spy.close()


def test_device_cannot_read_another_devices_commands_or_acks(accounts: MosquittoBroker) -> None:
    a, b = Client(accounts.port, "dev-a"), Client(accounts.port, "dev-b")
    op, bridge = Client(accounts.port, "operator"), Client(accounts.port, "bridge")
    try:
        assert not b.subscribe("meters/dev-b/cmd/#").is_failure
        assert not b.subscribe("meters/dev-b/ack").is_failure
        # dev-a tries the direct topics and wildcards; each is refused or simply delivers nothing
        for topic in ("meters/dev-b/cmd/#", "meters/dev-b/ack", "meters/+/cmd/+", "meters/#", "#"):
            a.subscribe(topic)
        assert not op.publish("meters/dev-b/cmd/capture").is_failure
        assert not bridge.publish("meters/dev-b/ack", b'{"seq": 1, "state": "stored"}').is_failure
        deadline = time.monotonic() + 3
        while len(b.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(m.topic for m in b.messages) == ["meters/dev-b/ack", "meters/dev-b/cmd/capture"]
        time.sleep(0.3)
        # Mosquitto 2.0 grants the SUBACK and then checks `read` on every delivery: nothing arrives.
        assert a.messages == [], f"dev-a read {[m.topic for m in a.messages]}"
    finally:
        for c in (a, b, op, bridge):
            c.close()


def test_bridge_reads_readings_and_writes_acks_only(accounts: MosquittoBroker) -> None:
    bridge, a = Client(accounts.port, "bridge"), Client(accounts.port, "dev-a")
    try:
        assert not bridge.subscribe("$share/bridge/meters/+/reading").is_failure
        assert not a.publish("meters/dev-a/reading").is_failure
        deadline = time.monotonic() + 3
        while not bridge.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m.topic for m in bridge.messages] == ["meters/dev-a/reading"]
        assert not bridge.publish("meters/dev-a/ack").is_failure
        assert bridge.publish("meters/dev-a/reading").value == 0x87
        assert bridge.publish("meters/dev-a/cmd/capture").value == 0x87
    finally:
        bridge.close()
        a.close()


def test_agent_logs_in_with_its_credentials_file(accounts: MosquittoBroker, tmp_path: Path,
                                                 collector_factory: Any) -> None:
    (tmp_path / "pw").write_text(ACCOUNTS["dev-a"] + "\n")
    col = collector_factory(accounts.port, ["meters/dev-a/#"], user="operator", password=ACCOUNTS["operator"])
    ackr = collector_factory(accounts.port, ["meters/+/reading"], bridge=True, user="bridge",
                             password=ACCOUNTS["bridge"], client_id="t-bridge-acker")
    cfg = edge_config(tmp_path, accounts.port, mqtt={"password_file": str(tmp_path / "pw")})  # user = device id
    AgentThread(cfg, cycles=3).start().join(20)
    assert ackr.wait_for(lambda: len(ackr.seqs()) >= 3)
    assert col.wait_for(lambda: [m.payload for m in col.on("/status")][-1:] == [b"offline"])
    ob = Outbox(cfg.state_dir)
    assert ob.depth() == 0


def test_refused_publish_is_a_config_error_not_a_tight_loop(accounts: MosquittoBroker, tmp_path: Path) -> None:
    """Logged in as dev-a but configured as device dev-b: every reading is refused (0x87)."""
    (tmp_path / "pw").write_text(ACCOUNTS["dev-a"])
    cfg = edge_config(tmp_path, accounts.port, device_id="dev-b", interval_s=0.05,
                      mqtt={"username": "dev-a", "password_file": str(tmp_path / "pw"), "refused_backoff_s": 60})
    at = AgentThread(cfg)
    attempts: list[str] = []
    real_publish = at.agent.link.publish

    def counting_publish(topic: str, payload: bytes, **kw: Any) -> int | None:
        if topic.endswith("/reading"):
            attempts.append(topic)
        return real_publish(topic, payload, **kw)

    at.agent.link.publish = counting_publish  # type: ignore[method-assign]
    at.start()
    try:
        deadline = time.monotonic() + 10
        # The refusal (PUBACK 0x87) arrives after a connect and a round trip: wait for it and 20 cycles.
        while (at.agent.stats.cycles < 20 or at.agent.stats.last_error is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        agent = at.agent
        assert agent.stats.last_error is not None and "not authorised" in agent.stats.last_error
        assert "ACL" in agent.stats.last_error
        # readings kept, none published: publishing paused for refused_backoff_s
        assert agent.outbox.count("pending") >= 20
        assert agent.outbox.count("published") == 0
        # Readings wait for the broker to accept `online`, which it refuses here: no reading is tried,
        # and nothing is retried while publishing is paused for refused_backoff_s (20+ more cycles).
        time.sleep(1.0)
        assert attempts == [], f"{len(attempts)} reading publish attempts by a device the broker refuses"
        tel = agent.telemetry()
        assert tel.last_error == agent.stats.last_error
    finally:
        at.stop()
