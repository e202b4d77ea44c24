"""Simulated devices for the cluster tests: MQTT 3.1.1 clients with their own accounts, one per device,
each on one node and moving to the next when its node goes away (what a load balancer in front of the
cluster does for real devices), publishing QoS 1 and sending again what the bridge has not acked. Their
MQTT session is the edge agent's own for `mqtt.protocol = "3.1.1"` (edge.transport.mqtt.device_client and
subscription_qos: a session per connection, subscriptions at QoS 0)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from click.testing import CliRunner

from cloud_bridge import registry
from cloud_bridge.cli import main
from cloud_bridge.store.engine import open_store
from contract import topics
from contract.payloads import Reading
from edge.config import MqttConfig
from edge.transport.mqtt import device_client, subscription_qos

FLEET_MQTT = MqttConfig(protocol="3.1.1")  # the device profile for the fleet broker (docs/operate-city-scale.md)


def reading(device_id: str, seq: int) -> Reading:
    return Reading.model_validate({
        "device_id": device_id, "seq": seq, "epoch": 1, "taken_at": "2026-11-20T10:00:00Z",
        "value": f"{seq:05d}.125", "status": "ok", "confidence": 0.97,
        "digits": [{"v": 1, "f": 1.2, "p": 0.97}], "model": "test-model"})


def wait_until(cond: Any, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


def add_devices(env: dict[str, str], db_url: str, ids: list[str]) -> dict[str, str]:
    """`meter-bridge devices add --json` for each (accounts on RabbitMQ), then bind them."""
    passwords = {}
    runner = CliRunner()
    for d in ids:
        r = runner.invoke(main, ["devices", "add", d, "--json"], env={**env, "BRIDGE_DATABASE_URL": db_url})
        assert r.exit_code == 0, r.output
        passwords[d] = json.loads(r.output)["password"]
    engine = open_store(db_url)
    with engine.begin() as conn:
        for i, d in enumerate(ids):
            registry.bind(conn, d, meter_serial=f"SN-{d}", kind="cold", payer_code=f"{2000000000 + i}",
                          address=f"Cluster street {i}")
    engine.dispose()
    return passwords


def start_worker(env: dict[str, str], db_url: str, index: int, urls: list[str], log: Path) -> subprocess.Popen[bytes]:
    e = {**env, "BRIDGE_DATABASE_URL": db_url, "BRIDGE_AMQP__URLS": json.dumps(urls)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cloud_bridge.cli", "run", "--source", "amqp",
                                 "--worker-index", str(index)], env=e, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@dataclass
class SimDevice:
    device_id: str
    password: str
    ports: list[int]  # every node's MQTT port; it starts on ports[0]
    acked: dict[int, str] = field(default_factory=dict)  # seq -> stored|duplicate|rejected
    sent_at: dict[int, float] = field(default_factory=dict)
    sends: int = 0
    connects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._node = 0
        self._silent_rounds = 0
        self._acked_at_last_round = 0
        self.reconnects = 0  # reconnections after acks stopped coming
        self.subscribed = threading.Event()
        c = device_client(FLEET_MQTT, self.device_id)
        c.username_pw_set(self.device_id, self.password)
        c.max_inflight_messages_set(50)
        c.reconnect_delay_set(1, 2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail  # a dead node refuses the TCP connection: try the next
        c.on_message = self._on_message
        c.on_subscribe = lambda *_a: self.subscribed.set()
        self.client = c

    @property
    def port(self) -> int:
        return self.ports[self._node % len(self.ports)]

    def start(self) -> None:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            return
        self.connects += 1
        client.subscribe(topics.ack(self.device_id), qos=subscription_qos(FLEET_MQTT))

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        # Next node (paho reconnects to whatever connect_async set last).
        self._node += 1
        client.connect_async("127.0.0.1", self.port, keepalive=10)

    def _on_connect_fail(self, client: mqtt.Client, _u: Any) -> None:
        self._node += 1
        client.connect_async("127.0.0.1", self.port, keepalive=10)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        ack = json.loads(msg.payload)
        with self.lock:
            if ack.get("state") in ("stored", "duplicate", "rejected"):
                self.acked[int(ack["seq"])] = ack["state"]

    def send(self, seq: int) -> None:
        with self.lock:
            self.sent_at[seq] = time.monotonic()
            self.sends += 1
        self.client.publish(topics.reading(self.device_id), reading(self.device_id, seq).to_json_bytes(), qos=1)

    def resend_unacked(self, older_than_s: float) -> int:
        """What a real device's outbox does: publish again what the bridge has not acked in time.

        After three rounds of resends without a single new ack the device reconnects, as the agent does
        (`mqtt.stall_rounds`, a safety net; `reconnects` counts how often it was needed)."""
        now = time.monotonic()
        with self.lock:
            due = [s for s, t in self.sent_at.items() if s not in self.acked and now - t > older_than_s]
            acked = len(self.acked)
        if not due:
            return 0
        self._silent_rounds = self._silent_rounds + 1 if acked == self._acked_at_last_round else 0
        self._acked_at_last_round = acked
        if self._silent_rounds >= 3:
            self._silent_rounds = 0
            self.reconnects += 1
            self.client.disconnect()
            self.client.loop_stop()
            self.client.connect_async("127.0.0.1", self.port, keepalive=10)
            self.client.loop_start()
        for s in due:
            self.send(s)
        return len(due)

    def all_acked(self, n: int) -> bool:
        with self.lock:
            return all(self.acked.get(s) in ("stored", "duplicate") for s in range(1, n + 1))

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
