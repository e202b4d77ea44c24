"""Issue 13 on a running agent: a misread the device accepted does not stick. The frames after it
disagree with it and agree with each other; the device re-anchors by itself, publishes why, and counts
it in telemetry (the count survives in the reading state across restarts)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentThread, edge_config

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import Reading, Telemetry
from edge.agent.core import ReadResult
from edge.config import EdgeConfig
from edge.reading.assemble import assemble, confirm
from edge.reading.model import Observation, ReadingState, WheelInput
from edge.reading.payload import to_reading
from edge.reading.rules import Rules
from edge.transport.outbox import Outbox

T0 = datetime(2026, 11, 2, tzinfo=UTC)
# hourly true values of a 7-wheel meter with 2 decimals; frame 1's tenths wheel 5 is read as 8 (+0.30 m3,
# within ordinary use, so the device accepts it from one frame)
TRUTH = [160.50, 160.52, 160.55, 160.58, 160.61, 160.64, 160.70]
MISREAD = 1


def _wheels(value: float) -> list[float]:
    units = round(value * 100)
    pos = [float(units % 10)]
    for k in range(1, 7):
        pos.append(float(math.floor(units / 10**k) % 10))
    return pos[::-1]


class MisreadingCamera:
    """The camera and the digit model stand in (scripted wheel positions); the reading rules are the real ones."""

    model_id = "scripted-wheels"

    def __init__(self, cfg: EdgeConfig) -> None:
        self.device_id = cfg.device_id
        self.rules = Rules.from_config(cfg.reading, decimals=2)
        self.frame = 0

    def read(self, state: dict[str, Any] | None) -> ReadResult:
        carried = ReadingState.from_dict(state) if state else ReadingState()
        i = min(self.frame, len(TRUTH) - 1)
        pos = _wheels(TRUTH[i])
        if i == MISREAD:
            pos[5] = 8.0
        taken_at = T0 + timedelta(hours=i + 1)
        self.frame += 1
        obs = Observation(tuple(WheelInput(int(p), p, 0.97) for p in pos), taken_at)
        decision, new = assemble(carried, obs, self.rules)
        reading = to_reading(decision, device_id=self.device_id, seq=0, taken_at=taken_at, model=self.model_id)
        return ReadResult(reading, new.to_dict(), {"capture": 0.0})

    def set_previous(self, state: dict[str, Any] | None, value: str, at: datetime) -> dict[str, Any]:
        carried = ReadingState.from_dict(state) if state else ReadingState()
        return confirm(carried, Decimal(value), at).to_dict()

    def close(self) -> None:
        pass


@pytest.mark.mosquitto
def test_the_agent_reanchors_after_a_misread_and_counts_it(broker: MosquittoBroker, tmp_path: Path,
                                                           collector_factory: Any) -> None:
    col = collector_factory(broker.port, ["meters/dev-a/#"], bridge=True)
    cfg = edge_config(tmp_path, broker.port, interval_s=0.05, telemetry_interval_s=0.2)
    at = AgentThread(cfg, cycles=len(TRUTH), reader=MisreadingCamera)
    # the installer's value an hour before the first frame
    at.agent.outbox.set_reading_state(confirm(ReadingState(), Decimal("160.44"), T0).to_dict())
    at.start()
    try:
        assert col.wait_for(lambda: len(col.seqs()) == len(TRUTH), timeout=20)
        readings = [Reading.model_validate_json(m.payload) for m in col.on("/reading")]
        got = [(r.status, r.value, (r.reason or "").split(":", 1)[0] or None) for r in readings]
        assert got == [("ok", "00160.50", None), ("ok", "00160.82", None),
                       ("suspect", "00160.55", "decrease"), ("suspect", "00160.58", "decrease"),
                       ("suspect", "00160.61", "reanchored"), ("ok", "00160.64", None), ("ok", "00160.70", None)]
        assert "fits the value accepted before it, 00160.50" in (readings[4].reason or "")
        assert col.wait_for(lambda: Telemetry.model_validate_json(col.on("/telemetry")[-1].payload).reanchors == 1)
        at.join(20)
    finally:
        at.stop()
    reopened = Outbox(cfg.state_dir)  # the count survives a restart
    try:
        assert (reopened.reading_state() or {}).get("reanchors") == 1
    finally:
        reopened.close()
