"""The household's consumption, the simulator backend's clock, and `meter-edge simulate`."""

from __future__ import annotations

import csv
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from edge.capture import open_camera
from edge.capture.backends.folder import time_from_name
from edge.capture.backends.simulator import SimulatorCamera
from edge.capture.simulator import FaultMix, Household, format_value
from edge.capture.simulator.cli import simulate
from edge.config import CaptureConfig

START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday


def test_household_uses_150_to_300_litres_a_day_mostly_by_day() -> None:
    h = Household(seed=4, start=START, utc_offset_h=3)
    night = day = 0.0
    for d in range(7):
        midnight_local = START - timedelta(hours=3) + timedelta(days=d)
        total = h.day_litres(d)
        assert 140 <= total <= 340
        night += h.litres_between(midnight_local + timedelta(hours=1), midnight_local + timedelta(hours=5))
        day += h.litres_between(midnight_local + timedelta(hours=17), midnight_local + timedelta(hours=21))
    assert night < 0.25 * day  # night lull vs evening peak, same number of hours


def test_household_value_is_monotonic_and_deterministic() -> None:
    h, again = Household(seed=9, start=START), Household(seed=9, start=START)
    times = [START + timedelta(minutes=17 * i) for i in range(300)]
    values = [h.value_at(t) for t in reversed(times)][::-1]  # any order of evaluation
    assert values[0] == pytest.approx(123.456)
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values == [again.value_at(t) for t in times]
    assert values[-1] != Household(seed=10, start=START).value_at(times[-1])
    with pytest.raises(ValueError, match="before"):
        h.value_at(START - timedelta(seconds=1))


def test_simulator_camera_steps_a_simulated_clock_and_survives_a_restart(tmp_path: Path) -> None:
    cfg = CaptureConfig(backend="simulator", source="3", sim_start="2025-01-06T06:00:00Z", sim_step_s=900,
                        sim_faults="none")
    cam = open_camera(cfg, tmp_path)
    assert isinstance(cam, SimulatorCamera)
    frames = [cam.capture() for _ in range(3)]
    assert [f.taken_at for f in frames] == [START + timedelta(hours=6, minutes=15 * i) for i in range(3)]
    assert frames[0].image.shape == (480, 640, 3)
    assert cam.last_truth == pytest.approx(cam.household.value_at(frames[-1].taken_at))
    restarted = open_camera(cfg, tmp_path)
    assert restarted.capture().taken_at == START + timedelta(hours=6, minutes=45)


def test_simulator_seed_must_be_an_integer(tmp_path: Path) -> None:
    from edge.capture import CaptureError

    with pytest.raises(CaptureError, match="not a seed"):
        open_camera(CaptureConfig(backend="simulator", source="abc"), tmp_path)


def test_simulate_cli_writes_frames_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    result = CliRunner().invoke(simulate, ["--days", "0.5", "--interval-min", "90", "--out", str(out), "--seed",
                                           "2", "--start", "2025-01-06T00:00:00Z", "--faults", "heavy"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "truth.csv").open()))
    assert len(rows) == 8
    frames = sorted(out.glob("2025*.jpg"))
    assert [f.name for f in frames] == [r["file"] for r in rows]
    assert time_from_name(frames[1]) == START + timedelta(minutes=90)
    values = [float(r["value_exact"]) for r in rows]
    assert values == sorted(values)
    assert all(r["value"] == format_value(float(r["value_exact"])) for r in rows)
    assert any(r["faults"] for r in rows)
    reference = cv2.imread(str(out / "reference.jpg"))
    assert reference is not None and reference.shape == (480, 640, 3)
    assert "--rois" in result.output and "176,150,30,48" in result.output


def test_simulate_cli_refuses_a_bad_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(simulate, ["--days", "1", "--out", str(tmp_path), "--start", "yesterday"])
    assert result.exit_code != 0 and "ISO 8601" in result.output


def test_named_mixes() -> None:
    assert FaultMix.named("none").shift == 0 and FaultMix.named("heavy").shift > FaultMix().shift
