"""The private broker starts with the project's config, carries messages, and enforces the ACL."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from cloud_bridge.broker import MosquittoBroker


def _client(broker: MosquittoBroker, user: str | None = None, password: str | None = None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user:
        c.username_pw_set(user, password)
    return c


def test_anonymous_broker_carries_a_qos1_message(broker: MosquittoBroker) -> None:
    got = threading.Event()
    sub = _client(broker)
    sub.on_message = lambda c, u, m: got.set()
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("meters/+/reading", qos=1)
    sub.loop_start()
    pub = _client(broker)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        pub.publish("meters/a/reading", b"{}", qos=1).wait_for_publish(5)
        assert got.wait(5)
    finally:
        pub.loop_stop()
        sub.loop_stop()


def test_auth_broker_refuses_anonymous(auth_broker: MosquittoBroker) -> None:
    c = _client(auth_broker)
    rc = c.connect("127.0.0.1", auth_broker.port)
    assert rc == 0  # the TCP connect works; the CONNACK refuses
    result: list[object] = []
    c.on_connect = lambda cl, u, f, reason, p: result.append(reason)
    c.loop_start()
    try:
        deadline = threading.Event()
        deadline.wait(1.0)
    finally:
        c.loop_stop()
    assert result and getattr(result[0], "is_failure", False)
