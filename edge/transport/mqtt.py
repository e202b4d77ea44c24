"""The device's one MQTT connection (paho-mqtt 2, MQTT 5 or 3.1.1, version-2 callbacks).

paho's callbacks run on its network thread; here they only turn into events on a queue, which the
agent's main loop handles one at a time. So the outbox (SQLite) and all decisions stay on one thread,
and a test can drive the agent by reading the same queue.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract import topics
from contract.settings import ConfigError, read_secret
from edge.config import MqttConfig

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
NOT_AUTHORIZED = 0x87


@dataclass(frozen=True)
class Connected:
    session_present: bool


@dataclass(frozen=True)
class ConnectFailed:
    reason: str
    not_authorized: bool


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class PubAck:
    """The broker answered a publish. `refused` carries the reason when it was not accepted."""

    mid: int
    refused: str | None = None
    not_authorized: bool = False


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True)
class Wake:
    """Nothing happened; the main loop should look at its flags (stop, …)."""


Event = Connected | ConnectFailed | Disconnected | PubAck | Message | Wake


def credentials(cfg: MqttConfig, device_id: str) -> tuple[str | None, str | None]:
    """(username, password): a password without a username logs in as the device id; neither: anonymous."""
    password = read_secret(cfg.password_file)
    username = cfg.username or (device_id if password else None)
    return username, password


def persistent_session(cfg: MqttConfig) -> bool:
    """Whether the broker keeps the device's session between connections (`mqtt.session`; auto: with MQTT 5
    yes, with 3.1.1 no). A session per connection subscribes at QoS 0: on RabbitMQ 3.10 that is a transient
    queue on the node the device is connected to, which goes with its connection, where a persistent one is
    a quorum queue that acks published just after a node failure could miss (docs/operate-city-scale.md)."""
    if cfg.session == "auto":
        return cfg.protocol == "5"
    return cfg.session == "persistent"


def subscription_qos(cfg: MqttConfig) -> int:
    """QoS of the device's subscriptions (acks, commands): 1 with a persistent session, else 0. A QoS 1
    subscription without a persistent session would make RabbitMQ 3.10 keep a durable queue on one node,
    which refuses the device's next session while that node is down."""
    return 1 if persistent_session(cfg) else 0


def device_client(cfg: MqttConfig, device_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT client (5, or 3.1.1 by `mqtt.protocol`) logged in as the device: its id as client id, its
    account, TLS when `ca_file` is set. The agent's session and `meter-edge doctor` both connect through
    this (and `connect_args`), so they cannot drift apart."""
    if cfg.protocol == "3.1.1":
        # No clean-start-on-first-connect in 3.1.1. A persistent session stays (the broker expires it), and
        # acks queued while the device was away arrive after a restart; settling an ack twice is harmless.
        # A session per connection is clean every time; paho still resends its unanswered QoS 1 publishes.
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311,
                        clean_session=not persistent_session(cfg), manual_ack=manual_ack)
    else:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5,
                        manual_ack=manual_ack)
    username, password = credentials(cfg, device_id)
    if username is not None:
        c.username_pw_set(username, password)
    if cfg.ca_file:
        try:
            c.tls_set(ca_certs=cfg.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.ca_file: cannot load CA certificate {cfg.ca_file}: {exc}") from None
    return c


def connect_args(cfg: MqttConfig, *, clean_start: bool | int = False) -> dict[str, Any]:
    """The keyword arguments of paho's connect for `mqtt.protocol`: MQTT 5 sends clean start and the
    session expiry (a session per connection: clean start every time, no expiry); 3.1.1 has neither (the
    client's clean_session stands for both)."""
    if cfg.protocol == "3.1.1":
        return {}
    props = Properties(PacketTypes.CONNECT)
    if not persistent_session(cfg):
        return {"clean_start": True, "properties": props}
    props.SessionExpiryInterval = cfg.session_expiry_s
    return {"clean_start": clean_start, "properties": props}


def _reason_text(rc: ReasonCode | int) -> str:
    if isinstance(rc, ReasonCode):
        return f"{rc.getName()} (0x{rc.value:02x})"
    return f"rc {rc}"


class MqttLink:
    """Connects asynchronously, reconnects with backoff, sets the `offline` will and reports events."""

    def __init__(self, cfg: MqttConfig, device_id: str, events: queue.Queue[Event]) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.events = events
        self._connected = threading.Event()
        # mid -> topic of QoS 1 messages in flight; touched only by the thread that publishes and
        # handles events (never under a lock: paho calls on_publish holding its own mutexes).
        self._mid_topics: dict[int, str] = {}
        self.client = self._build()

    def _build(self) -> mqtt.Client:
        c = device_client(self.cfg, self.device_id)
        c.will_set(topics.status(self.device_id), OFFLINE, qos=1, retain=True)
        c.reconnect_delay_set(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        # paho holds what is in flight across a reconnect and resends it itself; leave room beyond the
        # outbox's window for status, telemetry and discovery messages.
        c.max_inflight_messages_set(self.cfg.max_inflight + 16)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        return c

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                  **connect_args(self.cfg, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY))
        self.client.loop_start()

    def stop(self, timeout: float = 3.0) -> None:
        """Clean exit: retained `offline` (the will is not sent on a clean disconnect), then disconnect."""
        if self.connected:
            info = self.client.publish(topics.status(self.device_id), OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline status: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()

    def reconnect(self) -> None:
        """Drop the connection and connect again, as after a lost connection but without the `offline`
        will: a clean DISCONNECT (a persistent session stays, so acks the broker queues meanwhile are
        delivered; with a session per connection the outbox sends those readings again), then paho's own
        connect with its backoff. What paho holds in flight stays and is resent on the new connection;
        `Connected` runs the subscribe/`online`/announce again."""
        self.client.disconnect()
        self.client.loop_stop()
        if self._connected.is_set():  # paho's thread ended before it reported the disconnect
            self._connected.clear()
            self.events.put(Disconnected("dropped by the agent"))
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                  **connect_args(self.cfg, clean_start=False))
        self.client.loop_start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- sending --------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> int | None:
        """Hand a message to paho; the mid, or None when not connected (nothing was queued)."""
        if not self.connected:
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            return None
        if qos > 0:
            self._mid_topics[info.mid] = topic
        return info.mid

    def settle(self, mid: int) -> str | None:
        """The topic of a QoS 1 message the broker has answered (None: QoS 0 or unknown)."""
        return self._mid_topics.pop(mid, None)

    def subscribe(self, subs: list[tuple[str, int]]) -> None:
        self.client.subscribe(subs)

    # -- paho callbacks (network thread) --------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode,
                    props: Properties | None) -> None:
        if rc.is_failure:
            self._connected.clear()
            self.events.put(ConnectFailed(_reason_text(rc), rc.value in (0x86, 0x87, 0x8C)))
            return
        self._connected.set()
        self.events.put(Connected(bool(flags.session_present)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.events.put(ConnectFailed(f"cannot reach {self.cfg.host}:{self.cfg.port}", False))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, rc: ReasonCode,
                       props: Properties | None) -> None:
        was = self.connected
        self._connected.clear()
        if was:
            self.events.put(Disconnected(_reason_text(rc)))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    props: Properties | None) -> None:
        refused = _reason_text(rc) if rc.is_failure else None
        self.events.put(PubAck(mid, refused, rc.value == NOT_AUTHORIZED))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.events.put(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))
