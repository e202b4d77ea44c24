"""The setup page's way to the running agent (edge/agent/local.py): a request file and SIGHUP, answered
by a real `meter-edge run` process, and a request saved while no agent runs applied at its start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from agent_helpers import (
    committed_seq,
    meter_edge,
    reading_state_previous,
    simulator_layout,
    stop_agent,
    write_edge_toml,
)

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import SetValueCommand
from edge.agent import local

pytestmark = [pytest.mark.mosquitto]


def _start(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([meter_edge(), "run", "--config", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_running(state: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (pid := local.running_agent(state)) is None or committed_seq(state) < 1:
        assert proc.poll() is None, f"agent exited with {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "agent did not start"
        time.sleep(0.05)
    return pid


def test_setup_request_reload_and_starting_value_answered_by_a_real_agent(broker: MosquittoBroker,
                                                                           tmp_path: Path) -> None:
    layout = simulator_layout(tmp_path / "etc")
    state = tmp_path / "state"
    conf = write_edge_toml(tmp_path / "edge.toml", state_dir=state, layout=layout, port=broker.port, interval_s=3600)
    log = tmp_path / "agent.log"
    proc = _start(conf, log)
    try:
        pid = _wait_running(state, proc, log)
        assert pid == proc.pid and (state / local.PID_NAME).read_text().strip() == str(proc.pid)

        answer = local.tell_agent(state, local.LocalRequest(id="save-1", set_value=SetValueCommand(value="00123.456")))
        assert answer.status == "confirmed", answer.detail
        assert answer.result is not None and answer.result.reload == "done" and answer.result.set_value == "done"
        assert "reloaded the config and layout; set the starting value" in answer.detail
        assert reading_state_previous(state) == "123.456"
        assert not (state / local.REQUEST_NAME).exists()

        # A config that does not load: the agent says so and keeps the old one (and the old value).
        good = conf.read_text()
        conf.write_text(good.replace("interval_s = 3600", "interval_s = -1"))
        answer = local.tell_agent(state, local.LocalRequest(id="save-2", set_value=SetValueCommand(value="7")))
        assert answer.status == "confirmed" and answer.result is not None
        assert answer.result.reload == "refused" and "interval_s" in (answer.result.reload_reason or "")
        assert answer.result.set_value == "refused" and reading_state_previous(state) == "123.456"
        conf.write_text(good)

        # A request file that is not one is refused, not obeyed; a plain SIGHUP reloads.
        (state / local.RESULT_NAME).unlink()
        (state / local.REQUEST_NAME).write_text('{"id": "x", "reload": "yes"}')
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not (state / local.RESULT_NAME).exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = json.loads((state / local.RESULT_NAME).read_text())
        assert refused["reload"] == "refused" and "not a valid request" in refused["reload_reason"]
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "SIGHUP: reloading the config and layout" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert "reloaded config and layout" in log.read_text()
    finally:
        stop_agent(proc)
    assert proc.returncode == 0
    assert local.running_agent(state) is None and not (state / local.PID_NAME).exists()

    # Saved while no agent runs: pending, applied when the agent starts.
    answer = local.tell_agent(state, local.LocalRequest(id="save-3", set_value=SetValueCommand(value="00200.000")))
    assert answer.status == "pending" and "when it starts" in answer.detail
    proc = _start(conf, log)
    try:
        _wait_running(state, proc, log)
        deadline = time.monotonic() + 30
        while (result := local.read_result(state, "save-3")) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert result.set_value == "done" and result.reload == "done"
    finally:
        stop_agent(proc)


def test_a_stale_pid_file_is_no_running_agent(tmp_path: Path) -> None:
    (tmp_path / local.PID_NAME).write_text(f"{os.getpid()}\n")  # a live pid, but nobody holds the lock
    assert local.running_agent(tmp_path) is None
    lock = local.PidLock(tmp_path)
    assert lock.acquire()
    try:
        assert local.running_agent(tmp_path) == os.getpid()
        second = local.PidLock(tmp_path)
        assert not second.acquire() and second.other == os.getpid()
    finally:
        lock.release()
    assert local.running_agent(tmp_path) is None


def test_an_unwritable_pid_file_does_not_stop_the_agent(tmp_path: Path) -> None:
    (tmp_path / local.PID_NAME).mkdir()  # not a file (or, in the field, owned by root from a run as root)
    lock = local.PidLock(tmp_path)
    assert not lock.acquire() and lock.error and lock.other is None
    lock.release()  # nothing held: nothing to do
