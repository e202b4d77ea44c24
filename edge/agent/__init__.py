"""The device agent (`meter-edge run`): schedule, durable outbox, MQTT, Home Assistant discovery, systemd."""

from edge.agent.cli import run
from edge.agent.core import Agent, EndOfSource, Reader, ReaderFactory, ReadResult

__all__ = ["Agent", "EndOfSource", "ReadResult", "Reader", "ReaderFactory", "run"]
