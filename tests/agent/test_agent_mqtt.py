"""The agent against a real Mosquitto (the project's config): readings, acks, status, telemetry,
discovery and commands. The camera and pipeline are a scripted reader; everything else is real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentThread, edge_config

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import MeterState, Reading, Telemetry
from edge.transport.discovery import discovery_messages
from edge.transport.outbox import Outbox

pytestmark = pytest.mark.mosquitto


def test_readings_are_published_acked_and_done(broker: MosquittoBroker, tmp_path: Path,
                                               collector_factory: Any) -> None:
    col = collector_factory(broker.port, ["meters/dev-a/#", "homeassistant/#"], bridge=True)
    cfg = edge_config(tmp_path, broker.port)
    at = AgentThread(cfg, cycles=5).start()
    at.join(20)
    assert at.rc == 0
    col.wait_for(lambda: len(col.seqs()) >= 5)
    assert col.seqs() == [1, 2, 3, 4, 5]
    values = [Reading.model_validate_json(m.payload).value for m in col.on("/reading")]
    assert values == ["00100.001", "00100.002", "00100.003", "00100.004", "00100.005"]
    ob = Outbox(cfg.state_dir)
    assert ob.depth() == 0 and ob.count("done") == 5, "every reading the bridge acked is done"
    # status: online on connect, offline (retained) on a clean exit
    assert col.wait_for(lambda: [m.payload for m in col.on("/status")][-1:] == [b"offline"])
    assert col.on("/status")[0].payload == b"online"
    tele = Telemetry.model_validate_json(col.on("/telemetry")[-1].payload)
    assert tele.last_seq == 5 and tele.model == "scripted-test" and tele.version
    # HA discovery: every entity, retained, with the device block; HA's state: the last accepted value
    configs = {m.topic: json.loads(m.payload) for m in col.on("/config")}
    assert set(configs) == set(discovery_messages("dev-a", version="x"))
    value = configs["homeassistant/sensor/dev-a/value/config"]
    assert value["device_class"] == "water" and value["state_class"] == "total_increasing"
    assert value["unit_of_measurement"] == "m³" and value["availability_topic"] == "meters/dev-a/status"
    assert value["state_topic"] == "meters/dev-a/state" and value["name"] is None
    assert col.wait_for(lambda: col.on("/state") and MeterState.model_validate_json(
        col.on("/state")[-1].payload).seq == 5)
    state = MeterState.model_validate_json(col.on("/state")[-1].payload)
    assert (state.value, state.status, state.value_seq) == ("00100.005", "ok", 5)


def test_readings_the_bridge_rejects_are_done_and_counted_in_telemetry(
        broker: MosquittoBroker, tmp_path: Path, collector_factory: Any) -> None:
    """A rejected reading is not republished for ever: it is done, counted, and visible to operators."""
    col = collector_factory(broker.port, ["meters/dev-a/#"], bridge=True, ack_state="rejected")
    cfg = edge_config(tmp_path, broker.port)
    at = AgentThread(cfg, cycles=3).start()
    at.join(20)
    assert at.rc == 0
    ob = Outbox(cfg.state_dir)
    assert ob.depth() == 0 and ob.rejected() == 3
    assert col.seqs() == [1, 2, 3], "each rejected reading went out once"
    # the last telemetry (published on the way out) tells operators
    assert col.wait_for(lambda: col.on("/telemetry") and Telemetry.model_validate_json(
        col.on("/telemetry")[-1].payload).outbox_rejected == 3)


def test_readings_wait_in_the_outbox_while_the_broker_is_down(tmp_path: Path) -> None:
    """--cycles with no broker at all: exits 0 after the drain timeout, readings kept for the next start."""
    cfg = edge_config(tmp_path, 1, drain_timeout_s=0.5)  # port 1: nothing listens
    at = AgentThread(cfg, cycles=3).start()
    at.join(20)
    assert at.rc == 0
    ob = Outbox(cfg.state_dir)
    assert ob.count("pending") == 3 and ob.last_seq() == 3


def test_backlog_is_republished_on_start_with_the_same_bytes(broker: MosquittoBroker, tmp_path: Path,
                                                            collector_factory: Any) -> None:
    """Published but never acked by the bridge: the next start publishes it again, byte for byte."""
    col = collector_factory(broker.port, ["meters/dev-a/reading"], bridge=False)
    cfg = edge_config(tmp_path, broker.port, drain_timeout_s=0.3)
    AgentThread(cfg, cycles=2).start().join(20)
    assert col.wait_for(lambda: len(col.on("/reading")) == 2)
    first = [m.payload for m in col.on("/reading")]
    assert Outbox(cfg.state_dir).count("published") == 2
    AgentThread(cfg, cycles=1).start().join(20)
    assert col.wait_for(lambda: len(col.on("/reading")) == 5)
    again = [m.payload for m in col.on("/reading")][2:]
    assert again[:2] == first and Reading.model_validate_json(again[2]).seq == 3


def test_ack_timeout_republishes_unacked(broker: MosquittoBroker, tmp_path: Path, collector_factory: Any) -> None:
    col = collector_factory(broker.port, ["meters/dev-a/reading"], bridge=False)
    cfg = edge_config(tmp_path, broker.port, interval_s=3600, ack_timeout_s=0.3)
    at = AgentThread(cfg).start()
    try:
        assert col.wait_for(lambda: len(col.on("/reading")) >= 3, timeout=10)
        assert set(col.seqs()) == {1}, "only seq 1 exists; it is republished until acked"
    finally:
        at.stop()


def test_a_week_offline_drains_completely(broker: MosquittoBroker, tmp_path: Path, collector_factory: Any) -> None:
    """168 hourly readings stored while offline all go out, in order, with a bounded window."""
    cfg = edge_config(tmp_path, broker.port, mqtt={"max_inflight": 8})
    ob = Outbox(cfg.state_dir)
    from agent_helpers import ScriptedReader

    reader, state = ScriptedReader(cfg), None
    for _ in range(168):
        res = reader.read(state)
        state = res.state
        ob.add(res.reading, state)
    ob.close()
    col = collector_factory(broker.port, ["meters/dev-a/reading"], bridge=True)
    at = AgentThread(cfg, cycles=1)
    window: list[int] = []
    real_publish = at.agent.link.publish

    def watching_publish(topic: str, payload: bytes, **kw: Any) -> int | None:
        mid = real_publish(topic, payload, **kw)
        window.append(len(at.agent._inflight) + (topic.endswith("/reading") and mid is not None))
        return mid

    at.agent.link.publish = watching_publish  # type: ignore[method-assign]
    at.start().join(30)
    assert max(window) <= 8, "more readings in flight than mqtt.max_inflight"
    col.wait_for(lambda: len(col.seqs()) >= 169)
    assert col.seqs() == list(range(1, 170))
    assert Outbox(cfg.state_dir).depth() == 0


def test_discovery_again_when_home_assistant_comes_back_and_periodic_telemetry(
        broker: MosquittoBroker, tmp_path: Path, collector_factory: Any) -> None:
    col = collector_factory(broker.port, ["homeassistant/+/dev-a/+/config", "meters/dev-a/telemetry"])
    cfg = edge_config(tmp_path, broker.port, interval_s=3600, telemetry_interval_s=0.2)
    n = len(discovery_messages("dev-a", version="x"))
    at = AgentThread(cfg).start()
    try:
        assert col.wait_for(lambda: len(col.on("/config")) == n)
        assert col.wait_for(lambda: len(col.on("/telemetry")) >= 4), "telemetry is not periodic"
        tele = Telemetry.model_validate_json(col.on("/telemetry")[-1].payload)
        assert tele.free_disk_bytes and tele.free_disk_bytes > 0 and tele.uptime_s > 0
        col.c.publish("homeassistant/status", b"online", qos=1)
        assert col.wait_for(lambda: len(col.on("/config")) == 2 * n), "discovery not republished for HA's birth"
    finally:
        at.stop()


def test_cpu_temperature_is_read_where_the_file_exists(tmp_path: Path) -> None:
    from edge.transport.telemetry import cpu_temp_c

    f = tmp_path / "temp"
    f.write_text("48312\n")
    assert cpu_temp_c(f) == 48.3
    assert cpu_temp_c(tmp_path / "missing") is None
    f.write_text("garbage")
    assert cpu_temp_c(f) is None
