"""Alignment on the simulator's frames (runs on a fresh clone, no shared data): camera moves undone
within 2 px, hard faults refused, and the calibrate CLI on the simulator's reference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge.calibrate.align import Aligner, AlignResult, crop_rois
from edge.calibrate.cli import calibrate
from edge.calibrate.layout import Layout, load_layout, parse_rois
from meter_vision.geometry import transform_points

sim = pytest.importorskip("edge.capture.simulator")


@pytest.fixture(scope="module")
def sim_layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    out = tmp_path_factory.mktemp("sim") / "layout.toml"
    ref = out.parent / "frame.png"
    cv2.imwrite(str(ref), sim.render_reference())
    result = CliRunner().invoke(calibrate, ["--image", str(ref), "--rois", sim.SIM_ROIS, "--decimals", "3",
                                            "--out", str(out)])
    assert result.exit_code == 0, result.output
    return load_layout(out)


@pytest.fixture(scope="module")
def sim_aligner(sim_layout: Layout) -> Aligner:
    return Aligner(sim_layout)


def _error(result: AlignResult, faults: object, layout: Layout) -> float:
    w, h = 640, 480
    m = cv2.getRotationMatrix2D((w / 2, h / 2), faults.angle_deg, faults.scale)  # type: ignore[attr-defined]
    m[:, 2] += (faults.dx, faults.dy)  # type: ignore[attr-defined]
    worst = 0.0
    for r in layout.digits:
        corners = np.array(r.corners(), np.float64)
        in_frame = transform_points(m, corners)
        worst = max(worst, float(np.abs(transform_points(result.matrix, in_frame) - corners).max()))
    return worst


def test_calibrate_on_the_simulator_reference(sim_layout: Layout) -> None:
    assert sim_layout.digits == parse_rois(sim.SIM_ROIS)
    assert sim_layout.decimals == 3
    assert (sim_layout.reference_image.parent / "layout.png").is_file()


@pytest.mark.parametrize(
    ("dx", "dy", "angle", "scale"),
    [(25.0, -12.0, 2.5, 1.04), (-30.0, 20.0, -3.0, 0.96), (12.0, 28.0, 1.0, 1.0), (0.0, 0.0, 0.0, 1.0)],
)
def test_simulated_camera_moves_are_undone_within_2px(
    sim_aligner: Aligner, sim_layout: Layout, dx: float, dy: float, angle: float, scale: float
) -> None:
    faults = sim.Faults(dx=dx, dy=dy, angle_deg=angle, scale=scale, noise_sigma=3.0)
    frame = sim.render_frame(432.109, faults, np.random.default_rng(3))
    result = sim_aligner.align(frame)
    assert result.ok, result.reason
    err = _error(result, faults, sim_layout)
    assert err < 2.0, f"ROI corners off by {err:.2f} px"
    assert len(crop_rois(result.image, sim_layout)) == 8


def test_random_soft_faults_align_and_hard_ones_are_refused(sim_aligner: Aligner, sim_layout: Layout) -> None:
    rng = np.random.default_rng(11)
    mix = sim.FaultMix.named("heavy")
    seen_hard = seen_soft = 0
    for i in range(40):
        faults = sim.sample_faults(mix, rng)
        frame = sim.render_frame(100 + i * 0.37, faults, rng)
        result = sim_aligner.align(frame)
        if faults.hard:
            seen_hard += 1
            assert not result.ok and result.reason, faults.tags
        else:
            seen_soft += 1
            assert result.ok, (faults, result.reason)
            assert _error(result, faults, sim_layout) < 2.0, faults
    assert seen_soft > 30


@pytest.mark.parametrize(("tag", "words"), [("hard_dark", "too dark"), ("hard_blur", "blurred")])
def test_simulated_hard_faults_are_refused(sim_aligner: Aligner, tag: str, words: str) -> None:
    faults = sim.Faults(gain=0.05, tags=(tag,)) if tag == "hard_dark" else sim.Faults(blur_sigma=8.0, tags=(tag,))
    result = sim_aligner.align(sim.render_frame(250.5, faults, np.random.default_rng(5)))
    assert not result.ok
    assert result.reason and words in result.reason


def test_real_photo_is_another_scene_for_the_simulated_meter(sim_aligner: Aligner, shared_data: Path) -> None:
    frame = cv2.imread(str(shared_data / "frames" / "ai-on-the-edge-demo" / "530.07077.jpg"))
    result = sim_aligner.align(frame)
    assert not result.ok and result.reason and "another scene" in result.reason
