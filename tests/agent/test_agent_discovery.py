"""Home Assistant discovery payloads: the keys HA's MQTT sensor, binary_sensor and button read, validated
models, and templates rendered with Jinja2 as HA would, on the device's real state and telemetry payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from contract.payloads import MeterState, Reading
from edge.transport.commands import Command, parse_command
from edge.transport.discovery import (
    DEPTH_TEMPLATE,
    STATUS_TEMPLATE,
    VALUE_TEMPLATE,
    DeviceInfo,
    Origin,
    SensorConfig,
    discovery_messages,
    removal_topics,
)
from edge.transport.telemetry import build_telemetry

jinja2 = pytest.importorskip("jinja2")

OBJECTS = {
    "sensor": ["value", "reading_status", "last_reading", "flow", "last_error", "cpu_temperature", "free_disk",
               "uptime", "model", "outbox_depth"],
    "binary_sensor": ["problem"],
    "button": ["capture", "reload"],
}


def render(template: str, payload: dict[str, Any], this_state: str | None = None) -> str:
    """HA passes the entity's own state as `this`; None here: `this` not passed at all."""
    env = jinja2.Environment()
    extra = {"this": SimpleNamespace(state=this_state)} if this_state is not None else {}
    return env.from_string(template).render(value_json=payload, **extra).strip()


def docs_of(device_id: str = "flat-12", **kw: Any) -> dict[str, dict[str, Any]]:
    msgs = discovery_messages(device_id, version="1.2.3", **kw)
    return {t.split("/")[3]: json.loads(c.to_json_bytes()) for t, c in msgs.items()}


def test_every_entity_on_its_topic_with_one_device_block() -> None:
    msgs = discovery_messages("flat-12", version="1.2.3")
    assert sorted(msgs) == sorted(f"homeassistant/{c}/flat-12/{o}/config" for c, objs in OBJECTS.items() for o in objs)
    docs = {t.split("/")[3]: json.loads(c.to_json_bytes()) for t, c in msgs.items()}
    for obj, doc in docs.items():
        assert doc["availability_topic"] == "meters/flat-12/status"
        assert (doc["payload_available"], doc["payload_not_available"]) == ("online", "offline")
        assert doc["device"] == {"identifiers": ["meter-reader-flat-12"], "name": "Water meter flat-12",
                                 "manufacturer": "meter-reader", "model": "camera water meter reader",
                                 "sw_version": "1.2.3"}
        assert doc["origin"]["sw_version"] == "1.2.3"
        assert doc["unique_id"] == f"meter_reader_flat-12_{obj}"
        assert "name" in doc
        assert [k for k, v in doc.items() if v is None and k != "name"] == [], "unset keys are left out"
    value = docs["value"]
    assert value["name"] is None, "null reaches HA, which then names the entity after the device"
    assert all(isinstance(d["name"], str) and d["name"] for o, d in docs.items() if o != "value")
    assert value["device_class"] == "water" and value["state_class"] == "total_increasing"
    assert value["unit_of_measurement"] == "m³" and value["state_topic"] == "meters/flat-12/state"
    for obj in ("reading_status", "problem", "last_reading", "flow"):
        assert docs[obj]["state_topic"] == "meters/flat-12/state", obj
    assert docs["reading_status"]["options"] == ["ok", "suspect", "error"]
    assert docs["problem"]["device_class"] == "problem"
    assert docs["last_reading"]["device_class"] == "timestamp" and "unit_of_measurement" not in docs["last_reading"]
    assert (docs["flow"]["device_class"], docs["flow"]["unit_of_measurement"]) == ("volume_flow_rate", "m³/h")
    for obj in ("last_error", "cpu_temperature", "free_disk", "uptime", "model", "outbox_depth"):
        assert docs[obj]["entity_category"] == "diagnostic", obj
        assert docs[obj]["state_topic"] == "meters/flat-12/telemetry", obj
    assert docs["reload"]["entity_category"] == "config"
    assert "entity_category" not in docs["capture"]
    assert "meters/flat-12/reading" not in json.dumps(docs), "nothing reads the republished reading stream"


def test_buttons_send_commands_the_agent_accepts() -> None:
    docs = docs_of("flat-12")
    for name in ("capture", "reload"):
        doc = docs[name]
        assert doc["command_topic"] == f"meters/flat-12/cmd/{name}" and doc["retain"] is False
        parsed = parse_command("flat-12", doc["command_topic"], doc["payload_press"].encode(), retained=False)
        assert parsed == Command(name), parsed


def test_name_and_configuration_url_reach_the_device_block() -> None:
    docs = docs_of("flat-12", name="Kitchen water", configuration_url="http://flat-12.local:8080/")
    assert docs["value"]["device"]["name"] == "Kitchen water"
    assert all(d["device"]["configuration_url"] == "http://flat-12.local:8080/" for d in docs.values())
    with pytest.raises(ValidationError):
        DeviceInfo(identifiers=["a"], name="x", sw_version="1", configuration_url="javascript:alert(1)")


def test_removal_covers_every_discovery_topic() -> None:
    assert removal_topics("flat-12") == sorted(discovery_messages("flat-12", version="x"))
    # the bridge clears the same topics by name when it retires a device on RabbitMQ (no wildcards there)
    from contract import topics

    assert sorted(topics.ha_configs("flat-12")) == removal_topics("flat-12")


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
    with pytest.raises(ValidationError, match="flow unit"):
        SensorConfig(name="n", unique_id="u", device_class="volume_flow_rate", unit_of_measurement="m³", **common)
    with pytest.raises(ValidationError, match="timestamp"):
        SensorConfig(name="n", unique_id="u", device_class="timestamp", state_class="measurement", **common)
    with pytest.raises(ValidationError):
        SensorConfig(name="n", unique_id="u", bogus_key=1, **common)  # type: ignore[call-arg]


# ---------------------------------------------------------------- templates on real payloads
def state_payload(**kw: Any) -> dict[str, Any]:
    return json.loads(MeterState(device_id="flat-12", **kw).to_json_bytes())


T0 = datetime(2026, 11, 24, 17, tzinfo=UTC)


@pytest.mark.parametrize(("state", "this_state", "expected"), [
    ({"seq": 7, "value": "00123.456", "status": "ok"}, "123.4", "123.456"),
    ({"seq": 7, "value": "00123.456", "status": "ok"}, None, "123.456"),
    # a suspect or error newest reading leaves the accepted value where it was
    ({"seq": 8, "value": "00123.456", "status": "suspect", "reason": "rate", "read_value": "00999.000"},
     "123.456", "123.456"),
    ({"seq": 9, "value": "00123.456", "status": "error", "reason": "alignment failed"}, "123.456", "123.456"),
    # nothing accepted yet: HA keeps what it has, else unknown
    ({"seq": 1, "status": "suspect", "reason": "decrease", "read_value": "00001.000"}, "unknown", "None"),
    ({"seq": 1, "status": "suspect", "reason": "decrease", "read_value": "00001.000"}, None, "None"),
    ({"seq": 0}, "unavailable", "None"),
])
def test_value_template_shows_the_accepted_value(state: dict[str, Any], this_state: str | None,
                                                 expected: str) -> None:
    assert render(VALUE_TEMPLATE, state_payload(**state), this_state) == expected


def test_state_entities_render_from_the_state_payload() -> None:
    docs = docs_of("flat-12")
    ok = state_payload(seq=5, value="00123.456", value_seq=5, value_at=T0, taken_at=T0, status="ok",
                       confidence=0.97, read_value="00123.456", flow_m3_per_h=0.012)
    bad = state_payload(seq=6, value="00123.456", value_seq=5, value_at=T0, taken_at=T0, status="error",
                        reason="alignment failed", confidence=0.0)
    empty = state_payload(seq=0)
    assert render(docs["reading_status"]["value_template"], ok) == "ok"
    assert render(docs["reading_status"]["value_template"], empty) == "None"
    assert [render(docs["problem"]["value_template"], p) for p in (ok, bad, empty)] == ["OFF", "ON", "None"]
    assert json.loads(render(docs["problem"]["json_attributes_template"], bad)) == {
        "reason": "alignment failed", "seq": 6}
    stamp = render(docs["last_reading"]["value_template"], ok)
    assert datetime.fromisoformat(stamp) == T0, "an ISO 8601 time with its zone, as HA's timestamp sensor needs"
    assert render(docs["last_reading"]["value_template"], empty) == "None"
    assert float(render(docs["flow"]["value_template"], ok)) == 0.012
    assert render(docs["flow"]["value_template"], empty) == "None"
    attrs = json.loads(render(docs["value"]["json_attributes_template"], ok))
    assert attrs["value_seq"] == 5 and attrs["last_status"] == "ok" and attrs["value_at"] == "2026-11-24T17:00:00Z"


def test_diagnostics_render_from_real_telemetry(tmp_path: Path) -> None:
    docs = docs_of("flat-12")
    tele = json.loads(build_telemetry(
        uptime_s=3725.4, outbox_depth=3, outbox_dropped=0, last_error="x" * 400, state_dir=tmp_path,
        disk_full=False, model="digits-int8-v3", version="1.2.3", last_seq=9, commands_refused=0).to_json_bytes())
    assert render(DEPTH_TEMPLATE, tele) == "3"
    assert render(docs["last_error"]["value_template"], tele) == "x" * 255, "HA refuses states over 255 characters"
    assert render(docs["last_error"]["value_template"], {**tele, "last_error": None}) == "none"
    assert render(docs["uptime"]["value_template"], tele) == "3725"
    assert render(docs["model"]["value_template"], tele) == "digits-int8-v3"
    free = render(docs["free_disk"]["value_template"], tele)
    assert float(free) == round(tele["free_disk_bytes"] / 1e6, 1)
    assert render(docs["free_disk"]["value_template"], {**tele, "free_disk_bytes": None}) == "None"
    assert render(docs["cpu_temperature"]["value_template"], {**tele, "cpu_temp_c": 48.3}) == "48.3"
    assert render(docs["cpu_temperature"]["value_template"], {**tele, "cpu_temp_c": None}) == "None"


def test_status_template_on_a_reading_shaped_payload() -> None:
    r = Reading(device_id="flat-12", seq=1, taken_at=T0, value=None, status="error", reason="x", confidence=0.0)
    assert render(STATUS_TEMPLATE, json.loads(r.to_json_bytes())) == "error"
