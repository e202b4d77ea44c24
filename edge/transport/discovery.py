"""Home Assistant MQTT discovery as typed models (keys as in HA's MQTT sensor, binary_sensor, button docs).

One device per meter with these entities (topics `homeassistant/<component>/<device_id>/<object_id>/config`,
published retained; the device's broker account may write exactly those):
- the water total (named after the device), the reading status, a problem binary_sensor, the time of the
  last reading and the flow rate, all from the retained state topic `meters/{id}/state`, which only ever
  moves forward (see `edge.transport.meter_state`), so HA has them at once after its own restart;
- diagnostics from the retained telemetry: last error, CPU temperature, free disk, uptime, digit model,
  readings not yet delivered;
- buttons that send the `capture` and `reload` commands.
Every entity is available while `meters/{id}/status` says `online`.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract import topics

MANUFACTURER = "meter-reader"
MODEL = "camera water meter reader"
UNIQUE_ID_PREFIX = "meter_reader"
COMPONENTS = ("sensor", "binary_sensor", "button")
HA_STATUS_TOPIC = topics.HA_STATUS

# The state topic's latest accepted value; before the first one, the state HA already has (if any).
VALUE_TEMPLATE = (
    "{% if value_json.value is not none %}{{ value_json.value | float }}"
    "{% elif this is defined and this.state not in ('unknown', 'unavailable', '') %}{{ this.state }}"
    "{% else %}None{% endif %}"
)
VALUE_ATTRIBUTES_TEMPLATE = (
    "{{ {'value_seq': value_json.value_seq, 'value_at': value_json.value_at, 'last_seq': value_json.seq, "
    "'last_status': value_json.status, 'last_read_value': value_json.read_value, "
    "'last_confidence': value_json.confidence} | tojson }}"
)
STATUS_TEMPLATE = "{{ value_json.status }}"  # null before the first reading: "None" = unknown to HA
PROBLEM_TEMPLATE = (
    "{% if value_json.status is none %}None{% elif value_json.status == 'ok' %}OFF{% else %}ON{% endif %}"
)
PROBLEM_ATTRIBUTES_TEMPLATE = "{{ {'reason': value_json.reason, 'seq': value_json.seq} | tojson }}"
LAST_READING_TEMPLATE = "{{ value_json.taken_at }}"
FLOW_TEMPLATE = "{{ value_json.flow_m3_per_h }}"
# Telemetry.
DEPTH_TEMPLATE = "{{ value_json.outbox_depth }}"
LAST_ERROR_TEMPLATE = "{{ value_json.last_error[:255] if value_json.last_error else 'none' }}"
CPU_TEMP_TEMPLATE = "{{ value_json.cpu_temp_c }}"
FREE_DISK_TEMPLATE = (
    "{% if value_json.free_disk_bytes is none %}None{% else %}"
    "{{ (value_json.free_disk_bytes / 1000000) | round(1) }}{% endif %}"
)
UPTIME_TEMPLATE = "{{ value_json.uptime_s | int }}"
MODEL_TEMPLATE = "{{ value_json.model if value_json.model else 'None' }}"

PRESS = "{}"  # what a button sends: an empty JSON object, which `capture` and `reload` accept


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceInfo(_Model):
    """HA's `device` block: one per meter, so its entities group under one device."""

    identifiers: list[str] = Field(min_length=1)
    name: str
    manufacturer: str = MANUFACTURER
    model: str = MODEL
    sw_version: str
    configuration_url: str | None = Field(default=None, pattern=r"^https?://\S+$")


class Origin(_Model):
    name: str = "meter-reader edge agent"
    sw_version: str


class _Entity(_Model):
    """What every entity has. `name: null` is sent as such: HA then names the entity after its device."""

    name: str | None
    unique_id: str = Field(min_length=1)
    availability_topic: str
    payload_available: str = "online"
    payload_not_available: str = "offline"
    device: DeviceInfo
    origin: Origin
    qos: Literal[0, 1] = 1
    entity_category: Literal["diagnostic", "config"] | None = None
    icon: str | None = None

    def to_json_bytes(self) -> bytes:
        doc = self.model_dump(mode="json", exclude_none=True)
        doc["name"] = self.name  # null is meaningful here (the device's name), not "unset"
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class SensorConfig(_Entity):
    state_topic: str
    value_template: str
    device_class: str | None = None
    state_class: Literal["measurement", "total", "total_increasing"] | None = None
    unit_of_measurement: str | None = None
    suggested_display_precision: int | None = None
    options: list[str] | None = None
    json_attributes_topic: str | None = None
    json_attributes_template: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SensorConfig:
        if self.device_class == "water" and self.unit_of_measurement not in ("m³", "L", "gal", "ft³", "CCF"):
            raise ValueError("a water sensor needs a volume unit")
        if self.device_class == "volume_flow_rate" and self.unit_of_measurement not in (
                "m³/h", "L/min", "ft³/min", "gal/min"):
            raise ValueError("a volume_flow_rate sensor needs a flow unit")
        if self.device_class == "timestamp" and (self.unit_of_measurement or self.state_class):
            raise ValueError("a timestamp sensor has no unit and no state class")
        if self.device_class == "enum" and not self.options:
            raise ValueError("an enum sensor needs options")
        return self


class BinarySensorConfig(_Entity):
    state_topic: str
    value_template: str
    device_class: str | None = None
    payload_on: str = "ON"
    payload_off: str = "OFF"
    json_attributes_topic: str | None = None
    json_attributes_template: str | None = None


class ButtonConfig(_Entity):
    command_topic: str
    payload_press: str = PRESS
    retain: Literal[False] = False  # a retained command would run again on every reconnect (and is refused)


EntityConfig = SensorConfig | BinarySensorConfig | ButtonConfig
COMPONENT_OF: dict[type[_Entity], str] = {SensorConfig: "sensor", BinarySensorConfig: "binary_sensor",
                                          ButtonConfig: "button"}


def unique_id(device_id: str, object_id: str) -> str:
    return f"{UNIQUE_ID_PREFIX}_{device_id}_{object_id}"


def discovery_messages(device_id: str, *, version: str, name: str | None = None,
                       configuration_url: str | None = None) -> dict[str, EntityConfig]:
    """topic → config for every entity of this meter (publish retained, QoS 1)."""
    device = DeviceInfo(identifiers=[f"meter-reader-{device_id}"], name=name or f"Water meter {device_id}",
                        sw_version=version, configuration_url=configuration_url or None)
    common = {"availability_topic": topics.status(device_id), "device": device, "origin": Origin(sw_version=version)}
    state, telemetry = topics.state(device_id), topics.telemetry(device_id)
    diagnostic = {"state_topic": telemetry, "qos": 0, "entity_category": "diagnostic", **common}

    def uid(object_id: str) -> str:
        return unique_id(device_id, object_id)

    entities: dict[str, EntityConfig] = {
        "value": SensorConfig(
            name=None, unique_id=uid("value"), state_topic=state, value_template=VALUE_TEMPLATE,
            device_class="water", state_class="total_increasing", unit_of_measurement="m³",
            suggested_display_precision=3, json_attributes_topic=state,
            json_attributes_template=VALUE_ATTRIBUTES_TEMPLATE, **common),
        "reading_status": SensorConfig(
            name="Reading status", unique_id=uid("reading_status"), state_topic=state,
            value_template=STATUS_TEMPLATE, device_class="enum", options=["ok", "suspect", "error"],
            icon="mdi:check-decagram", **common),
        "problem": BinarySensorConfig(
            name="Reading problem", unique_id=uid("problem"), state_topic=state, value_template=PROBLEM_TEMPLATE,
            device_class="problem", json_attributes_topic=state,
            json_attributes_template=PROBLEM_ATTRIBUTES_TEMPLATE, **common),
        "last_reading": SensorConfig(
            name="Last reading", unique_id=uid("last_reading"), state_topic=state,
            value_template=LAST_READING_TEMPLATE, device_class="timestamp", **common),
        "flow": SensorConfig(
            name="Flow rate", unique_id=uid("flow"), state_topic=state, value_template=FLOW_TEMPLATE,
            device_class="volume_flow_rate", state_class="measurement", unit_of_measurement="m³/h",
            suggested_display_precision=3, **common),
        "last_error": SensorConfig(
            name="Last error", unique_id=uid("last_error"), value_template=LAST_ERROR_TEMPLATE,
            icon="mdi:alert-circle-outline", **diagnostic),
        "cpu_temperature": SensorConfig(
            name="CPU temperature", unique_id=uid("cpu_temperature"), value_template=CPU_TEMP_TEMPLATE,
            device_class="temperature", state_class="measurement", unit_of_measurement="°C", **diagnostic),
        "free_disk": SensorConfig(
            name="Free disk", unique_id=uid("free_disk"), value_template=FREE_DISK_TEMPLATE,
            device_class="data_size", state_class="measurement", unit_of_measurement="MB", **diagnostic),
        "uptime": SensorConfig(
            name="Uptime", unique_id=uid("uptime"), value_template=UPTIME_TEMPLATE, device_class="duration",
            unit_of_measurement="s", **diagnostic),
        "model": SensorConfig(
            name="Digit model", unique_id=uid("model"), value_template=MODEL_TEMPLATE, icon="mdi:chip",
            **diagnostic),
        "outbox_depth": SensorConfig(
            name="Readings not yet delivered", unique_id=uid("outbox_depth"), value_template=DEPTH_TEMPLATE,
            state_class="measurement", icon="mdi:tray-full", **diagnostic),
        "capture": ButtonConfig(
            name="Read now", unique_id=uid("capture"), command_topic=topics.cmd(device_id, "capture"),
            icon="mdi:camera", **common),
        "reload": ButtonConfig(
            name="Reload config", unique_id=uid("reload"), command_topic=topics.cmd(device_id, "reload"),
            entity_category="config", icon="mdi:reload", **common),
    }
    return {topics.ha_config(COMPONENT_OF[type(cfg)], device_id, obj): cfg for obj, cfg in entities.items()}


def removal_topics(device_id: str) -> list[str]:
    """Every discovery topic this device may have published: an empty retained message on each removes
    the entity from HA (and the retained config from the broker)."""
    return sorted(discovery_messages(device_id, version="0"))
