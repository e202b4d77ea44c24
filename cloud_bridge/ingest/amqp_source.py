"""AMQP quorum-queue source (RabbitMQ cluster as the fleet broker; pika, manual acknowledgement).

Devices still speak MQTT: the broker's MQTT plugin routes `meters/X/reading` to the routing key
`meters.X.reading` on `amq.topic`, where the durable quorum queue `amqp.queue` collects them for every
worker (competing consumers: RabbitMQ has no MQTT shared subscriptions). Status and telemetry go to
`amqp.status_queue`, a quorum queue with a single active consumer: one worker at a time keeps them in
order, another takes over when it goes away.

A delivery is acknowledged by `ack()` only, after the worker's commit. When the connection drops
(its node was lost), what it had delivered and not acknowledged goes back to the queue and reaches a
worker again; the source moves on to the next node in `amqp.urls`. An acknowledgement for a delivery
of a connection that is gone is not sent (delivery tags belong to their channel); the redelivered
copy is stored as a duplicate and answered again, which a device takes as it takes any ack.

Answers (device acks, dead letters, fleet state) are published to `amq.topic` with the topic's
routing key, so MQTT subscribers of `meters/X/ack` get them as from the MQTT source. AMQP cannot set
MQTT's retain flag: retained fleet topics are not retained on this broker (the store has them:
`meter-bridge status`).

pika's BlockingConnection is single-threaded: everything here runs on the worker's thread, and
heartbeats are answered while the worker waits in `next_batch`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError
from pika.spec import Basic, BasicProperties

from cloud_bridge.config import AmqpSection
from cloud_bridge.ingest.source import Message, SourceError
from contract.settings import read_secret

log = logging.getLogger(__name__)
# pika logs a lost connection as several ERRORs with tracebacks; `_lost` says it once, with what happens next.
logging.getLogger("pika").setLevel(logging.CRITICAL)

EXCHANGE = "amq.topic"
READINGS_BINDINGS = ("meters.*.reading",)
STATUS_BINDINGS = ("meters.*.status", "meters.*.telemetry")
# The queues' arguments as deploy/rabbitmq/definitions.json declares them (a declare must match).
READINGS_ARGS: dict[str, object] = {"x-queue-type": "quorum"}
STATUS_ARGS: dict[str, object] = {"x-queue-type": "quorum", "x-single-active-consumer": True}


def topic_to_routing_key(topic: str) -> str:
    """MQTT topic -> the routing key RabbitMQ's MQTT plugin uses (levels joined by dots)."""
    return topic.replace("/", ".")


def routing_key_to_topic(key: str) -> str:
    return key.replace(".", "/")


@dataclass(frozen=True)
class Token:
    """What `ack()` needs: the delivery tag and the connection (generation) it belongs to."""

    generation: int
    delivery_tag: int


def redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"


class AmqpSource:
    def __init__(self, cfg: AmqpSection, name: str, *, subscribe_status: bool = True) -> None:
        self.cfg = cfg
        self.name = name
        self.subscribe_status = subscribe_status
        self._password = read_secret(cfg.password_file) if cfg.password_file else None
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._generation = 0
        self._buffer: deque[Message] = deque()
        self._next_url = 0
        self._retry_at = 0.0
        self._backoff = 0.5
        self._connects = 0
        self.url: str | None = None
        self.acks_dropped = 0  # acknowledgements of a lost connection's deliveries (they come again)
        self.publishes_lost = 0  # answers that could not be published (connection lost)
        self._lost_reported = 0

    # -- MessageSource ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open and self._channel is not None and self._channel.is_open

    @property
    def connects(self) -> int:
        return self._connects

    def start(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        errors: list[str] = []
        while True:
            err = self._connect_round()
            if err is None:
                return
            errors.append(err)
            if time.monotonic() >= deadline:
                raise SourceError(f"no AMQP node answered ({'; '.join(errors[-len(self.cfg.urls):])}); check "
                                  "amqp.urls (BRIDGE_AMQP__URLS), amqp.username/password_file and that the "
                                  "nodes run")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def next_batch(self, max_n: int, max_wait_s: float, timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        if not self.connected and not self._reconnect(deadline):
            return []
        try:
            while not self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._pump(min(left, 0.25))
            fill_until = time.monotonic() + max_wait_s
            while len(self._buffer) < max_n:
                left = fill_until - time.monotonic()
                if left <= 0:
                    break
                before = len(self._buffer)
                self._pump(min(left, 0.05))
                if len(self._buffer) == before and left <= 0.05:
                    break
        except AMQPError as exc:
            self._lost(exc)
            return []
        out: list[Message] = []
        while self._buffer and len(out) < max_n:
            out.append(self._buffer.popleft())
        return out

    def ack(self, messages: Sequence[Message]) -> None:
        for m in messages:
            token: Token = m.token
            if token.generation != self._generation or not self.connected:
                self.acks_dropped += 1
                continue
            assert self._channel is not None
            try:
                self._channel.basic_ack(token.delivery_tag)
            except AMQPError as exc:
                self.acks_dropped += 1
                self._lost(exc)
        if self.acks_dropped:
            log.debug("%s: %d acknowledgements dropped so far (their connection was lost)", self.name,
                      self.acks_dropped)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if not self.connected:
            self.publishes_lost += 1  # logged once per reconnect: a device sends an unacked reading again
            return
        assert self._channel is not None
        props = BasicProperties(delivery_mode=2 if qos > 0 else 1, content_type="application/json")
        try:
            self._channel.basic_publish(EXCHANGE, topic_to_routing_key(topic), payload, props)
        except AMQPError as exc:
            self.publishes_lost += 1
            self._lost(exc)

    def pending(self) -> int:
        return len(self._buffer)

    def stop(self) -> None:
        """Close; deliveries not acknowledged go back to the queue for another worker."""
        conn, self._conn, self._channel = self._conn, None, None
        self._buffer.clear()
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except AMQPError as exc:
                log.debug("%s: close: %s", self.name, exc)

    # -- connection handling ----------------------------------------------------------------------
    def _params(self, url: str) -> pika.URLParameters:
        params = pika.URLParameters(url)
        if self.cfg.username:
            params.credentials = pika.PlainCredentials(self.cfg.username, self._password or "")
        params.heartbeat = self.cfg.heartbeat_s
        params.blocked_connection_timeout = 60
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.client_properties = {"connection_name": f"meter-bridge {self.name}"}
        if url.startswith("amqps://"):
            ctx = ssl.create_default_context(cafile=self.cfg.ca_file)
            params.ssl_options = pika.SSLOptions(ctx, urlsplit(url).hostname)
        return params

    def _connect_round(self) -> str | None:
        """Try each node once, starting after the last one used; None when connected, else the errors."""
        errors = []
        n = len(self.cfg.urls)
        for i in range(n):
            url = self.cfg.urls[(self._next_url + i) % n]
            try:
                self._open(url)
            except AMQPError as exc:
                errors.append(f"{redacted(url)}: {type(exc).__name__} {exc}".strip())
                self.stop()
                continue
            except OSError as exc:
                errors.append(f"{redacted(url)}: {exc.strerror or exc}")
                self.stop()
                continue
            self._next_url = (self._next_url + i + 1) % n  # next time, start with another node
            return None
        return "; ".join(errors)

    def _open(self, url: str) -> None:
        conn = pika.BlockingConnection(self._params(url))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=self.cfg.prefetch)
        queues: list[tuple[str, dict[str, object], tuple[str, ...]]] = [
            (self.cfg.queue, READINGS_ARGS, READINGS_BINDINGS)]
        if self.subscribe_status:
            queues.append((self.cfg.status_queue, STATUS_ARGS, STATUS_BINDINGS))
        self._conn, self._channel = conn, ch
        self._generation += 1
        self._buffer.clear()
        generation = self._generation
        for queue, args, keys in queues:
            ch.queue_declare(queue, durable=True, arguments=dict(args))
            for key in keys:
                ch.queue_bind(queue, EXCHANGE, routing_key=key)

            def on_message(_ch: BlockingChannel, method: Basic.Deliver, _props: BasicProperties, body: bytes,
                           gen: int = generation) -> None:
                self._buffer.append(Message(routing_key_to_topic(method.routing_key or ""), bytes(body),
                                            Token(gen, int(method.delivery_tag or 0)), bool(method.redelivered)))

            ch.basic_consume(queue, on_message, auto_ack=False, consumer_tag=f"{self.name}:{queue}")
        self._connects += 1
        self._backoff = 0.5
        if self.publishes_lost > self._lost_reported:
            log.warning("%s: %d answers (device acks, fleet state) were not sent while disconnected; devices "
                        "send those readings again and get `duplicate`", self.name,
                        self.publishes_lost - self._lost_reported)
            self._lost_reported = self.publishes_lost
        self.url = url
        log.info("%s consuming %s from %s", self.name, ", ".join(q for q, _, _ in queues), redacted(url))

    def _pump(self, time_limit: float) -> None:
        assert self._conn is not None
        self._conn.process_data_events(time_limit=time_limit)

    def _lost(self, exc: BaseException) -> None:
        log.warning("%s: connection to %s lost (%s: %s); its unacknowledged deliveries go to another worker, "
                    "reconnecting", self.name, redacted(self.url or "?"), type(exc).__name__, exc)
        self.stop()
        self._retry_at = 0.0

    def _reconnect(self, deadline: float) -> bool:
        """One round over the nodes when it is time for one; waits (up to `deadline`) otherwise."""
        now = time.monotonic()
        if now < self._retry_at:
            time.sleep(max(0.0, min(self._retry_at, deadline) - now))
            if time.monotonic() < self._retry_at:
                return False
        err = self._connect_round()
        if err is None:
            return True
        log.error("%s: no AMQP node answered (%s); trying again in %.1fs", self.name, err, self._backoff)
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.cfg.reconnect_max_s)
        return False

