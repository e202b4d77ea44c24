"""The real agent process (`meter-edge run`, simulator camera, the bundled model) against a real Mosquitto:
a broker outage in the middle of a run, and `kill -9` at random points of a loop of runs."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import committed_seq, meter_edge, simulator_layout, write_edge_toml

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import Reading

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


@pytest.fixture(scope="module")
def sim_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulator_layout(tmp_path_factory.mktemp("sim-layout"))


def _start(conf: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([meter_edge(), "run", "--config", str(conf), *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_seq(state: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while committed_seq(state) < n:
        assert proc.poll() is None, f"agent exited early with {proc.returncode}"
        assert time.monotonic() < deadline, f"agent did not reach seq {n}"
        time.sleep(0.02)


def test_broker_down_for_the_middle_20_of_50_cycles(broker: MosquittoBroker, tmp_path: Path, sim_layout: Path,
                                                    collector_factory: Any) -> None:
    state = tmp_path / "state"
    # Mosquitto 2.0 does not bring sessions back after a restart, so whatever the agent publishes before
    # the bridge has resubscribed has no subscriber (in the field the agent's ack_timeout_s republish
    # covers it). Here the stand-in bridge retries every 1 s and the agent every 3 s, and the test waits
    # for the bridge's SUBACK, so the bridge is back first, as an always-on bridge is.
    conf = write_edge_toml(tmp_path / "edge.toml", state_dir=state, layout=sim_layout, port=broker.port,
                           interval_s=0.1, mqtt={"reconnect_min_s": 3, "reconnect_max_s": 3})
    col = collector_factory(broker.port, ["meters/dev-sim/reading"], bridge=True, client_id="outage-bridge")
    log = tmp_path / "agent.log"
    proc = _start(conf, log, "--cycles", "50")
    try:
        _wait_seq(state, 15, proc)
        broker.stop()
        _wait_seq(state, 35, proc)
        assert committed_seq(state) < 50
        resubscribed = col.subscribed + 1
        broker.start()
        assert col.wait_for(lambda: col.subscribed >= resubscribed, timeout=10), "the bridge did not come back"
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert col.wait_for(lambda: len(col.seqs()) >= 50, timeout=15), log.read_text()[-3000:]
    time.sleep(0.3)
    assert col.seqs() == list(range(1, 51)), "every seq exactly once, in order"
    readings = [Reading.model_validate_json(m.payload) for m in col.on("/reading")]
    assert all(r.device_id == "dev-sim" and r.model for r in readings)
    assert sum(r.status == "ok" for r in readings) >= 40, [(r.seq, r.status, r.reason) for r in readings]
    text = log.read_text()
    assert "disconnected from the broker" in text


def test_kill_9_at_random_points_loses_nothing(broker: MosquittoBroker, tmp_path: Path, sim_layout: Path,
                                               collector_factory: Any) -> None:
    rng = random.Random(20261124)
    state = tmp_path / "state"
    conf = write_edge_toml(tmp_path / "edge.toml", state_dir=state, layout=sim_layout, port=broker.port,
                           interval_s=0.05)
    col = collector_factory(broker.port, ["meters/dev-sim/reading"], bridge=True, client_id="kill-bridge")
    log = tmp_path / "agent.log"
    last = 0
    for run in range(6):
        broker_down = run in (2, 3)  # two runs with nothing delivered: their readings wait in the outbox
        if broker_down and broker.proc and broker.proc.poll() is None:
            broker.stop()
        if not broker_down and (broker.proc is None or broker.proc.poll() is not None):
            broker.start()
        proc = _start(conf, log)
        _wait_seq(state, last + 1, proc)  # at least one new reading per run
        time.sleep(rng.uniform(0.0, 0.8))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        now = committed_seq(state)
        assert now > last, "seq did not continue after the restart"
        last = now
        db = sqlite3.connect(state / "outbox.sqlite3")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    if broker.proc is None or broker.proc.poll() is not None:
        broker.start()
    final = _start(conf, log, "--cycles", "1")
    assert final.wait(60) == 0, log.read_text()[-3000:]
    total = committed_seq(state)
    assert col.wait_for(lambda: set(col.seqs()) >= set(range(1, total + 1)), timeout=15), (
        sorted(set(range(1, total + 1)) - set(col.seqs())))
    assert set(col.seqs()) == set(range(1, total + 1)), "a seq that was never committed reached the broker"
    db = sqlite3.connect(state / "outbox.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM readings WHERE state != 'done'").fetchone()[0] == 0


def test_folder_backend_replays_once_remembers_and_stops(broker: MosquittoBroker, tmp_path: Path,
                                                         sim_layout: Path, collector_factory: Any) -> None:
    import cv2

    from edge.capture.backends.simulator import SimulatorCamera

    frames = tmp_path / "frames"
    frames.mkdir()
    cam = SimulatorCamera(seed=5, start=datetime(2026, 11, 24, 17, tzinfo=UTC))
    names = []
    for _ in range(3):
        frame = cam.capture()
        name = frame.taken_at.strftime("%Y%m%dT%H%M%SZ") + ".png"
        cv2.imwrite(str(frames / name), frame.image)
        names.append(frame.taken_at)
    state = tmp_path / "state"
    conf = write_edge_toml(tmp_path / "edge.toml", state_dir=state, layout=sim_layout, port=broker.port,
                           interval_s=0.05, capture={"backend": "folder", "source": str(frames)})
    col = collector_factory(broker.port, ["meters/dev-sim/reading"], bridge=True, client_id="folder-bridge")
    log = tmp_path / "agent.log"
    assert _start(conf, log, "--cycles", "10").wait(60) == 0, log.read_text()[-2000:]
    assert col.wait_for(lambda: len(col.seqs()) >= 3)
    readings = [Reading.model_validate_json(m.payload) for m in col.on("/reading")]
    assert [r.taken_at for r in readings] == names, "a frame named by its time is taken at that time"
    assert "no more frames" in log.read_text()
    # a restart goes on from where it was: nothing new to read, no new seq
    assert _start(conf, log, "--cycles", "2").wait(60) == 0
    assert committed_seq(state) == 3
