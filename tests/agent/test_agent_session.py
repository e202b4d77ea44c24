"""`mqtt.session` against a real Mosquitto: what the broker keeps between the device's connections.

persistent (auto with MQTT 5): the subscriptions are QoS 1 and an ack published while the device is away
arrives when it is back. connection (auto with 3.1.1, the profile for the RabbitMQ 3.10 fleet broker,
docs/operate-city-scale.md): the subscriptions are QoS 0 and nothing is kept; the outbox sends the reading
again and the bridge answers `duplicate`."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from cloud_bridge.broker import MosquittoBroker
from contract import topics
from edge.config import MqttConfig
from edge.transport.mqtt import connect_args, device_client, persistent_session, subscription_qos

pytestmark = pytest.mark.mosquitto


@pytest.mark.parametrize(("protocol", "session", "kept"), [
    ("5", "auto", True), ("3.1.1", "auto", False), ("3.1.1", "persistent", True), ("5", "connection", False)])
def test_the_broker_keeps_what_came_while_away_only_for_a_persistent_session(
        broker: MosquittoBroker, protocol: str, session: str, kept: bool) -> None:
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, protocol=protocol, session=session)  # type: ignore[arg-type]
    assert persistent_session(cfg) is kept
    got: list[bytes] = []
    granted: list[int] = []
    subscribed = threading.Event()
    connected = threading.Event()

    def on_subscribe(_c: Any, _u: Any, _mid: int, rcs: list[Any], _p: Any = None) -> None:
        granted.extend(int(rc.value) for rc in rcs)
        subscribed.set()

    dev = device_client(cfg, "dev-s")
    dev.on_connect = lambda *_a: connected.set()
    dev.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    dev.on_subscribe = on_subscribe
    dev.connect("127.0.0.1", broker.port, keepalive=30,
                **connect_args(cfg, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY))  # as the agent starts
    dev.loop_start()
    bridge = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bridge-s", protocol=mqtt.MQTTv5)
    bridge.connect("127.0.0.1", broker.port)
    bridge.loop_start()
    try:
        assert connected.wait(10)
        dev.subscribe(topics.ack("dev-s"), qos=subscription_qos(cfg))
        assert subscribed.wait(10)
        assert granted == [1 if kept else 0]
        dev.disconnect()  # a clean DISCONNECT, as the agent's reconnect does
        dev.loop_stop()
        bridge.publish(topics.ack("dev-s"), b'{"seq": 1, "state": "stored"}', qos=1).wait_for_publish(10)
        connected.clear()
        dev.reconnect()  # paho's own reconnect: MQTT 5 clean start only on the first connect
        dev.loop_start()
        assert connected.wait(10)
        deadline = time.monotonic() + (5.0 if kept else 1.5)
        while time.monotonic() < deadline and not got:
            time.sleep(0.05)
        assert got == ([b'{"seq": 1, "state": "stored"}'] if kept else [])
    finally:
        dev.disconnect()
        dev.loop_stop()
        bridge.disconnect()
        bridge.loop_stop()
