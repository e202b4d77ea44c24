"""The bridge's config: `config/bridge.toml` overridden by `BRIDGE_*` variables (nested with `__`).

One small model per section; unknown keys are an error (contract.settings.Section), so a typo fails at
start. Secrets (broker password, API tokens) are read from files named here, never written in the TOML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from cloud_bridge.settlement.settings import SettlementSection
from cloud_bridge.submission.settings import SubmissionSection
from cloud_bridge.web.settings import WebSection
from contract.settings import ConfigError, Section, TomlEnvSettings, load_settings

DEFAULT_CONFIG = Path("config/bridge.toml")

SourceName = Literal["mqtt", "amqp"]
SOURCE_NAMES: tuple[str, ...] = get_args(SourceName)
# How far ahead of the bridge's clock a reading's taken_at may lie (ingest.max_clock_skew_s).
DEFAULT_MAX_CLOCK_SKEW_S = 300.0

__all__ = ["BridgeConfig", "ConfigError", "load_bridge_config"]


class MqttSection(Section):
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(None, description="Broker user; none: connect without credentials (loopback).")
    password_file: str | None = Field(None, description="File with the bridge's broker password.")
    ca_file: str | None = Field(None, description="CA certificate; set: connect with TLS.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive.")
    client_id_prefix: str = Field(
        "bridge", pattern=r"^[A-Za-z0-9_-]{1,40}$",
        description="Worker i connects as `<prefix>-<i>`: the same id across restarts keeps its session.")
    session_expiry_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long the broker keeps a stopped worker's session and queue.")
    shared_group: str = Field("bridge", pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Shared subscription group.")


class AmqpSection(Section):
    """The fleet broker's AMQP side (`ingest.source = "amqp"`): a RabbitMQ cluster whose MQTT plugin
    routes meters/X/reading to the routing key meters.X.reading on amq.topic (deploy/rabbitmq/)."""

    urls: list[str] = Field(
        default_factory=lambda: ["amqp://127.0.0.1:5672/"], min_length=1,
        description="Every node's AMQP URL (amqp://host:port/vhost, amqps:// with TLS); a worker uses the first "
        "that answers and moves on to the next when its node goes away.")
    username: str | None = Field(None, description="The bridge's broker user; none: the URL's (or guest, loopback).")
    password_file: str | None = Field(None, description="File with that user's password.")
    ca_file: str | None = Field(None, description="CA certificate for amqps:// URLs.")
    queue: str = Field("bridge.readings", pattern=r"^[A-Za-z0-9_.-]{1,200}$",
                       description="Quorum queue bound to amq.topic with meters.*.reading; workers compete on it.")
    status_queue: str = Field(
        "bridge.device-status", pattern=r"^[A-Za-z0-9_.-]{1,200}$",
        description="Quorum queue (single active consumer) with meters.*.status and meters.*.telemetry.")
    prefetch: int = Field(500, ge=1, le=65535,
                          description="Unacknowledged messages a worker may hold (at least ingest.batch_size).")
    heartbeat_s: int = Field(30, ge=0, le=600, description="AMQP heartbeat; 0: none.")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="Longest wait between reconnect rounds.")

    @field_validator("urls")
    @classmethod
    def _amqp_urls(cls, v: list[str]) -> list[str]:
        bad = [u for u in v if not u.startswith(("amqp://", "amqps://"))]
        if bad:
            raise ValueError(f"not an AMQP URL: {', '.join(bad)} (amqp://HOST:PORT/ or amqps://HOST:PORT/)")
        return v


class BillingSection(Section):
    url: str = Field("http://127.0.0.1:8080", description="Billing API base URL.")
    token_file: str | None = Field(None, description="File with the billing API bearer token.")


class LoyaltySection(Section):
    url: str = Field("http://127.0.0.1:8080", description="Loyalty API base URL.")
    token_file: str | None = Field(None, description="File with the loyalty API bearer token.")
    points: int = Field(10, ge=0, description="Points credited per accepted submission.")


class WindowSection(Section):
    start_day: int = Field(15, ge=1, le=28, description="Submission window opens on this day of the period.")
    end_day: int = Field(3, ge=1, le=28, description="... and closes at the end of this day of the next month.")
    timezone: str = Field("Europe/Moscow", description="The utility's time zone (periods are its months).")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name like Europe/Moscow)") from None
        return v


class BrokerSection(Section):
    kind: Literal["mosquitto", "rabbitmq"] = Field(
        "mosquitto", description="Where device accounts live: `mosquitto` (dynamic security, reached over MQTT at "
        "mqtt.host/mqtt.port) or `rabbitmq` (users and topic permissions through the management API at "
        "broker.management_url; docs/operate-city-scale.md).")
    management_url: str = Field(
        "http://127.0.0.1:15672", pattern=r"^https?://\S+$",
        description="RabbitMQ's management API (broker.kind = rabbitmq), reached with the admin account.")
    management_ca_file: str | None = Field(None, description="CA certificate for an https:// management_url.")
    vhost: str = Field("/", min_length=1, max_length=100, description="RabbitMQ vhost of the devices and the bridge.")
    mqtt_nodes: list[str] = Field(
        default_factory=list,
        description="RabbitMQ: every node's MQTT listener as HOST:PORT (TLS when mqtt.ca_file is set). RabbitMQ keeps "
        "retained messages per node, so `devices retire` clears a device's retained topics on each of these. Empty: "
        "the listeners the management API reports, reached at the node's host name (rabbit@HOST).")
    admin_username: str = Field(
        "broker-admin", description="The broker's admin account that `devices add` and `accounts …` manage "
        "accounts with (Mosquitto: dynamic security at mqtt.host/mqtt.port; RabbitMQ: an administrator user "
        "of the management API).")
    admin_password_file: Path | None = Field(
        None, description="File (mode 600) with the admin account's password, written by `meter-bridge broker init`.")
    password_file: Path = Field(
        Path("state/broker/passwd"),
        description="Unused since accounts live in the broker's dynamic security (docs/decisions.md); kept so "
        "older configs load.")
    acl_file: Path = Field(
        Path("state/broker/acl"),
        description="Unused since accounts live in the broker's dynamic security (docs/decisions.md); kept so "
        "older configs load.")


    @field_validator("mqtt_nodes")
    @classmethod
    def _host_ports(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+:[0-9]{1,5}", n)]
        if bad:
            raise ValueError(f"not HOST:PORT: {', '.join(bad)} (e.g. mq1:8883)")
        return v


class CommandsSection(Section):
    username: str | None = Field(
        None, description="Broker account (role operator) `meter-bridge cmd` sends commands with; it connects "
        "with this name as client id (`meter-bridge accounts add NAME --role operator`) to mqtt.host/mqtt.port, "
        "over MQTT 5 on Mosquitto and MQTT 3.1.1 on RabbitMQ (broker.kind).")
    password_file: str | None = Field(None, description="File (mode 600) with that account's password.")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="How long `cmd` waits for the device's answer.")


class IngestSection(Section):
    source: SourceName = Field(
        "mqtt", description="Where workers take readings from: `mqtt` (a shared subscription on one broker, e.g. "
        "Mosquitto) or `amqp` (a quorum queue on a RabbitMQ cluster). `run --source` overrides it.")
    batch_size: int = Field(200, ge=1, le=10_000, description="Most readings committed in one transaction.")
    batch_ms: float = Field(5.0, ge=0, le=10_000, description="Longest wait to fill a batch before committing.")
    workers: int = Field(1, ge=1, le=64, description="Default for `run --workers`.")
    keep_refused_payload: bool = Field(True, description="Keep the refused payload (up to 16 KiB) for replay.")
    max_clock_skew_s: float = Field(
        DEFAULT_MAX_CLOCK_SKEW_S, ge=0, le=86_400,
        description="A reading whose taken_at lies more than this many seconds ahead of the bridge's clock is "
        "refused as `future_time` (kept in the refusals, dead-lettered, the device told `rejected`): a reading "
        "dated in the future could land in the wrong billing window. Older readings are never refused.")


class FleetSection(Section):
    device_interval_s: float = Field(3600.0, gt=0, description="How often devices are expected to read.")
    stale_factor: float = Field(2.0, ge=1, description="Stale: no reading for stale_factor x device_interval_s.")
    publish_every_s: float = Field(2.0, gt=0, description="Debounce: changed device states published this often.")
    sweep_every_s: float = Field(60.0, gt=0, description="Full recount of bridge/fleet and stale devices.")


class MetricsSection(Section):
    host: str = Field("127.0.0.1", description="Where `meter-bridge run` serves /metrics and /healthz "
                      "(loopback: put a proxy or Prometheus on the same host).")
    port: int = Field(9464, ge=0, le=65535, description="Port of worker 0's /metrics and /healthz; worker i "
                      "uses port + i. 0: no metrics listener.")


class BridgeConfig(TomlEnvSettings):
    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", case_sensitive=False)

    database_url: str = Field(
        "sqlite:///state/bridge.db",
        description="SQLAlchemy URL: sqlite:///PATH (default) or postgresql+psycopg://user@host/db.")
    mqtt: MqttSection = Field(default_factory=MqttSection)  # type: ignore[arg-type]
    amqp: AmqpSection = Field(default_factory=AmqpSection)  # type: ignore[arg-type]
    billing: BillingSection = Field(default_factory=BillingSection)  # type: ignore[arg-type]
    loyalty: LoyaltySection = Field(default_factory=LoyaltySection)  # type: ignore[arg-type]
    window: WindowSection = Field(default_factory=WindowSection)  # type: ignore[arg-type]
    broker: BrokerSection = Field(default_factory=BrokerSection)  # type: ignore[arg-type]
    ingest: IngestSection = Field(default_factory=IngestSection)  # type: ignore[arg-type]
    commands: CommandsSection = Field(default_factory=CommandsSection)  # type: ignore[arg-type]
    fleet: FleetSection = Field(default_factory=FleetSection)  # type: ignore[arg-type]
    submission: SubmissionSection = Field(default_factory=SubmissionSection)  # type: ignore[arg-type]
    web: WebSection = Field(default_factory=WebSection)  # type: ignore[arg-type]
    metrics: MetricsSection = Field(default_factory=MetricsSection)  # type: ignore[arg-type]
    settlement: SettlementSection = Field(default_factory=SettlementSection)  # type: ignore[arg-type]

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql+psycopg://", "postgresql://")):
            raise ValueError("use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        return v

    @model_validator(mode="after")
    def _password_needs_user(self) -> BridgeConfig:
        if self.mqtt.password_file and not self.mqtt.username:
            raise ValueError("mqtt.password_file is set but mqtt.username is not")
        if self.amqp.password_file and not self.amqp.username:
            raise ValueError("amqp.password_file is set but amqp.username is not")
        return self


def load_bridge_config(path: Path | None = None) -> BridgeConfig:
    """Load the config from `path` (default config/bridge.toml when it exists) and the environment."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_settings(BridgeConfig, path, "BRIDGE_")
