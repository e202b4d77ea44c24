"""The device's config: `config/edge.toml` overridden by `EDGE_*` variables (nested with `__`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contract.settings import ConfigError, Section, TomlEnvSettings, load_settings
from contract.topics import DEVICE_ID_PATTERN

DEFAULT_CONFIG = Path("config/edge.toml")

__all__ = ["ConfigError", "EdgeConfig", "load_edge_config"]


class CaptureConfig(Section):
    backend: Literal["picamera2", "opencv", "folder", "simulator"] = Field(
        "simulator", description="Where frames come from.")
    source: str = Field(
        "", description="opencv: device index or path; folder: a folder of frames; simulator: a seed.")
    loop: bool = Field(False, description="folder: start over at the end instead of stopping.")
    width: int = Field(1280, ge=64, le=8192, description="Capture width (picamera2/opencv).")
    height: int = Field(960, ge=64, le=8192, description="Capture height (picamera2/opencv).")
    sim_start: str = Field(
        "", description="simulator: UTC time of the first frame (ISO 8601); empty: 30 days ago, rounded down to "
            "the hour (frames are an hour apart by default; readings more than a day ahead are refused).")
    sim_step_s: float = Field(3600.0, gt=0, description="simulator: simulated seconds between two frames.")
    sim_faults: Literal["default", "none", "heavy"] = Field(
        "default", description="simulator: camera fault mix (default: about a fifth of the frames).")


class LedConfig(Section):
    pin: int = Field(0, ge=0, le=40, description="BCM pin of the flash LED; 0: no LED.")
    warmup_s: float = Field(0.3, ge=0, le=10, description="Seconds the LED is on before the capture.")


class MqttConfig(Section):
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(None, description="Broker user (default: none, or device_id with a password).")
    password_file: str | None = Field(
        None, description="File with the broker password ($CREDENTIALS_DIRECTORY-relative under systemd).")
    ca_file: str | None = Field(None, description="CA certificate; set: connect with TLS.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive.")
    max_inflight: int = Field(20, ge=1, le=1000, description="Readings in flight while draining the outbox.")
    reconnect_min_s: int = Field(1, ge=1, le=600, description="First reconnect delay; doubles up to the max.")
    reconnect_max_s: int = Field(60, ge=1, le=3600, description="Longest reconnect delay.")
    session_expiry_s: int = Field(
        3600, ge=0, le=2**32 - 1, description="MQTT 5 session expiry: the broker keeps acks/commands this long.")
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT version. 5 (Mosquitto): session expiry, and reason codes that tell a refused "
        "publish apart. 3.1.1 for a broker without MQTT 5 (RabbitMQ before 3.13): a session per connection "
        "unless mqtt.session says otherwise, and a refused publish closes the connection instead of "
        "answering 0x87 (docs/operate-city-scale.md).")
    session: Literal["auto", "persistent", "connection"] = Field(
        "auto", description="What the broker keeps between connections. persistent: the session and what "
        "arrives for the device while it is away (acks, commands; subscriptions QoS 1). connection: nothing "
        "(clean session, subscriptions QoS 0): acks and commands reach a connected device only, and the "
        "outbox sends again what the bridge has not acked. auto: persistent with MQTT 5, connection with "
        "3.1.1 (on RabbitMQ 3.10 a persistent session is a quorum queue per device, which can lose acks "
        "after a node fails, and a per-connection one is lighter: docs/operate-city-scale.md).")
    refused_backoff_s: float = Field(
        300.0, gt=0, description="Wait after the broker refused a reading as not authorised (a config error).")
    ha_discovery: bool = Field(
        True, description="Publish Home Assistant discovery configs (retained); false: remove them from HA.")
    stall_rounds: int = Field(
        3, ge=0, le=1000, description="Rounds of resends (one per ack_timeout_s) that bring back no ack at all, "
        "while connected, before the device drops the connection and connects again (a safety net for a broker "
        "that stops delivering a connected device's acks, as RabbitMQ 3.10 did with persistent sessions after a "
        "node failed: docs/operate-city-scale.md); twice as many after a reconnect that brought no ack either "
        "(up to 16 times); 0: never.")


class HaConfig(Section):
    """How the meter shows in Home Assistant (discovery itself is switched by `mqtt.ha_discovery`)."""

    name: str = Field("", max_length=100, description="The device's name in HA; empty: \"Water meter <device_id>\".")
    configuration_url: str = Field(
        "", pattern=r"^(https?://\S+)?$",
        description="The device's setup page, linked from HA's device page (http:// or https://); empty: no link.")


class ReadingConfig(Section):
    max_rate_m3_per_h: float = Field(
        3.0, gt=0, le=1000, description="Highest plausible flow; a faster rise is refused.")
    confidence_threshold: float | None = Field(
        None, ge=0, le=1, description="A wheel under this confidence is unreadable (N); empty: the model's own.")
    change_confidence: float = Field(
        0.8, ge=0, le=1, description="A wheel that changes the previous value's digit needs this confidence.")
    hysteresis_steps: int = Field(
        1, ge=0, le=100, description="A fall of up to this many lowest-wheel steps is jitter: keep the value, ok.")
    ambiguity: float = Field(
        0.15, ge=0, le=0.5, description="A wheel this close to a digit boundary also offers its neighbour.")
    confirm_change_m3: float = Field(
        0.35, gt=0, le=1000, description="A rise of more than this per hour (ordinary use stays under it) that "
                                         "moves a wheel above the lowest needs 2 frames.")
    confirm_after: int = Field(
        3, ge=1, le=1000, description="Refused frames in a row that agree before the device re-anchors (or, "
                                      "when the meter itself changed, asks for an installer).")


class EdgeConfig(TomlEnvSettings):
    model_config = SettingsConfigDict(
        env_prefix="EDGE_", env_nested_delimiter="__", extra="forbid", case_sensitive=False)

    device_id: str = Field("meter-demo", pattern=f"^{DEVICE_ID_PATTERN}$", description="This device's id.")
    state_dir: Path = Field(Path("state"), description="Outbox, previous value, folder position.")
    interval_s: float = Field(3600.0, gt=0, description="Seconds between cycles (may be fractional).")
    telemetry_interval_s: float = Field(300.0, gt=0, description="Seconds between telemetry messages.")
    ack_timeout_s: float = Field(60.0, gt=0, description="Republish a reading the bridge has not acked.")
    drain_timeout_s: float = Field(
        5.0, ge=0, description="`run --cycles N`: how long to keep publishing the backlog before exiting.")
    layout: Path = Field(Path("layout.toml"), description="Layout written by `meter-edge calibrate`.")
    model: str = Field("", description="Digit model (.tflite); empty: the bundled one.")
    capture: CaptureConfig = Field(default_factory=CaptureConfig)  # type: ignore[arg-type]
    led: LedConfig = Field(default_factory=LedConfig)  # type: ignore[arg-type]
    mqtt: MqttConfig = Field(default_factory=MqttConfig)  # type: ignore[arg-type]
    reading: ReadingConfig = Field(default_factory=ReadingConfig)  # type: ignore[arg-type]
    ha: HaConfig = Field(default_factory=HaConfig)  # type: ignore[arg-type]


def load_edge_config(path: Path | None = None) -> EdgeConfig:
    """Load the config from `path` (default config/edge.toml when it exists) and the environment."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_settings(EdgeConfig, path, "EDGE_")
