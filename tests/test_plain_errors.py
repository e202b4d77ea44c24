"""Issue 20, item 11: what a new user met instead of a clear error, each run through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge.capture.simulator import SIM_ROIS, render_reference

BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=180)


def plain(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    for pydantic_noise in ("validation error for", "type=value_error", "errors.pydantic.dev"):
        assert pydantic_noise not in out, out
    return out


@pytest.mark.parametrize(("tool", "args", "text"), [
    ("meter-edge", ("run",), 'device_id = "kitchen-1"\nstate_dir = /var/lib/meter\n'),
    ("meter-bridge", ("status",), '[mqtt\nport = 1883\n'),
])
def test_a_toml_syntax_error_names_file_line_and_column(tmp_path: Path, tool: str, args: tuple[str, ...],
                                                        text: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    cmd = [BIN / tool, "run", "--config", conf] if tool == "meter-edge" else [BIN / tool, "--config", conf, *args]
    proc = run(*map(str, cmd))
    out = plain(proc)
    assert proc.returncode != 0
    line = 2 if tool == "meter-edge" else 1
    assert f"{conf}:{line}:" in out and "TOML syntax error" in out, out


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    ref = tmp_path / "reference.png"
    cv2.imwrite(str(ref), render_reference())
    return ref


def test_calibrate_out_under_a_file_or_unwritable_says_so(tmp_path: Path, reference: Path) -> None:
    for out in (reference / "layout.toml", Path("/proc/layout.toml")):
        proc = run(str(BIN / "meter-edge"), "calibrate", "--image", str(reference), "--rois", SIM_ROIS,
                   "--out", str(out))
        text = plain(proc)
        assert proc.returncode != 0 and f"cannot write the layout to {out}" in text, text


@pytest.mark.parametrize(("rois", "extra", "expect"), [
    ("198,62,49,71;198,62,49,71", (), "left to right"),
    ("198,62,49,71;258,62,49,71", ("--decimals", "9"), "decimals = 9 but there are only 2"),
])
def test_layout_errors_read_plainly(tmp_path: Path, reference: Path, rois: str, extra: tuple[str, ...],
                                    expect: str) -> None:
    proc = run(str(BIN / "meter-edge"), "calibrate", "--image", str(reference), "--rois", rois, *extra,
               "--out", str(tmp_path / "layout.toml"))
    text = plain(proc)
    assert proc.returncode != 0 and expect in text, text


def test_a_corrupt_outbox_says_what_to_do_not_that_it_must_be_writable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite3").write_bytes(b"this is not a database, it was cut in half by a power failure" * 100)
    conf = tmp_path / "edge.toml"
    conf.write_text(f'device_id = "dev-x"\nstate_dir = "{state}"\n')
    proc = run(str(BIN / "meter-edge"), "run", "--config", str(conf), "--cycles", "1")
    text = plain(proc)
    assert proc.returncode != 0
    assert "damaged" in text and "mv " in text and "must be writable" not in text, text
