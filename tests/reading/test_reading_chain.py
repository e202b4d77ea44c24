"""The whole chain (align, crop, classify, assemble): pipeline, `meter-edge read`, simulated weeks, real photos."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from bench.reading import SIM_START, run_sequence, sim_pipeline
from edge.capture.simulator import format_value, render_frame
from edge.pipeline import STAGES, FramePipeline
from edge.reading.cli import frame_time, read
from edge.reading.model import ReadingState
from meter_vision.infer import DigitModel


@pytest.fixture(scope="module")
def model() -> DigitModel:
    return DigitModel()


@pytest.fixture(scope="module")
def sim(model: DigitModel, tmp_path_factory: pytest.TempPathFactory) -> FramePipeline:
    return sim_pipeline(model, tmp_path_factory.mktemp("sim"))


def test_pipeline_reads_a_clean_frame_with_stage_timings(sim: FramePipeline) -> None:
    img = render_frame(123.4567, rng=np.random.default_rng(0))
    r = sim.process(img, SIM_START, ReadingState())
    assert (r.decision.status, r.decision.value) == ("ok", "00123.456")
    assert set(r.timings) == set(STAGES) and all(v > 0 for v in r.timings.values())
    assert r.explain["rule"] == "first" and len(r.explain["wheels"]) == 8 and r.explain["align"]["ok"]


@pytest.mark.parametrize("frame", [None, np.zeros((480, 640, 3), np.uint8), np.full((10, 10), 255, np.uint8)])
def test_pipeline_turns_a_bad_frame_into_an_error(sim: FramePipeline, frame: np.ndarray | None) -> None:
    s = ReadingState(previous=Decimal("123.456"), previous_at=SIM_START)
    r = sim.process(frame, SIM_START + timedelta(hours=1), s)
    assert r.decision.status == "error" and r.decision.value is None
    assert r.decision.reason and r.decision.reason.startswith("frame_failed: ")
    assert r.state == s


def test_simulated_week_with_faults_never_ok_and_wrong(sim: FramePipeline) -> None:
    """A week, a frame an hour, default faults: 0 ok-but-wrong, >= 95 % of fault-free frames ok."""
    res = run_sequence(sim, days=7, step_min=60, seed=3, mix="default")
    wrong = res.ok_wrong(float(sim.rules.step))
    assert not wrong, [(r.truth, r.decision.value, r.decision.rule, r.tags) for r in wrong]
    assert res.ok_share_clean() >= 0.95, res.rules()
    assert all(r.decision.reason for r in res.records if r.decision.status != "ok")


def test_simulated_days_with_heavy_faults_never_ok_and_wrong(sim: FramePipeline) -> None:
    res = run_sequence(sim, days=2, step_min=60, seed=4, mix="heavy")
    assert not res.ok_wrong(float(sim.rules.step))
    assert res.statuses()["error"] > 0  # hard faults are refused, not guessed


# ---------------------------------------------------------------- meter-edge read
def test_frame_time_from_name_else_mtime(tmp_path: Path) -> None:
    named = tmp_path / "20261124T170000Z.jpg"
    named.write_bytes(b"x")
    assert frame_time(named) == datetime(2026, 11, 24, 17, tzinfo=UTC)
    other = tmp_path / "photo.jpg"
    other.write_bytes(b"x")
    assert abs((frame_time(other) - datetime.now(UTC)).total_seconds()) < 60


def test_read_cli_on_simulated_frames(sim: FramePipeline, tmp_path: Path) -> None:
    from edge.calibrate.layout import save_layout

    layout = save_layout(sim.layout, tmp_path / "layout.toml")
    rng = np.random.default_rng(1)
    values = [123.4601, 123.4702, 123.4703, 123.5004]
    files = []
    for i, v in enumerate(values):
        f = tmp_path / f"{(SIM_START + timedelta(hours=i + 1)):%Y%m%dT%H%M%SZ}.jpg"
        cv2.imwrite(str(f), render_frame(v, rng=rng))
        files.append(str(f))
    bad = tmp_path / "20250106T060000Z.jpg"
    bad.write_bytes(b"not a jpeg")
    files.insert(2, str(bad))
    result = CliRunner().invoke(read, [*files, "--layout", str(layout), "--previous", "123.456",
                                       "--previous-at", "2025-01-06T00:00:00Z", "--explain", "--device-id", "m-1",
                                       "--pictures", str(tmp_path / "pics")])
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert result.exit_code == 1, result.output  # one frame could not be read
    assert [x["seq"] for x in lines] == [0, 1, 2, 3, 4]
    # ok only where the frames after agree (settled, 2 later frames); the last two wait for more
    assert [x["status"] for x in lines] == ["ok", "ok", "error", "suspect", "suspect"]
    assert [x["settlement"] for x in lines] == ["settled", "settled", "outlier", "pending", "pending"]
    assert [x["device_status"] for x in lines] == ["ok", "ok", "error", "ok", "ok"]
    assert [x["value"] for x in lines if x["value"]] == [format_value(v) for v in values]
    assert lines[3]["reason"].startswith("awaiting_later: 1 of the 2 later readings")
    assert lines[3]["reason"] == lines[3]["settlement_reason"] and lines[3]["device_reason"] is None
    assert lines[2]["reason"].startswith("frame_failed: ") and "not a readable image" in lines[2]["reason"]
    assert lines[0]["frame"] == files[0] and lines[0]["device_id"] == "m-1" and lines[0]["model"]
    assert lines[0]["taken_at"] == "2025-01-06T01:00:00Z" and len(lines[0]["digits"]) == 8
    assert lines[0]["explain"]["rule"] == "increase" and set(lines[0]["explain"]["timings_ms"]) == set(STAGES)
    assert lines[0]["explain"]["settlement"] == {"state": "settled", "code": None, "reason": None,
                                                 "before": "previous", "after": [1, 3]}
    assert "could not be read" in result.stderr
    pictures = sorted(p.name for p in (tmp_path / "pics").glob("*.png"))
    assert pictures == sorted(Path(f).stem + ".png" for f in files if f != str(bad))


def test_read_cli_outvotes_a_frame_the_frames_around_it_disagree_with(sim: FramePipeline, tmp_path: Path) -> None:
    """Issue 13: the third frame shows 1.5 m3 more than the frames around it (a misread, as far as the
    sequence can tell): `read` prints it as an outlier, the rest settle."""
    from edge.calibrate.layout import save_layout

    layout = save_layout(sim.layout, tmp_path / "layout.toml")
    rng = np.random.default_rng(2)
    values = [123.4601, 123.4702, 124.9703, 123.4804, 123.4905, 123.5006]
    files = []
    for i, v in enumerate(values):
        f = tmp_path / f"{(SIM_START + timedelta(hours=i + 1)):%Y%m%dT%H%M%SZ}.jpg"
        cv2.imwrite(str(f), render_frame(v, rng=rng))
        files.append(str(f))
    result = CliRunner().invoke(read, [*files, "--layout", str(layout), "--previous", "123.456"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["settlement"] for x in lines] == ["settled", "settled", "outlier", "settled", "pending", "pending"]
    assert lines[2]["status"] == "suspect" and lines[2]["value"] == "00124.970"
    assert lines[2]["reason"].startswith("higher_than_later: 00124.970 is above the later 00123.480, 00123.490")
    assert [x["status"] for x in lines] == ["ok", "ok", "suspect", "ok", "suspect", "suspect"]


def test_read_cli_says_what_is_missing(tmp_path: Path) -> None:
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x")
    result = CliRunner().invoke(read, [str(f), "--layout", str(tmp_path / "nope.toml")])
    assert result.exit_code != 0 and "meter-edge calibrate" in result.output


def test_read_cli_on_the_real_demo_photos(shared_data: Path, tmp_path: Path) -> None:
    """AI-on-the-edge demo: the integer part right on every frame, or held as suspect with a reason."""
    from edge.calibrate.examples import aiotedge_demo_layout

    demo = shared_data / "frames" / "ai-on-the-edge-demo"
    layout = aiotedge_demo_layout(demo, tmp_path / "layout.toml")
    names = (demo / "files.txt").read_text().split()
    result = CliRunner().invoke(read, [*(str(demo / n) for n in names), "--layout", str(layout),
                                       "--interval", "3600"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == len(names)
    for name, line in zip(names, lines, strict=True):
        true_int = int(float(Path(name).stem))
        if line["status"] == "ok":
            assert int(line["value"]) == true_int, (name, line)
        else:
            assert line["status"] == "suspect" and line["reason"], (name, line)
    # settled: every frame but the first (nothing before it, no --previous) and the last two (nothing after)
    assert sum(x["status"] == "ok" for x in lines) >= len(names) - 3
    assert lines[0]["settlement_reason"].startswith("first_reading")
    assert [x["settlement"] for x in lines[-2:]] == ["pending", "pending"]
