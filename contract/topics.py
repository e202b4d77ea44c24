"""MQTT topic names of contract v1, built and parsed in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEVICE_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_DEVICE_ID_RE = re.compile(rf"^{DEVICE_ID_PATTERN}$")

METERS = "meters"
BRIDGE = "bridge"
HA_DISCOVERY_PREFIX = "homeassistant"

# What a device publishes under meters/{id}/...
READING = "reading"
STATUS = "status"
TELEMETRY = "telemetry"
# For Home Assistant: the latest accepted value, retained, only ever moving forward.
STATE = "state"
# What others publish to it.
ACK = "ack"
CMD = "cmd"
COMMANDS = ("capture", "reload", "set-value")
# The device's answer to a command: meters/{id}/cmd/{name}/result (outside `cmd/+`, which it reads).
CMD_RESULT = "result"

BRIDGE_FLEET = f"{BRIDGE}/fleet"
BRIDGE_DEADLETTER = f"{BRIDGE}/deadletter"
BRIDGE_SHARED_GROUP = "bridge"
# Home Assistant's birth/last-will topic: `online` when it (re)starts.
HA_STATUS = f"{HA_DISCOVERY_PREFIX}/status"


def is_valid_device_id(device_id: str) -> bool:
    """A device id becomes a topic level, a broker user, a client id and an HA object id."""
    return bool(_DEVICE_ID_RE.match(device_id))


def _check(device_id: str) -> str:
    if not is_valid_device_id(device_id):
        raise ValueError(f"device id {device_id!r} does not match {DEVICE_ID_PATTERN}")
    return device_id


def reading(device_id: str) -> str:
    return f"{METERS}/{_check(device_id)}/{READING}"


def status(device_id: str) -> str:
    return f"{METERS}/{_check(device_id)}/{STATUS}"


def telemetry(device_id: str) -> str:
    return f"{METERS}/{_check(device_id)}/{TELEMETRY}"


def ack(device_id: str) -> str:
    return f"{METERS}/{_check(device_id)}/{ACK}"


def cmd(device_id: str, name: str) -> str:
    return f"{METERS}/{_check(device_id)}/{CMD}/{name}"


def cmd_result(device_id: str, name: str) -> str:
    return f"{METERS}/{_check(device_id)}/{CMD}/{name}/{CMD_RESULT}"


def state(device_id: str) -> str:
    return f"{METERS}/{_check(device_id)}/{STATE}"


def cmd_wildcard(device_id: str) -> str:
    return f"{METERS}/{_check(device_id)}/{CMD}/+"


def device_state(device_id: str) -> str:
    return f"{BRIDGE}/devices/{_check(device_id)}/state"


def shared_readings(group: str = BRIDGE_SHARED_GROUP) -> str:
    """The subscription N bridge workers share, so each reading reaches one of them."""
    return f"$share/{group}/{METERS}/+/{READING}"


ALL_READINGS = f"{METERS}/+/{READING}"
ALL_STATUS = f"{METERS}/+/{STATUS}"
ALL_TELEMETRY = f"{METERS}/+/{TELEMETRY}"


def ha_config(component: str, device_id: str, object_id: str) -> str:
    return f"{HA_DISCOVERY_PREFIX}/{component}/{_check(device_id)}/{object_id}/config"


# The Home Assistant entities a device announces, (component, object id): edge/transport/discovery.py
# builds their configs (a test keeps the two the same). The bridge needs the list where it cannot ask the
# broker for them: RabbitMQ 3.x delivers no retained message to a wildcard subscription, so `devices
# retire` clears these topics by name.
HA_ENTITIES: tuple[tuple[str, str], ...] = (
    ("binary_sensor", "problem"), ("button", "capture"), ("button", "reload"), ("sensor", "cpu_temperature"),
    ("sensor", "flow"), ("sensor", "free_disk"), ("sensor", "last_error"), ("sensor", "last_reading"),
    ("sensor", "model"), ("sensor", "outbox_depth"), ("sensor", "reading_status"), ("sensor", "uptime"),
    ("sensor", "value"))


def device_retained(device_id: str) -> list[str]:
    """What stays retained for a device apart from its HA discovery configs: its status (and last will),
    telemetry, state, and the bridge's dashboard state of it. Retiring a device clears these."""
    return [status(device_id), telemetry(device_id), state(device_id), device_state(device_id)]


def ha_configs(device_id: str) -> list[str]:
    """Every discovery config topic of HA_ENTITIES for this device."""
    return [ha_config(component, device_id, object_id) for component, object_id in HA_ENTITIES]


@dataclass(frozen=True)
class DeviceTopic:
    """A parsed `meters/{device_id}/{kind}[/{name}]` topic."""

    device_id: str
    kind: str
    name: str | None = None


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """Parse a device topic; None for anything that is not one (wrong root, bad id, unknown kind)."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != METERS or not is_valid_device_id(parts[1]):
        return None
    device_id, kind = parts[1], parts[2]
    if kind == CMD and len(parts) == 4 and parts[3]:
        return DeviceTopic(device_id, kind, parts[3])
    if len(parts) == 3 and kind in (READING, STATUS, TELEMETRY, ACK):
        return DeviceTopic(device_id, kind)
    return None
