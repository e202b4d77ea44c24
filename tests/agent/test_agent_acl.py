"""The project's broker config with accounts on (Mosquitto dynamic security): a device is confined to its
own topics, cannot join the bridge's shared subscription, cannot take another account's client id, and the
agent reports a refused publish as a configuration error instead of retrying it in a loop."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_helpers import AgentThread, add_accounts, edge_config
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_bridge.broker import MosquittoBroker
from edge.transport.outbox import Outbox

pytestmark = pytest.mark.mosquitto

ACCOUNTS = {"dev-a": "pw-a-secret", "dev-b": "pw-b-secret", "operator": "pw-op-secret", "bridge": "pw-br-secret",
            "homeassistant": "pw-ha-secret"}
NOT_AUTHORISED = 0x87


class Client:
    """A bare MQTT 5 client that records PUBACK/SUBACK reason codes and messages. Its client id is its
    user name unless given (the broker ties the two together)."""

    def __init__(self, port: int, user: str, password: str | None = None, *, client_id: str | None = None,
                 session_expiry: int = 0, wait: bool = True) -> None:
        self.client_id = client_id or user
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password if password is not None else ACCOUNTS[user])
        # Mosquitto 2.0 answers a denied QoS 1 publish with PUBACK 0x87 and then drops the connection.
        self.c.reconnect_delay_set(0.1, 0.2)  # type: ignore[arg-type]
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.connack: ReasonCode | None = None
        self.disconnects: list[Any] = []
        self.ready = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc)
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        self.c.on_message = lambda c, u, m: self.messages.append(m)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        self.c.connect("127.0.0.1", port, clean_start=session_expiry == 0, properties=props)
        self.c.loop_start()
        if wait:
            assert self.ready.wait(5)

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        self.connack = rc
        self.ready.set()
        if rc.is_failure:
            c.disconnect()  # no reconnect loop for a refused login

    def publish(self, topic: str, payload: bytes = b"{}", *, retain: bool = False) -> ReasonCode:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
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

    def wait_messages(self, n: int, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

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
        for topic in ("meters/dev-b/reading", "meters/dev-b/status", "meters/dev-b/telemetry", "meters/dev-b/state",
                      "meters/dev-b/ack", "meters/dev-a/ack", "meters/dev-a/cmd/capture",
                      "meters/dev-b/cmd/capture/result", "homeassistant/sensor/dev-b/value/config", "bridge/fleet"):
            assert a.publish(topic).value == NOT_AUTHORISED, f"dev-a could publish on {topic}"
        assert not a.publish("meters/dev-a/state").is_failure
        assert not a.publish("meters/dev-a/cmd/capture/result").is_failure
        time.sleep(0.3)
        assert [m.topic for m in spy.messages] == [
            "meters/dev-a/reading", "meters/dev-a/state", "meters/dev-a/cmd/capture/result"]
    finally:
        a.close()
        spy.close()


def test_device_cannot_read_another_devices_commands_or_acks(accounts: MosquittoBroker) -> None:
    a, b = Client(accounts.port, "dev-a"), Client(accounts.port, "dev-b")
    op, bridge = Client(accounts.port, "operator"), Client(accounts.port, "bridge", client_id="bridge-t")
    try:
        assert not b.subscribe("meters/dev-b/cmd/+").is_failure
        assert not b.subscribe("meters/dev-b/ack").is_failure
        # dev-a tries the direct topics and wildcards: dynamic security refuses each SUBSCRIBE
        for topic in ("meters/dev-b/cmd/#", "meters/dev-b/ack", "meters/+/cmd/+", "meters/#", "#"):
            assert a.subscribe(topic).value == NOT_AUTHORISED, f"dev-a could subscribe to {topic}"
        assert not op.publish("meters/dev-b/cmd/capture").is_failure
        assert not bridge.publish("meters/dev-b/ack", b'{"seq": 1, "state": "stored"}').is_failure
        deadline = time.monotonic() + 3
        while len(b.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(m.topic for m in b.messages) == ["meters/dev-b/ack", "meters/dev-b/cmd/capture"]
        time.sleep(0.3)
        assert a.messages == [], f"dev-a read {[m.topic for m in a.messages]}"
    finally:
        for c in (a, b, op, bridge):
            c.close()


def test_bridge_reads_readings_and_writes_acks_only(accounts: MosquittoBroker) -> None:
    bridge, a = Client(accounts.port, "bridge", client_id="bridge-t"), Client(accounts.port, "dev-a")
    try:
        assert not bridge.subscribe("$share/bridge/meters/+/reading").is_failure
        assert not a.publish("meters/dev-a/reading").is_failure
        deadline = time.monotonic() + 3
        while not bridge.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m.topic for m in bridge.messages] == ["meters/dev-a/reading"]
        assert not bridge.publish("meters/dev-a/ack").is_failure
        assert bridge.publish("meters/dev-a/reading").value == NOT_AUTHORISED
        assert bridge.publish("meters/dev-a/cmd/capture").value == NOT_AUTHORISED
    finally:
        bridge.close()
        a.close()


def test_agent_logs_in_with_its_credentials_file(accounts: MosquittoBroker, tmp_path: Path,
                                                 collector_factory: Any) -> None:
    (tmp_path / "pw").write_text(ACCOUNTS["dev-a"] + "\n")
    col = collector_factory(accounts.port, ["meters/dev-a/#"], user="operator", password=ACCOUNTS["operator"],
                            client_id="operator")
    ackr = collector_factory(accounts.port, ["meters/+/reading"], bridge=True, user="bridge",
                             password=ACCOUNTS["bridge"], client_id="bridge-acker")
    cfg = edge_config(tmp_path, accounts.port, mqtt={"password_file": str(tmp_path / "pw")})  # user = device id
    AgentThread(cfg, cycles=3).start().join(20)
    assert ackr.wait_for(lambda: len(ackr.seqs()) >= 3)
    assert col.wait_for(lambda: [m.payload for m in col.on("/status")][-1:] == [b"offline"])
    ob = Outbox(cfg.state_dir)
    assert ob.depth() == 0


def test_refused_publish_is_a_config_error_not_a_tight_loop(accounts: MosquittoBroker, tmp_path: Path) -> None:
    """A device whose broker role lost its rights (an ACL mistake): every publish is refused (0x87)."""
    broker_password = accounts.add_account("dev-c", "device")
    with accounts.admin() as admin:
        admin.ensure_role("device-dev-c", [])
    (tmp_path / "pw").write_text(broker_password)
    cfg = edge_config(tmp_path, accounts.port, device_id="dev-c", interval_s=0.05,
                      mqtt={"password_file": str(tmp_path / "pw"), "refused_backoff_s": 60})
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


def _reading(device_id: str, seq: int) -> bytes:
    return json.dumps({"device_id": device_id, "seq": seq}).encode()


def _publish_readings(port: int, device: str, n: int) -> None:
    pub = Client(port, device)
    try:
        for seq in range(1, n + 1):
            assert not pub.publish(f"meters/{device}/reading", _reading(device, seq)).is_failure
    finally:
        pub.close()


def test_no_account_but_the_bridge_can_join_its_shared_subscription(accounts: MosquittoBroker) -> None:
    """Issue 20 item 3: with `acl_file` a device's SUBSCRIBE to the bridge's group was granted and every
    other reading was delivered to it, then dropped by the read check: 50 of 100 lost with one worker.
    Dynamic security refuses the SUBSCRIBE, so the group has only the bridge and nothing is lost, also
    while the intruder's persistent session is offline."""
    group = "$share/bridge/meters/+/reading"
    worker = Client(accounts.port, "bridge", client_id="bridge-0", session_expiry=600)
    intruders = [Client(accounts.port, name, session_expiry=600) for name in ("dev-b", "operator", "homeassistant")]
    try:
        assert not worker.subscribe(group).is_failure
        for c in intruders:
            assert c.subscribe(group).value == NOT_AUTHORISED, f"{c.client_id} joined the bridge's group"
        intruders[0].close()  # an offline persistent session must not hold a share either
        _publish_readings(accounts.port, "dev-a", 100)
        got = worker.wait_messages(100)
        time.sleep(0.3)
        seqs = sorted(json.loads(m.payload)["seq"] for m in got)
        assert seqs == list(range(1, 101)), f"bridge got {len(seqs)} of 100"
        assert all(c.messages == [] for c in intruders)
    finally:
        worker.close()
        for c in intruders:
            c.close()


def test_device_cannot_take_another_devices_client_id(accounts: MosquittoBroker) -> None:
    """Issue 20 item 4: dev-a connecting with dev-b's client id kicked dev-b off 5 of 5 times."""
    b = Client(accounts.port, "dev-b")
    try:
        for _ in range(5):
            thief = Client(accounts.port, "dev-a", client_id="dev-b")
            assert thief.connack is not None and thief.connack.is_failure, "dev-a logged in as client dev-b"
            thief.close()
        time.sleep(0.3)
        assert b.disconnects == [], "dev-b was kicked off"
        assert not b.publish("meters/dev-b/reading").is_failure
    finally:
        b.close()


def test_only_the_bridge_account_can_take_a_bridge_worker_id(accounts: MosquittoBroker) -> None:
    """Taking `bridge-0` used to wipe the worker's session (120 of 200 not delivered). Every other account
    is tied to its own client id: the session and its queue stay the bridge's."""
    worker = Client(accounts.port, "bridge", client_id="bridge-0", session_expiry=600)
    assert not worker.subscribe("$share/bridge/meters/+/reading").is_failure
    worker.close()  # offline: the broker queues for its persistent session
    _publish_readings(accounts.port, "dev-a", 200)
    for name in ("dev-a", "dev-b", "operator", "homeassistant"):
        thief = Client(accounts.port, name, client_id="bridge-0")
        assert thief.connack is not None and thief.connack.is_failure, f"{name} took client id bridge-0"
        thief.close()
    back = Client(accounts.port, "bridge", client_id="bridge-0", session_expiry=600)
    try:
        seqs = sorted(json.loads(m.payload)["seq"] for m in back.wait_messages(200))
        assert seqs == list(range(1, 201)), f"the worker got {len(seqs)} of 200 after the attempts"
    finally:
        back.close()


def test_device_announces_exactly_its_own_home_assistant_discovery(accounts: MosquittoBroker) -> None:
    """Issue 18: retained configs at homeassistant/<sensor|binary_sensor|button>/<own id>/<object>/config,
    nothing else under homeassistant/; HA's birth message is read, not written."""
    a = Client(accounts.port, "dev-a")
    try:
        assert not a.subscribe("homeassistant/status").is_failure
        assert a.subscribe("homeassistant/#").value == NOT_AUTHORISED
        for component in ("sensor", "binary_sensor", "button"):
            topic = f"homeassistant/{component}/dev-a/water/config"
            assert not a.publish(topic, retain=True).is_failure, f"dev-a refused on {topic}"
            assert not a.publish(topic, b"", retain=True).is_failure  # removal: an empty retained config
        for topic in ("homeassistant/switch/dev-a/water/config", "homeassistant/sensor/dev-b/water/config",
                      "homeassistant/sensor/dev-a/config", "homeassistant/sensor/dev-a/water/extra/config",
                      "homeassistant/sensor/dev-a/water/state", "homeassistant/status"):
            assert a.publish(topic, retain=True).value == NOT_AUTHORISED, f"dev-a could publish on {topic}"
    finally:
        a.close()
