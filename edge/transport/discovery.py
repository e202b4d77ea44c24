"""Home Assistant MQTT discovery as typed models (keys as in HA's MQTT sensor and discovery docs).

Three sensors per meter, one device block: the meter value (water, total_increasing, m³), the status of
the last reading, and the outbox depth (diagnostic). All are available while `meters/{id}/status` says
`online`. The value sensor reads the reading topic through a template that keeps the previous state for
any reading that is not `ok`, so a suspect or error reading never moves HA's total (HA gives MQTT value
templates the entity's own state as `this`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract import topics

MANUFACTURER = "meter-reader"
MODEL = "camera water meter reader"
COMPONENT = "sensor"

# ok → the value; anything else → the state HA already has ("None" = unknown when it has none yet).
VALUE_TEMPLATE = (
    "{% if value_json.status == 'ok' and value_json.value is not none %}{{ value_json.value | float }}"
    "{% elif this is defined and this.state not in ('unknown', 'unavailable', '') %}{{ this.state }}"
    "{% else %}None{% endif %}"
)
STATUS_TEMPLATE = "{{ value_json.status }}"
READING_ATTRIBUTES_TEMPLATE = (
    "{{ {'seq': value_json.seq, 'taken_at': value_json.taken_at, 'status': value_json.status, "
    "'reason': value_json.reason, 'read_value': value_json.value, 'confidence': value_json.confidence} "
    "| tojson }}"
)
DEPTH_TEMPLATE = "{{ value_json.outbox_depth }}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceInfo(_Model):
    """HA's `device` block: one per meter, so its entities group under one device."""

    identifiers: list[str] = Field(min_length=1)
    name: str
    manufacturer: str = MANUFACTURER
    model: str = MODEL
    sw_version: str


class Origin(_Model):
    name: str = "meter-reader edge agent"
    sw_version: str


class SensorConfig(_Model):
    """The config of one MQTT sensor; `unique_id` is required because it has a device."""

    name: str | None
    unique_id: str = Field(min_length=1)
    state_topic: str
    value_template: str
    availability_topic: str
    payload_available: str = "online"
    payload_not_available: str = "offline"
    device: DeviceInfo
    origin: Origin
    qos: Literal[0, 1] = 1
    device_class: str | None = None
    state_class: Literal["measurement", "total", "total_increasing"] | None = None
    unit_of_measurement: str | None = None
    suggested_display_precision: int | None = None
    options: list[str] | None = None
    entity_category: Literal["diagnostic", "config"] | None = None
    json_attributes_topic: str | None = None
    json_attributes_template: str | None = None
    icon: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SensorConfig:
        if self.device_class == "water" and self.unit_of_measurement not in ("m³", "L", "gal", "ft³", "CCF"):
            raise ValueError("a water sensor needs a volume unit")
        if self.device_class == "enum" and not self.options:
            raise ValueError("an enum sensor needs options")
        return self

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")


def discovery_messages(device_id: str, *, version: str, name: str | None = None) -> dict[str, SensorConfig]:
    """topic → config for every entity of this meter (publish retained, QoS 1)."""
    device = DeviceInfo(identifiers=[f"meter-reader-{device_id}"], name=name or f"Water meter {device_id}",
                        sw_version=version)
    origin = Origin(sw_version=version)
    common = {"availability_topic": topics.status(device_id), "device": device, "origin": origin}
    reading = topics.reading(device_id)
    sensors = {
        "value": SensorConfig(
            name=None,  # the device's name: "Water meter X"
            unique_id=f"{device_id}_value", state_topic=reading, value_template=VALUE_TEMPLATE,
            device_class="water", state_class="total_increasing", unit_of_measurement="m³",
            suggested_display_precision=3, json_attributes_topic=reading,
            json_attributes_template=READING_ATTRIBUTES_TEMPLATE, **common),
        "reading_status": SensorConfig(
            name="Reading status", unique_id=f"{device_id}_reading_status", state_topic=reading,
            value_template=STATUS_TEMPLATE, device_class="enum", options=["ok", "suspect", "error"],
            icon="mdi:check-decagram", **common),
        "outbox_depth": SensorConfig(
            name="Readings not yet delivered", unique_id=f"{device_id}_outbox_depth",
            state_topic=topics.telemetry(device_id), value_template=DEPTH_TEMPLATE, qos=0,
            state_class="measurement", entity_category="diagnostic", icon="mdi:tray-full", **common),
    }
    return {topics.ha_config(COMPONENT, device_id, obj): cfg for obj, cfg in sensors.items()}


HA_STATUS_TOPIC = f"{topics.HA_DISCOVERY_PREFIX}/status"
