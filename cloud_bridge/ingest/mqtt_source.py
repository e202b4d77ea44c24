"""MQTT shared-subscription source (paho 2.x, MQTT 5, manual acknowledgement).

Each worker connects with a client id that stays the same across restarts (`bridge-0`, `bridge-1`, …)
and a persistent session (clean_start False, session expiry > 0), so what the broker queued or sent
but did not get a PUBACK for is delivered again when that worker comes back. PUBACKs are sent by
`ack()` only, after the worker's commit (paho `manual_ack=True`).
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_bridge.config import MqttSection
from cloud_bridge.ingest.source import Message, SourceError
from contract import topics
from contract.settings import read_secret

log = logging.getLogger(__name__)


class MqttSource:
    def __init__(self, cfg: MqttSection, client_id: str, *, subscribe_status: bool = False) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.subscribe_status = subscribe_status
        self._queue: queue.Queue[Message] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self.connects = 0
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        if cfg.username:
            client.username_pw_set(cfg.username, read_secret(cfg.password_file))
        if cfg.ca_file:
            client.tls_set(ca_certs=cfg.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client

    # paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            log.error("broker refused %s: %s", self.client_id, rc)
            return
        self.connects += 1
        self._refused = None
        self._connected.set()
        log.info("%s connected (session present: %s)", self.client_id, flags.session_present)
        subs = [(topics.shared_readings(self.cfg.shared_group), mqtt.SubscribeOptions(qos=1))]
        if self.subscribe_status:
            subs.append((topics.ALL_STATUS, mqtt.SubscribeOptions(qos=1)))
            subs.append((topics.ALL_TELEMETRY, mqtt.SubscribeOptions(qos=1)))
        client.subscribe(subs)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any = None) -> None:
        bad = [str(c) for c in codes if c.is_failure]
        if bad:
            self._refused = f"subscription refused: {', '.join(bad)} (check the broker ACL for the bridge user)"
            log.error("%s: %s", self.client_id, self._refused)
        else:
            self._subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self._connected.clear()
        if rc != 0:
            log.warning("%s disconnected: %s (reconnecting)", self.client_id, rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(Message(msg.topic, bytes(msg.payload), (msg.mid, msg.qos), bool(msg.dup)))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # MessageSource
    def start(self, timeout_s: float = 10.0) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        try:
            self.client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, clean_start=False,
                                properties=props)
        except OSError as exc:
            raise SourceError(f"cannot reach the broker at {self.cfg.host}:{self.cfg.port}: {exc.strerror or exc}; "
                              "check mqtt.host/mqtt.port (BRIDGE_MQTT__HOST/PORT) and that it runs") from None
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._refused:
                self.stop()
                raise SourceError(f"broker refused {self.client_id}: {self._refused}; check mqtt.username and "
                                  "mqtt.password_file")
            if self._subscribed.is_set():
                return
            time.sleep(0.02)
        self.stop()
        raise SourceError(f"no subscription on {self.cfg.host}:{self.cfg.port} within {timeout_s:.0f}s")

    def next_batch(self, max_n: int, max_wait_s: float, timeout_s: float) -> list[Message]:
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + max_wait_s
        while len(batch) < max_n:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def ack(self, messages: Sequence[Message]) -> None:
        for m in messages:
            mid, qos = m.token
            if qos > 0:
                self.client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def pending(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (a little) until our own publishes have left, before a clean stop."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._connected.is_set():
            if not self.client._out_messages:  # paho has no public "outgoing queue is empty"
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()
