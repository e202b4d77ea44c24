"""The device's MQTT session over its durable outbox: announce, drain in seq order, settle acks.

`MqttLink` is the connection (paho, reconnects, the `offline` will); `Session` decides what goes over
it and when. It runs on the agent's one thread: the agent hands it every transport event and calls
`pump()` whenever there may be something to send.

On each connection: subscribe (commands, acks, whatever the agent asks for), publish the retained
`online` and let the agent announce itself (discovery, telemetry, …). Readings wait for the PUBACK of
`online`: it comes after the SUBACK (so no bridge ack can pass us by), and a broker that refuses us
(0x87, then a dropped connection) gets one refused message, not a window of readings, on every
reconnect. Then the outbox drains oldest first with at most `mqtt.max_inflight` readings in flight;
a reading the broker took but the bridge has not acked within `ack_timeout_s` is published again.

A connection that stays up but over which no ack comes back is dropped: after `mqtt.stall_rounds` rounds
of such resends (at most one round per `ack_timeout_s`) with not a single ack in between, the next
round is a reconnect instead: a safety net for a broker that stops delivering a connected device's acks
(RabbitMQ 3.10 did, with persistent sessions in quorum queues, after a node failed; the fleet profile now
uses a session per connection, which it was not seen to do: docs/operate-city-scale.md). Any ack, and any
new connection, starts the count again, and a stalled connection is dropped at most once per
`stall_rounds` x `ack_timeout_s`. A reconnect that brought no ack either points at the bridge, not the
broker (down, or its database): the next one waits twice as many rounds, up to 16 times, so a fleet does
not reconnect in step every few minutes while its bridge is away. Counted in telemetry as `stall_reconnects`.

Retained topics that must only move forward (the meter's state for Home Assistant) go through
`keep_retained`: one message per topic in flight, the newest after its PUBACK, and everything again on
each connection. So paho's resend of an older one after a reconnect can never land after a newer one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from contract import topics
from contract.payloads import Ack
from edge.config import MqttConfig
from edge.transport.mqtt import (
    ONLINE,
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    Message,
    MqttLink,
    PubAck,
    subscription_qos,
)
from edge.transport.outbox import Outbox

log = logging.getLogger(__name__)

MAX_STALL_DOUBLINGS = 4  # a bridge silent across reconnects: they come at most 16 x stall_rounds rounds apart


class Session:
    def __init__(self, device_id: str, mqtt_cfg: MqttConfig, outbox: Outbox, link: MqttLink, *,
                 ack_timeout_s: float, on_error: Callable[[str], None],
                 on_announce: Callable[[], None] = lambda: None,
                 subscriptions: tuple[tuple[str, int], ...] = ()) -> None:
        self.device_id = device_id
        self.mqtt_cfg = mqtt_cfg
        self.outbox = outbox
        self.link = link
        self.ack_timeout_s = ack_timeout_s  # the agent updates it on `reload`
        self.on_error = on_error
        self.on_announce = on_announce
        self.subscriptions = subscriptions
        self.inflight: dict[int, int] = {}  # mid -> seq of readings paho holds
        self._ready = False  # subscribed, and the broker accepted our `online` on this connection
        self._online_mid: int | None = None  # the `online` publish whose PUBACK opens the session
        self._announce_pending = False
        self._resending = False  # after a reconnect paho resends its in-flight first: hold new ones back
        self._paused_until = 0.0  # after a not-authorised refusal
        self._retained: dict[str, bytes] = {}  # topic -> the newest payload the broker should keep
        self._retained_inflight: dict[int, tuple[str, bytes]] = {}  # mid -> (topic, payload)
        self._retained_acked: dict[str, bytes] = {}  # topic -> payload the broker took on this connection
        self._silent_rounds = 0  # rounds of resends on this connection with no ack since the first
        self._round_at: float | None = None  # monotonic time the latest counted round began
        self._stall_reconnect_at: float | None = None
        self._stall_streak = 0  # stall reconnects since the latest ack
        self.stall_reconnects = 0  # connections dropped because acks stopped coming (telemetry)

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def paused(self) -> bool:
        return time.monotonic() < self._paused_until

    @property
    def ready(self) -> bool:
        """Connected, subscribed and accepted: readings (and anything that must follow them) may go out."""
        return self._ready and self.link.connected and not self.paused

    def unsent(self) -> int:
        """Readings not yet taken by the broker: pending in the outbox or in flight."""
        return self.outbox.count("pending") + len(self.inflight)

    def start(self) -> None:
        requeued = self.outbox.requeue_unacked()
        if requeued:
            log.info("%d readings were published before but never acknowledged by the bridge: publishing again",
                     requeued)
        self.link.start()

    def stop(self) -> None:
        self.link.stop()

    # -- publishing the outbox ------------------------------------------------------------------
    def pump(self) -> None:
        """Publish the oldest unsent readings, at most `mqtt.max_inflight` at a time."""
        if not self.ready:
            return
        if self._resending:
            if self.inflight:
                return
            self._resending = False
        room = self.mqtt_cfg.max_inflight - len(self.inflight)
        if room <= 0:
            return
        rows = self.outbox.next_to_publish(
            limit=room, exclude=set(self.inflight.values()),
            republish_before=self.outbox.clock() - self.ack_timeout_s)
        resending = any(row.state == "published" for row in rows)
        if resending and self._stalled():
            self._reconnect_stalled()
            return
        for row in rows:
            if row.state == "published":
                log.info("seq %d: no ack from the bridge within %.3gs, publishing it again",
                         row.seq, self.ack_timeout_s)
            mid = self.link.publish(topics.reading(self.device_id), row.payload, qos=1)
            if mid is None:
                return
            self.inflight[mid] = row.seq
        if resending:
            self._count_round()

    # -- acks that stop coming on a live connection ----------------------------------------------
    def _count_round(self) -> None:
        """Resends went out: a new round unless one began less than `ack_timeout_s` ago (readings
        published at different times come due one after the other within a round)."""
        now = time.monotonic()
        if self._round_at is None or now - self._round_at >= self.ack_timeout_s:
            self._silent_rounds += 1
            self._round_at = now

    def _stalled(self) -> bool:
        """`stall_rounds` rounds of resends (twice as many after each reconnect that brought no ack
        either) brought back no ack at all, and another is due."""
        if self.mqtt_cfg.stall_rounds <= 0:
            return False
        rounds = self.mqtt_cfg.stall_rounds * 2 ** min(self._stall_streak, MAX_STALL_DOUBLINGS)
        if self._silent_rounds < rounds or self._round_at is None:
            return False
        now = time.monotonic()
        if now - self._round_at < self.ack_timeout_s:
            return False  # the latest round is still running
        window = rounds * self.ack_timeout_s
        return self._stall_reconnect_at is None or now - self._stall_reconnect_at >= window

    def _reconnect_stalled(self) -> None:
        self.stall_reconnects += 1
        log.warning(
            "no ack from the bridge through %d rounds of resends (%.3gs each) although the connection to the "
            "broker is up: dropping it and connecting again (a broker can stop delivering a connected device's "
            "acks, as RabbitMQ 3.10 did with persistent sessions after a node failed; mqtt.stall_rounds). "
            "%d such reconnects since the agent started", self._silent_rounds, self.ack_timeout_s,
            self.stall_reconnects)
        self._stall_reconnect_at = time.monotonic()
        self._stall_streak += 1
        self._reset_rounds()
        self._ready = False
        self.link.reconnect()

    def _reset_rounds(self) -> None:
        self._silent_rounds = 0
        self._round_at = None

    def keep_retained(self, topic: str, payload: bytes) -> None:
        """Have the broker keep `payload` on `topic` (retained, QoS 1), published in call order."""
        self._retained[topic] = payload
        self._flush_retained(topic)

    def _flush_retained(self, topic: str) -> None:
        if not self.link.connected or self.paused or topic not in self._retained:
            return
        if any(t == topic for t, _ in self._retained_inflight.values()):
            return  # the one in flight first (paho resends it after a reconnect); this one after its PUBACK
        payload = self._retained[topic]
        if self._retained_acked.get(topic) == payload:
            return
        mid = self.link.publish(topic, payload, qos=1, retain=True)
        if mid is not None:
            self._retained_inflight[mid] = (topic, payload)

    def announce(self) -> None:
        """Retained `online`, then the agent's own announcements. Held back while publishing is paused
        after a refusal: Mosquitto drops the connection after each refused publish."""
        if not self._announce_pending or not self.link.connected or self.paused:
            return
        mid = self.link.publish(topics.status(self.device_id), ONLINE, qos=1, retain=True)
        if mid is None:
            return
        self._announce_pending = False
        self._online_mid = mid
        self.on_announce()
        for topic in list(self._retained):
            self._flush_retained(topic)

    # -- events ---------------------------------------------------------------------------------
    def handle(self, event: Event) -> Message | None:
        """Settle a transport event; a message that is not the bridge's ack is returned for the agent."""
        if isinstance(event, PubAck):
            self._on_puback(event)
        elif isinstance(event, Message):
            if event.topic != topics.ack(self.device_id):
                return event
            self._on_ack(event.payload)
        elif isinstance(event, Connected):
            self._on_connected(event)
        elif isinstance(event, Disconnected):
            self._ready = False
            self._online_mid = None
            log.warning("disconnected from the broker (%s); readings stay in the outbox, reconnecting", event.reason)
        elif isinstance(event, ConnectFailed):
            if event.not_authorized:
                self.on_error(f"the broker refused the login ({event.reason}): check mqtt.username and the password "
                              f"in {self.mqtt_cfg.password_file or '(no mqtt.password_file)'}")
            else:
                log.warning("cannot connect to the broker: %s; retrying with backoff", event.reason)
        return None

    def _on_connected(self, event: Connected) -> None:
        log.info("connected to %s:%d (session present: %s)", self.mqtt_cfg.host, self.mqtt_cfg.port,
                 event.session_present)
        self._resending = bool(self.inflight)
        self._reset_rounds()  # a new connection: count its own rounds
        self._retained_acked.clear()  # say it all again on every connection (a broker may have lost it)
        did, qos = self.device_id, subscription_qos(self.mqtt_cfg)
        self.link.subscribe([(topics.cmd_wildcard(did), qos), (topics.ack(did), qos),
                             *((t, min(q, qos)) for t, q in self.subscriptions)])
        self._announce_pending = True
        self.announce()

    def _on_puback(self, event: PubAck) -> None:
        topic = self.link.settle(event.mid)
        seq = self.inflight.pop(event.mid, None)
        retained = self._retained_inflight.pop(event.mid, None)
        if retained is not None and event.refused is None:  # refused: again on the next connection
            self._retained_acked[retained[0]] = retained[1]
            self._flush_retained(retained[0])
        opens_session = event.mid == self._online_mid
        if opens_session:
            self._online_mid = None
        if event.refused is None:
            if seq is not None:
                self.outbox.mark_published(seq)
            if opens_session:
                self._ready = True
                self.pump()
            return
        what = f"reading seq {seq}" if seq is not None else f"a message on {topic}"
        if event.not_authorized:
            self._paused_until = time.monotonic() + self.mqtt_cfg.refused_backoff_s
            self.on_error(
                f"the broker refused {what} as not authorised ({event.refused}): a configuration error; check the "
                f"broker ACL and mqtt.username (must be the device id {self.device_id}). "
                f"Retrying in {self.mqtt_cfg.refused_backoff_s:.0f}s")
        else:
            self.on_error(f"the broker refused {what}: {event.refused}")

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.model_validate_json(payload)
        except ValueError as exc:
            log.warning("ignoring an ack that is not an Ack: %s", str(exc).splitlines()[0])
            return
        self._reset_rounds()  # acks come through (even one for a seq already done)
        self._stall_streak = 0
        if ack.seq is None:
            log.warning("the bridge acked a message without a seq (%s%s)", ack.state,
                        f": {ack.reason}" if ack.reason else "")
            return
        if ack.state == "rejected" and ack.reason == "seq_reused":
            if self.outbox.resend_reused(ack.seq, ack.epoch):
                log.warning("the bridge already holds seq %d with other content: sending it again under epoch %d",
                            ack.seq, self.outbox.epoch)
            return
        if not self.outbox.mark_acked(ack.seq, ack.state, ack.reason, ack.epoch):
            log.debug("ack for seq %d that is already done or unknown", ack.seq)
            return
        if ack.state == "rejected":
            self.on_error(f"the bridge rejected reading seq {ack.seq}: {ack.reason or '(no reason given)'}")
