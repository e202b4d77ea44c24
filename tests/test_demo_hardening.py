"""Issue 20, item 12: the demo left its work folder (bridge database, broker/bridge/billing passwords)
behind on Ctrl-C, and its summary cut paths at 80 columns."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from demo.run import print_paths

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.mosquitto
@pytest.mark.slow
def test_ctrl_c_removes_the_demo_work_folder_and_its_secrets(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "COLUMNS": "80"}
    proc = subprocess.Popen([sys.executable, "-m", "demo.run", "--days", "0.05", "--out", str(tmp_path / "out")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        secret: Path | None = None
        while secret is None and time.monotonic() < deadline:
            assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode()[-3000:]
            found = list(tmpdir.glob("meter-demo-*/bridge-password"))
            secret = found[0] if found else None
            time.sleep(0.1)
        assert secret is not None, "the demo never wrote its bridge password"
        assert secret.stat().st_mode & 0o777 == 0o600
        assert secret.parent.stat().st_mode & 0o777 == 0o700
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        out = proc.communicate(timeout=90)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out[-2000:]
    left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
    assert left == [], f"left behind after Ctrl-C: {left}"


def test_summary_paths_are_never_cut_at_80_columns(tmp_path: Path) -> None:
    long = tmp_path / ("a-rather-long-folder-name-" * 4) / "frames-read"
    buf = io.StringIO()
    print_paths(Console(file=buf, width=80, force_terminal=False), [("per-frame pictures", f"{long}/ (24 files)")])
    assert f"{long}/ (24 files)" in buf.getvalue().replace("\n", "") and f"{long}/" in buf.getvalue()
