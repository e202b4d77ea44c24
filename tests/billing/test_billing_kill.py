"""`kill -9` of `meter-bridge submit` after billing recorded a submission but before the bridge recorded
the answer: the restart sends the same idempotency key and the sandbox keeps one submission, not two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_helpers import Fleet

from cloud_bridge.sandbox import Fault, SandboxServer
from cloud_bridge.store.tables import submissions

KEY = "0123456789:M-1:2026-10"


def _config(tmp_path: Path, db_url: str, url: str) -> Path:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'database_url = "{db_url}"\n[billing]\nurl = "{url}"\n[loyalty]\nurl = "{url}"\n'
                   "[submission]\ntimeout_s = 30\nlease_s = 1\nbackoff_base_s = 0.05\n", encoding="utf-8")
    return cfg


def _submit(cfg: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloud_bridge.cli", "--config", str(cfg), "submit", "--period", "2026-10",
         "--at", "2026-10-20T09:00:00Z", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _state(engine: Any) -> tuple[str, int, str | None] | None:
    with engine.begin() as conn:
        row = conn.execute(submissions.select().where(submissions.c.idempotency_key == KEY)).first()
    return None if row is None else (row.state, row.attempts, row.submission_id)


def test_kill_between_sent_and_recorded(tmp_path: Path, sqlite_url: str, engine_for: Any,
                                        sandbox: SandboxServer) -> None:
    engine = engine_for(sqlite_url)
    fleet = Fleet(engine)
    fleet.add("dev-1", "M-1", "0123456789", datetime(2026, 9, 1, tzinfo=UTC))
    fleet.settled("dev-1", datetime(2026, 10, 19, 12, tzinfo=UTC), "00042.125")
    cfg = _config(tmp_path, sqlite_url, sandbox.url)
    # Billing records at once but answers only after 20 s: the bridge is waiting for the answer.
    sandbox.faults.push(Fault(mode="delay", delay_s=20, target="readings"))

    proc = _submit(cfg)
    deadline = time.monotonic() + 30
    while not (sandbox.store.readings() and (_state(engine) or ("",))[0] == "sending"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the submission never reached billing"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    state = _state(engine)
    assert state is not None and state[:2] == ("sending", 1) and state[2] is None  # billing has it, we don't know
    first = sandbox.store.readings()
    assert len(first) == 1 and first[0]["idempotency_key"] == KEY

    time.sleep(1.1)  # the dead process's lease on the row runs out
    rerun = _submit(cfg, "--json")
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    report = json.loads(out)
    [meter] = report["meters"]
    assert (meter["key"], meter["state"], meter["attempts"]) == (KEY, "accepted", 2)
    assert meter["submission_id"] == first[0]["submission_id"]
    assert len(sandbox.store.readings()) == 1
    sent = sandbox.store.requests(KEY)
    assert [r["replayed"] for r in sent if r["status"] == 201][-1] is True
    assert [c["state"] for c in report["credits"]] == ["credited"]
    assert len(sandbox.store.credits()) == 1
