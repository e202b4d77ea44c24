"""Home Assistant's state topic against a real Mosquitto: it never goes backwards through broker outages,
republished readings and agent restarts, it is retained across restarts, and the device says it again
on every connection. Discovery goes away when it is switched off. The camera is a scripted reader."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentThread, Collector, committed_seq, edge_config

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import MeterState, Reading
from edge.config import EdgeConfig
from edge.transport.discovery import discovery_messages
from edge.transport.outbox import Outbox

pytestmark = pytest.mark.mosquitto


class MixedReader:
    """A meter rising 1 l a cycle, read with a suspect (a wild jump) and an error among every six frames."""

    model_id = "mixed-test"

    def __init__(self, cfg: EdgeConfig) -> None:
        self.device_id = cfg.device_id

    def read(self, state: dict[str, Any] | None) -> Any:
        from edge.agent.core import ReadResult

        n = int(state["n"]) + 1 if state else 1
        prev = Decimal(state["previous"]) if state else Decimal("100.000")
        now = datetime.now(UTC)
        if n % 6 == 2:
            r = Reading(device_id=self.device_id, seq=0, taken_at=now, value=f"{prev + 5:09.3f}", status="suspect",
                        reason="rise faster than reading.max_rate_m3_per_h", confidence=0.4, model=self.model_id)
            return ReadResult(r, {"n": n, "previous": str(prev)})
        if n % 6 == 4:
            r = Reading(device_id=self.device_id, seq=0, taken_at=now, value=None, status="error",
                        reason="alignment failed", confidence=0.0, model=self.model_id)
            return ReadResult(r, {"n": n, "previous": str(prev)})
        value = f"{prev + Decimal('0.001'):09.3f}"
        r = Reading(device_id=self.device_id, seq=0, taken_at=now, value=value, status="ok", confidence=0.95,
                    model=self.model_id)
        return ReadResult(r, {"n": n, "previous": value})

    def set_previous(self, state: dict[str, Any] | None, value: str, at: datetime) -> dict[str, Any]:
        return {**(state or {"n": 0}), "previous": value}

    def close(self) -> None:
        pass


class NoFrames(MixedReader):
    def read(self, state: dict[str, Any] | None) -> Any:
        from edge.agent.core import EndOfSource

        raise EndOfSource("no frames in this test")


def states(col: Collector) -> list[MeterState]:
    return [MeterState.model_validate_json(m.payload) for m in col.on("/state") if m.payload]


def wait_until(pred: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def first_state(port: int, client_id: str, timeout: float = 5.0) -> tuple[MeterState, bool] | None:
    """The first state a Home Assistant that (re)starts now gets, and whether it was the retained one."""
    c = Collector(port, ["meters/dev-a/state"], client_id=client_id).start()
    try:
        if not c.wait_for(lambda: bool(c.on("/state")), timeout=timeout):
            return None
        m = c.on("/state")[0]
        return MeterState.model_validate_json(m.payload), bool(m.retain)
    finally:
        c.stop()


def retained_state(port: int, client_id: str) -> MeterState:
    got = first_state(port, client_id)
    assert got is not None and got[1], f"no retained state ({got})"
    return got[0]


def last_accepted(state_dir: Path) -> str | None:
    ob = Outbox(state_dir)
    try:
        rows = [Reading.model_validate_json(p) for _, p in ob.payloads_after(0)]
    finally:
        ob.close()
    ok = [r.value for r in rows if r.status == "ok"]
    return ok[-1] if ok else None


def assert_never_backwards(seen: list[MeterState]) -> None:
    values = [Decimal(s.value) for s in seen if s.value is not None]
    assert values == sorted(values), f"the total went backwards: {values}"
    seqs = [s.seq for s in seen]
    assert seqs == sorted(seqs), f"the state went back in seq: {seqs}"


def test_state_never_goes_backwards_through_outages_republishes_and_restarts(
        broker: MosquittoBroker, tmp_path: Path, collector_factory: Any) -> None:
    # No bridge: nothing is acked, so every reading is published again every 0.3 s, and all of them
    # again when the agent restarts. Home Assistant reads only the state topic.
    ha = collector_factory(broker.port, ["meters/dev-a/state", "meters/dev-a/reading"], client_id="ha")
    cfg = edge_config(tmp_path, broker.port, ack_timeout_s=0.3)
    state_dir = cfg.state_dir
    at = AgentThread(cfg, reader=MixedReader).start()
    try:
        assert wait_until(lambda: committed_seq(state_dir) >= 12)
        assert wait_until(lambda: any(s.seq >= 12 for s in states(ha)))
        broker.stop()  # an outage while the agent keeps reading
        outage_from = committed_seq(state_dir)
        assert wait_until(lambda: committed_seq(state_dir) >= outage_from + 12)
        broker.start()
        assert wait_until(lambda: any(s.seq >= outage_from + 12 for s in states(ha)), timeout=20), \
            "the state was not published again after the outage"
    finally:
        at.stop()
    assert not at.thread.is_alive()
    before_restart = at.agent.meter_state.state
    # a restart: the new process republishes every unacknowledged reading, oldest first
    n_reading_msgs = len(ha.on("/reading"))
    at2 = AgentThread(edge_config(tmp_path, broker.port, ack_timeout_s=0.3), reader=MixedReader).start()
    try:
        assert wait_until(lambda: committed_seq(state_dir) >= before_restart.seq + 12)
        assert wait_until(lambda: any(s.seq >= before_restart.seq + 12 for s in states(ha)))
    finally:
        at2.stop()
    # the scenario really did send old readings after new ones ...
    reading_seqs = [Reading.model_validate_json(m.payload).seq for m in ha.on("/reading")]
    assert 1 in reading_seqs[n_reading_msgs:], "the restart did not republish the old readings"
    assert any(b < a for a, b in itertools.pairwise(reading_seqs))
    # ... and Home Assistant's topic never went back, in value or in seq
    seen = states(ha)
    assert len(seen) > 20
    assert_never_backwards(seen)
    assert any(s.status == "suspect" for s in seen) and any(s.status == "error" for s in seen)
    assert all(Decimal(s.read_value) > Decimal(s.value or 0) for s in seen if s.status == "suspect" and s.read_value)
    final = at2.agent.meter_state.state
    assert seen[-1] == final
    assert final.value == last_accepted(state_dir), "the state carries the latest accepted value"
    # retained: a Home Assistant starting now gets it at once, also after the broker restarts
    assert retained_state(broker.port, "ha-late") == final
    broker.restart()
    assert retained_state(broker.port, "ha-after-broker-restart") == final


def test_state_is_said_again_on_connect_after_the_broker_lost_it(
        broker: MosquittoBroker, tmp_path: Path, collector_factory: Any) -> None:
    """A broker killed hard forgets what came since its last autosave (retained messages too); the
    device's next connection puts the newest state back."""
    cfg = edge_config(tmp_path, broker.port, ack_timeout_s=0.3)
    at = AgentThread(cfg, reader=MixedReader).start()
    try:
        assert wait_until(lambda: committed_seq(cfg.state_dir) >= 5)
        broker.kill()
        broker.start()
        # the agent reconnects (1 s) and publishes its current state again
        assert wait_until(lambda: (first_state(broker.port, "ha-probe", 1.0) or (None, 0))[1], timeout=20)
        at.agent.request_capture()
        time.sleep(0.5)
    finally:
        at.stop()
    assert retained_state(broker.port, "ha-final") == at.agent.meter_state.state


def test_restart_says_the_last_state_again_before_anything_new(broker: MosquittoBroker, tmp_path: Path,
                                                               collector_factory: Any) -> None:
    cfg = edge_config(tmp_path, broker.port, interval_s=0.05)
    AgentThread(cfg, cycles=7, reader=MixedReader).start().join(20)
    ha = collector_factory(broker.port, ["meters/dev-a/state"], client_id="ha")
    assert ha.wait_for(lambda: len(states(ha)) == 1)
    last = states(ha)[0]
    assert last.seq == 7 and ha.on("/state")[0].retain
    # the camera gives nothing more: all the restarted agent can say is what it had
    at = AgentThread(edge_config(tmp_path, broker.port, interval_s=3600), reader=NoFrames).start()
    try:
        assert ha.wait_for(lambda: len(states(ha)) >= 2), "the state is not published again on connect"
    finally:
        at.stop()
    assert states(ha) == [last, last], "the restarted agent says exactly what it said before"


def test_discovery_is_removed_when_switched_off(broker: MosquittoBroker, tmp_path: Path,
                                                collector_factory: Any) -> None:
    n = len(discovery_messages("dev-a", version="x"))
    cfg = edge_config(tmp_path, broker.port, interval_s=3600)
    at = AgentThread(cfg, reader=MixedReader).start()
    ha = collector_factory(broker.port, ["homeassistant/+/dev-a/+/config"], client_id="ha")
    try:
        assert ha.wait_for(lambda: len(ha.on("/config")) == n)
    finally:
        at.stop()
    assert all(json.loads(m.payload)["unique_id"].startswith("meter_reader_dev-a_") for m in ha.on("/config"))
    off = edge_config(tmp_path, broker.port, interval_s=3600, mqtt={"ha_discovery": False})
    at = AgentThread(off, reader=MixedReader).start()
    try:
        assert ha.wait_for(lambda: len(ha.on("/config")) == 2 * n)
    finally:
        at.stop()
    removals = ha.on("/config")[n:]
    assert {m.topic for m in removals} == set(discovery_messages("dev-a", version="x"))
    assert all(m.payload == b"" for m in removals)
    late = collector_factory(broker.port, ["homeassistant/#"], client_id="ha-late")
    time.sleep(0.5)
    assert late.on("/config") == [], "the broker keeps no discovery config for the device"


def test_installer_set_value_reaches_home_assistant(broker: MosquittoBroker, tmp_path: Path,
                                                    collector_factory: Any) -> None:
    """The one way the total may go down: the installer says what the meter shows (a replaced meter)."""
    ha = collector_factory(broker.port, ["meters/dev-a/state"], client_id="ha")
    at = AgentThread(edge_config(tmp_path, broker.port, interval_s=3600), reader=MixedReader).start()
    try:
        assert ha.wait_for(lambda: any(s.value == "00100.001" for s in states(ha)))
        ha.c.publish("meters/dev-a/cmd/set-value", b'{"value": "00042.000"}', qos=1)
        assert ha.wait_for(lambda: states(ha)[-1].value == "00042.000")
    finally:
        at.stop()
    assert retained_state(broker.port, "ha-late").value == "00042.000"
