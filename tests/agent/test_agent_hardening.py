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


class EightWheelReader:
    """A reading the size of a real one (8 wheels), rising by 0.001 m³ a cycle."""

    model_id = "digits-c100-v1"

    def __init__(self, cfg: Any) -> None:
        self.device_id = cfg.device_id

    def read(self, state: dict[str, Any] | None) -> Any:
        from datetime import UTC, datetime

        from contract.payloads import Digit
        from edge.agent.core import ReadResult

        n = int(state["n"]) + 1 if state else 1
        value = f"{n / 1000:09.3f}"
        r = Reading(device_id=self.device_id, seq=0, taken_at=datetime.now(UTC), value=value, status="ok",
                    confidence=0.97, digits=[Digit(v=int(c), f=float(c) + 0.1, p=0.97) for c in value if c != "."],
                    model=self.model_id)
        return ReadResult(r, {"n": n, "previous": value, "previous_at": r.taken_at.isoformat(), "refusals": []})

    def set_previous(self, state: dict[str, Any] | None, value: str, at: Any) -> dict[str, Any]:
        return dict(state or {})

    def close(self) -> None:
        pass


def test_a_full_device_disk_with_the_broker_away_keeps_the_newest(tiny_fs: Path) -> None:
    """Issue 20, item 2: before, 74 of 3,000 stored and 2,926 lost (every DELETE failed too: the WAL held
    everything). Now every reading is stored; the oldest are dropped and counted, the newest kept."""
    from edge.agent.core import Agent
    from edge.config import EdgeConfig

    n = 1500
    cfg = EdgeConfig(device_id="dev-full", state_dir=tiny_fs / "state", interval_s=0.001, telemetry_interval_s=600,
                     ack_timeout_s=30, drain_timeout_s=0.1,
                     mqtt={"host": "127.0.0.1", "port": 9, "reconnect_min_s": 60, "reconnect_max_s": 60})
    agent = Agent(cfg, EightWheelReader)
    agent.run(n)  # the broker is away: nothing is ever acknowledged
    box = Outbox(cfg.state_dir)
    try:
        pending = [r.seq for r in box.next_to_publish(limit=100_000)]
        assert agent.outbox.unstored == 0, f"{agent.outbox.unstored} of {n} readings could not be stored"
        assert box.last_seq() == n, f"{box.last_seq()} of {n} readings got a seq"
        assert agent.stats.last_error is None or "nothing is left to drop" not in agent.stats.last_error
        assert pending and pending[-1] == n, "the newest reading is kept"
        assert pending == list(range(pending[0], n + 1)), "what is kept is the newest run, without gaps"
        assert box.dropped() == n - len(pending) > 0, "the oldest were dropped, and counted"
        assert len(pending) > 500, f"only {len(pending)} kept on 1 MiB"
        assert box.integrity_check() == "ok"
    finally:
        box.close()
