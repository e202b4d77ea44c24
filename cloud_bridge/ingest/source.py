"""Where ingest gets its messages from, behind one small interface.

One box: an MQTT shared subscription on Mosquitto (`mqtt_source.MqttSource`). A fleet: an AMQP
quorum queue on a RabbitMQ cluster bound to `amq.topic` with `meters.*.reading` (DESIGN.md, "Scaling
past one machine"). Only the source changes; the worker's rule is the same for both: a message is
acknowledged to its source only after what it caused is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """A message as received. `token` is whatever the source needs to acknowledge it."""

    topic: str  # MQTT form (meters/dev-1/reading), also for sources with other routing keys
    payload: bytes
    token: Any = field(default=None, compare=False)
    redelivered: bool = False


class MessageSource(Protocol):
    @property
    def connected(self) -> bool:
        """True while connected to the broker (`/healthz`, `meterfleet_mqtt_connected`)."""

    @property
    def connects(self) -> int:
        """How many times it connected since it was built (more than 1: it reconnected)."""

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raise SourceError with what to do when it cannot."""

    def next_batch(self, max_n: int, max_wait_s: float, timeout_s: float) -> list[Message]:
        """Block up to `timeout_s` for a first message, then gather up to `max_n` for at most `max_wait_s`."""

    def ack(self, messages: Sequence[Message]) -> None:
        """Tell the source these are done (committed); unacknowledged ones come again after a crash."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish an answer (device acks, dead letters, fleet state) on MQTT topic names."""

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and what was not acknowledged."""


class SourceError(RuntimeError):
    """The source cannot be used; the message says what to check."""
