"""Issue 20, item 6: one `set-value` with a bad `at` bricked the agent (every later cycle an error, also
after a restart, and the next valid `set-value` crashed it). Real agent (simulator camera, bundled model,
real reading rules) against a real Mosquitto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentThread, simulator_layout, write_edge_toml

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import Reading, Telemetry
from edge.agent.pipeline_reader import PipelineReader
from edge.config import load_edge_config
from edge.transport.outbox import Outbox

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

BAD_AT = "0001-01-01T00:00:00+14:00"


def test_a_bad_set_value_is_refused_and_bad_stored_state_does_not_brick_the_agent(
        broker: MosquittoBroker, tmp_path: Path, collector_factory: Any) -> None:
    layout = simulator_layout(tmp_path / "layout")
    state = tmp_path / "state"
    conf = write_edge_toml(tmp_path / "edge.toml", state_dir=state, layout=layout, port=broker.port, interval_s=0.2,
                           telemetry_interval_s=0.5)
    cfg = load_edge_config(conf)
    # What the old agent saved after `set-value {"value": "00100.000", "at": "0001-01-01T00:00:00+14:00"}`.
    box = Outbox(state)
    box.set_reading_state({"previous": "00100.000", "previous_at": BAD_AT, "refusals": [], "refused_run": 0,
                           "pending": None})
    box.close()
    col = collector_factory(broker.port, ["meters/dev-sim/#"], bridge=True)
    at = AgentThread(cfg, reader=PipelineReader.from_config, config_path=conf).start()
    try:
        assert col.wait_for(lambda: len(col.on("/reading")) >= 3, timeout=60)
        col.c.publish("meters/dev-sim/cmd/set-value", json.dumps({"value": "00100.000", "at": BAD_AT}), qos=1)
        assert col.wait_for(lambda: any(Telemetry.model_validate_json(m.payload).commands_refused >= 1
                                        for m in col.on("/telemetry")), timeout=20)
        col.c.publish("meters/dev-sim/cmd/set-value", json.dumps({"value": "00100.000"}), qos=1)
        n = len(col.on("/reading"))
        assert col.wait_for(lambda: len(col.on("/reading")) >= n + 3, timeout=60)
        assert at.thread.is_alive(), "the agent died"
    finally:
        at.stop()
    readings = [Reading.model_validate_json(m.payload) for m in col.on("/reading")]
    broken = [r for r in readings if r.status == "error" and r.reason and "Error" in r.reason]
    assert not broken, f"{len(broken)} of {len(readings)} cycles failed on the stored state: {broken[0].reason}"
    stored = Outbox(state)
    try:
        st = stored.reading_state()
    finally:
        stored.close()
    assert st is not None and not str(st.get("previous_at", "")).startswith("0001")
