"""The state Home Assistant reads (`meters/{id}/state`), built from committed readings in a real outbox:
the accepted value only moves forward, in seq order; flow over the last accepted readings; kept across
restarts and caught up with readings committed after it was saved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from contract.payloads import MeterState, Reading
from edge.transport.meter_state import FLOW_WINDOW_S, MeterStateKeeper
from edge.transport.outbox import Outbox

T0 = datetime(2026, 11, 24, 6, tzinfo=UTC)


def reading(value: str | None, status: str = "ok", minutes: float = 0, reason: str | None = None) -> Reading:
    if status != "ok" and reason is None:
        reason = f"{status} for the test"
    return Reading(device_id="dev-a", seq=0, taken_at=T0 + timedelta(minutes=minutes), value=value,
                   status=status, reason=reason, confidence=0.9 if status == "ok" else 0.3)  # type: ignore[arg-type]


def commit(ob: Outbox, keeper: MeterStateKeeper | None, draft: Reading) -> Reading:
    stored = ob.add(draft)
    r = Reading.model_validate_json(stored.payload)
    if keeper is not None:
        assert keeper.advance(r)
    return r


@pytest.fixture
def ob(tmp_path: Path) -> Outbox:
    o = Outbox(tmp_path / "state")
    yield o  # type: ignore[misc]
    o.close()


def test_value_moves_only_forward_and_status_follows_the_newest(ob: Outbox) -> None:
    k = MeterStateKeeper("dev-a", ob)
    assert k.state == MeterState(device_id="dev-a", seq=0)
    script = [reading("00100.000", minutes=0), reading("00100.010", minutes=10),
              reading("00199.000", "suspect", minutes=20, reason="rate above 3 m³/h"),
              reading(None, "error", minutes=30, reason="alignment failed"),
              reading("00100.005", minutes=40),  # an ok value below what HA has: HA keeps its total
              reading("00100.030", minutes=50)]
    said: list[MeterState] = []
    for draft in script:
        commit(ob, k, draft)
        said.append(MeterState.model_validate_json(k.payload()))
    assert [s.seq for s in said] == [1, 2, 3, 4, 5, 6]
    assert [s.value for s in said] == ["00100.000", "00100.010", "00100.010", "00100.010", "00100.010", "00100.030"]
    assert [s.status for s in said] == ["ok", "ok", "suspect", "error", "ok", "ok"]
    assert said[2].read_value == "00199.000" and said[2].reason == "rate above 3 m³/h"
    assert said[3].value_seq == 2 and said[3].value_at == T0 + timedelta(minutes=10)
    assert said[3].taken_at == T0 + timedelta(minutes=30)
    # an older or repeated seq (a republished reading) changes nothing
    old = Reading.model_validate_json(ob.row(2).payload)  # type: ignore[union-attr]
    assert not k.advance(old)
    assert k.state == said[-1]


def test_flow_over_the_last_accepted_readings(ob: Outbox) -> None:
    k = MeterStateKeeper("dev-a", ob)
    commit(ob, k, reading("00100.000", minutes=0))
    assert k.state.flow_m3_per_h is None, "one reading is no flow"
    commit(ob, k, reading("00100.060", minutes=60))
    assert k.state.flow_m3_per_h == pytest.approx(0.06)
    # readings a minute apart: the flow spans the window (and the one reading before it), not one step
    for i in range(1, 31):
        commit(ob, k, reading(f"{Decimal('100.060') + Decimal('0.002') * i:09.3f}", minutes=60 + i))
    # the window's start is the newest reading at least FLOW_WINDOW_S before the last: 2 l/min = 0.12 m³/h
    assert FLOW_WINDOW_S == 900
    assert k.state.flow_m3_per_h == pytest.approx(0.12)
    # a suspect reading does not move the flow; a quiet meter goes to 0
    commit(ob, k, reading("00999.000", "suspect", minutes=92, reason="rate"))
    assert k.state.flow_m3_per_h == pytest.approx(0.12)
    for i in range(1, 40):
        commit(ob, k, reading("00100.120", minutes=92 + i))
    assert k.state.flow_m3_per_h == 0.0


def test_kept_across_restarts_and_caught_up(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "state")
    k = MeterStateKeeper("dev-a", ob)
    for i, v in enumerate(["00100.000", "00100.010", "00100.020"]):
        commit(ob, k, reading(v, minutes=10 * i))
    before = k.state
    # a power cut between committing seq 4 and saving the state: the next start catches up
    commit(ob, None, reading("00100.030", minutes=30))
    commit(ob, None, reading(None, "error", minutes=40))
    ob.close()
    ob2 = Outbox(tmp_path / "state")
    k2 = MeterStateKeeper("dev-a", ob2)
    assert k2.state.seq == 5 and k2.state.value == "00100.030" and k2.state.status == "error"
    assert Decimal(k2.state.value) > Decimal(before.value or "0")
    assert k2.state.flow_m3_per_h == pytest.approx(0.06)
    ob2.close()
    ob3 = Outbox(tmp_path / "state")
    assert MeterStateKeeper("dev-a", ob3).state == k2.state
    ob3.close()


def test_first_start_of_this_version_builds_the_state_from_the_outbox(ob: Outbox) -> None:
    for i, v in enumerate(["00050.000", "00050.100", "00050.200"]):
        commit(ob, None, reading(v, minutes=60 * i))
    k = MeterStateKeeper("dev-a", ob)
    assert (k.state.seq, k.state.value, k.state.value_seq) == (3, "00050.200", 3)


def test_unreadable_stored_state_is_rebuilt_not_fatal(ob: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    commit(ob, None, reading("00050.000"))
    ob.set_json("meter_state", {"state": {"device_id": "dev-a", "seq": "not a number"}})
    k = MeterStateKeeper("dev-a", ob)
    assert "unreadable" in caplog.text
    assert (k.state.seq, k.state.value) == (1, "00050.000")


def test_installer_set_value_is_the_one_way_down(ob: Outbox) -> None:
    k = MeterStateKeeper("dev-a", ob)
    commit(ob, k, reading("00100.500", minutes=0))
    k.set_value("00007.000", T0 + timedelta(minutes=5))
    assert (k.state.value, k.state.value_seq, k.state.flow_m3_per_h) == ("00007.000", None, None)
    commit(ob, k, reading("00007.010", minutes=65))
    assert k.state.value == "00007.010" and k.state.flow_m3_per_h == pytest.approx(0.01)
    assert MeterStateKeeper("dev-a", ob).state == k.state
