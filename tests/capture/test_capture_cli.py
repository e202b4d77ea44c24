"""`meter-edge capture`: one frame through the agent's own camera backend, LED and config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from gpiozero.pins.mock import MockFactory

from edge.capture.cli import capture, take_frame
from edge.capture.device import size_mismatch
from edge.config import load_edge_config


def write_config(tmp_path: Path, capture_section: str, led_pin: int = 0) -> Path:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\nlayout = "{tmp_path / "layout.toml"}"\n'
                   f"[capture]\n{capture_section}\n[led]\npin = {led_pin}\nwarmup_s = 0.01\n")
    return cfg


def test_led_lit_for_the_capture_and_off_after(tmp_path: Path) -> None:
    cfg = load_edge_config(write_config(tmp_path, 'backend = "simulator"\nsource = "3"', led_pin=17))
    factory = MockFactory()
    frame = take_frame(cfg, pin_factory=factory)
    assert frame.image.ndim == 3 and frame.source.startswith("simulator:3#0")
    factory.pin(17).assert_states([False, True, False])


def test_simulator_frame_written_and_position_kept_like_the_agent(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 'backend = "simulator"\nsource = "5"\nsim_start = "2026-01-05T00:00:00Z"')
    runner = CliRunner()
    first = runner.invoke(capture, ["--config", str(cfg), "--out", str(tmp_path / "a.png")])
    assert first.exit_code == 0, first.output
    img = cv2.imread(str(tmp_path / "a.png"))
    assert img is not None
    h, w = img.shape[:2]
    assert f"{w}x{h} px from simulator (simulator:5#0)" in first.output and "no LED" in first.output
    second = runner.invoke(capture, ["--config", str(cfg), "--out", str(tmp_path / "b.png")])
    assert "simulator:5#1" in second.output  # the next frame, as the agent's next cycle would take
    assert (tmp_path / "state" / "capture-simulator.json").is_file()


def test_folder_frame_is_the_file_bit_for_bit(tmp_path: Path, shared_data: Path) -> None:
    src = tmp_path / "frames"
    src.mkdir()
    shutil.copy(shared_data / "frames" / "ai-on-the-edge-demo" / "530.07077.jpg", src / "01.jpg")
    cfg = write_config(tmp_path, f'backend = "folder"\nsource = "{src}"')
    out = tmp_path / "frame.png"
    result = CliRunner().invoke(capture, ["--config", str(cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "640x480 px from folder" in result.output
    assert np.array_equal(cv2.imread(str(out)), cv2.imread(str(src / "01.jpg")))
    again = CliRunner().invoke(capture, ["--config", str(cfg), "--out", str(out)])
    assert again.exit_code == 1 and "no frame: all frames" in again.output and "capture.loop" in again.output


def test_broken_configs_are_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = write_config(tmp_path, f'backend = "folder"\nsource = "{tmp_path / "nowhere"}"')
    r = runner.invoke(capture, ["--config", str(missing), "--out", str(tmp_path / "f.png")])
    assert r.exit_code == 1 and "capture (folder)" in r.output and "does not exist" in r.output
    seed = write_config(tmp_path, 'backend = "simulator"\nsource = "abc"')
    r = runner.invoke(capture, ["--config", str(seed), "--out", str(tmp_path / "f.png")])
    assert r.exit_code == 1 and "not a seed" in r.output
    ok = write_config(tmp_path, 'backend = "simulator"')
    r = runner.invoke(capture, ["--config", str(ok), "--out", str(tmp_path / "f.gif")])
    assert r.exit_code == 2 and ".jpg, .png or .bmp" in r.output
    assert not (tmp_path / "f.png").exists() and not (tmp_path / "f.gif").exists()


def test_command_line_with_an_led_on_gpiozero_mock_pins(tmp_path: Path) -> None:
    """The installed command end to end: its LED set up through gpiozero (mock pins, no Pi here)."""
    cfg = write_config(tmp_path, 'backend = "simulator"', led_pin=17)
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    out = tmp_path / "frame.jpg"
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "capture", "--config", str(cfg), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LED on GPIO17 for 0.01 s" in proc.stdout and cv2.imread(str(out)) is not None


@pytest.mark.parametrize(("frame", "ref", "fits"), [
    ((640, 480), (640, 480), None), ((1280, 960), (640, 480), "scaled"), ((1280, 720), (640, 480), "aspect"),
])
def test_size_against_the_reference(frame: tuple[int, int], ref: tuple[int, int], fits: str | None) -> None:
    note = size_mismatch(*frame, *ref)
    assert (note is None) if fits is None else (fits in note if note else False)
