"""Home Assistant discovery payloads: the keys HA's MQTT sensor reads, validated models, and templates
that keep a suspect reading from moving the total (rendered with Jinja2 as HA would)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from edge.transport.discovery import (
    DEPTH_TEMPLATE,
    STATUS_TEMPLATE,
    VALUE_TEMPLATE,
    DeviceInfo,
    Origin,
    SensorConfig,
    discovery_messages,
)

jinja2 = pytest.importorskip("jinja2")


def render(template: str, payload: dict[str, Any], this_state: str | None) -> str:
    """HA passes the entity's own state as `this`; None here: `this` not passed at all."""
    env = jinja2.Environment()
    extra = {"this": SimpleNamespace(state=this_state)} if this_state is not None else {}
    return env.from_string(template).render(value_json=payload, **extra).strip()


def test_three_sensors_with_one_device_block() -> None:
    msgs = discovery_messages("flat-12", version="1.2.3")
    assert sorted(msgs) == [f"homeassistant/sensor/flat-12/{o}/config" for o in
                            ("outbox_depth", "reading_status", "value")]
    docs = {t.split("/")[3]: json.loads(c.to_json_bytes()) for t, c in msgs.items()}
    value = docs["value"]
    assert value["device_class"] == "water" and value["state_class"] == "total_increasing"
    assert value["unit_of_measurement"] == "m³"
    assert value["state_topic"] == "meters/flat-12/reading"
    for doc in docs.values():
        assert doc["availability_topic"] == "meters/flat-12/status"
        assert (doc["payload_available"], doc["payload_not_available"]) == ("online", "offline")
        assert doc["device"] == {"identifiers": ["meter-reader-flat-12"], "name": "Water meter flat-12",
                                 "manufacturer": "meter-reader", "model": "camera water meter reader",
                                 "sw_version": "1.2.3"}
        assert doc["unique_id"].startswith("flat-12_")
        assert None not in doc.values(), "unset keys are left out, not sent as null"
    assert len({d["unique_id"] for d in docs.values()}) == 3
    assert docs["reading_status"]["options"] == ["ok", "suspect", "error"]
    assert docs["outbox_depth"]["state_topic"] == "meters/flat-12/telemetry"
    assert docs["outbox_depth"]["entity_category"] == "diagnostic"


def test_models_refuse_what_ha_would_reject() -> None:
    with pytest.raises(ValidationError):
        DeviceInfo(identifiers=[], name="x", sw_version="1")
    dev = DeviceInfo(identifiers=["a"], name="x", sw_version="1")
    common: dict[str, Any] = {"state_topic": "t", "value_template": "{{ value }}", "availability_topic": "s",
                              "device": dev, "origin": Origin(sw_version="1")}
    with pytest.raises(ValidationError, match="unique_id"):
        SensorConfig(name="n", unique_id="", **common)
    with pytest.raises(ValidationError, match="volume unit"):
        SensorConfig(name="n", unique_id="u", device_class="water", unit_of_measurement="kWh", **common)
    with pytest.raises(ValidationError):
        SensorConfig(name="n", unique_id="u", bogus_key=1, **common)  # type: ignore[call-arg]


@pytest.mark.parametrize(("payload", "this_state", "expected"), [
    ({"status": "ok", "value": "00123.456"}, "123.4", "123.456"),
    ({"status": "ok", "value": "00123.456"}, None, "123.456"),
    ({"status": "suspect", "value": "00999.000", "reason": "rate"}, "123.456", "123.456"),
    ({"status": "error", "value": None, "reason": "alignment failed"}, "123.456", "123.456"),
    ({"status": "suspect", "value": "00001.000", "reason": "decrease"}, "unknown", "None"),
    ({"status": "suspect", "value": "00001.000", "reason": "decrease"}, None, "None"),
    ({"status": "error", "value": None, "reason": "x"}, "unavailable", "None"),
])
def test_value_template_never_moves_the_total_on_a_non_ok_reading(payload: dict[str, Any], this_state: str | None,
                                                                 expected: str) -> None:
    assert render(VALUE_TEMPLATE, payload, this_state) == expected


def test_status_and_depth_templates() -> None:
    assert render(STATUS_TEMPLATE, {"status": "suspect"}, None) == "suspect"
    assert render(DEPTH_TEMPLATE, {"outbox_depth": 7}, None) == "7"
