"""The virtual meter: wheels show the truth at SIM_ROIS, roll like a drum, and the renders are deterministic."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edge.capture.simulator import (
    ROIS,
    SIM_ROIS,
    FaultMix,
    Faults,
    digit_crops,
    format_value,
    render_frame,
    render_reference,
    render_wheel,
    sample_faults,
    wheel_positions,
)
from edge.capture.simulator.meter import MeterStyle


@pytest.mark.parametrize(("value", "expected"), [
    (123.456, [0, 0, 1, 2, 3, 4, 5, 6]),
    (123.4565, [0, 0, 1, 2, 3, 4, 5, 6.5]),
    (123.4595, [0, 0, 1, 2, 3, 4, 5.5, 9.5]),          # the tenth-litre wheel rolls with the last one
    (99.9995, [0, 0, 0.5, 9.5, 9.5, 9.5, 9.5, 9.5]),   # 99.999 → 100.000: every wheel carries
    (99999.9999, [9.9, 9.9, 9.9, 9.9, 9.9, 9.9, 9.9, 9.9]),
    (0.0, [0] * 8),
])
def test_wheel_positions_follow_the_odometer_carry(value: float, expected: list[float]) -> None:
    assert wheel_positions(value) == pytest.approx(expected, abs=1e-6)


def test_format_value_never_rounds_up() -> None:
    assert format_value(123.4569) == "00123.456"
    assert format_value(99.9999) == "00099.999"
    assert format_value(0.001) == "00000.001"


def test_sim_rois_are_eight_wheel_windows_left_to_right() -> None:
    boxes = [tuple(int(v) for v in r.split(",")) for r in SIM_ROIS.split(";")]
    assert boxes == ROIS and len(boxes) == 8
    assert all(w == 30 and h == 48 for _, _, w, h in boxes)
    xs = [x for x, *_ in boxes]
    assert xs == sorted(xs) and all(b - a >= 30 for a, b in itertools.pairwise(xs))


def _crops(img: np.ndarray) -> list[np.ndarray]:
    return [img[y:y + h, x:x + w].astype(np.float32) for x, y, w, h in ROIS]


def _nearest_digit(crop: np.ndarray, decimal: bool) -> int:
    """Which drum position 0..9 the crop looks most like (normalised correlation, illumination-proof)."""
    g = cv2.cvtColor(crop.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    scores = []
    for d in range(10):
        t = cv2.cvtColor(render_wheel(float(d), decimal=decimal), cv2.COLOR_BGR2GRAY).astype(np.float32)
        scores.append(float(cv2.matchTemplate(g, t, cv2.TM_CCOEFF_NORMED)[0, 0]))
    return int(np.argmax(scores))


@pytest.mark.parametrize("value", [123.456, 4709.218, 90817.363])
def test_the_crops_at_sim_rois_show_the_value(value: float) -> None:
    img = render_frame(value, Faults(), np.random.default_rng(0))
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8
    shown = [_nearest_digit(c, i >= 5) for i, c in enumerate(_crops(img))]
    assert "".join(map(str, shown)) == format_value(value).replace(".", "")


def test_a_rolling_wheel_moves_up_by_its_fraction_of_a_pitch() -> None:
    style = MeterStyle.default()
    a = cv2.cvtColor(render_wheel(3.0, style), cv2.COLOR_BGR2GRAY).astype(np.float32)
    b = cv2.cvtColor(render_wheel(3.1, style), cv2.COLOR_BGR2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(a[12:36], b[12:36])  # central rows: little curvature
    assert abs(dx) < 0.5
    assert dy == pytest.approx(-0.1 * style.pitch, abs=1.2)  # content goes up, the next digit comes from below
    half = render_wheel(3.5, style)
    assert not np.array_equal(half, render_wheel(3.0, style))
    assert np.array_equal(render_wheel(13.0, style), render_wheel(3.0, style))


def test_renders_are_deterministic_for_a_seed() -> None:
    a = render_frame(321.5, sample_faults(FaultMix.named("heavy"), np.random.default_rng(5)), np.random.default_rng(5))
    b = render_frame(321.5, sample_faults(FaultMix.named("heavy"), np.random.default_rng(5)), np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert np.array_equal(render_reference(), render_reference())


def test_geometric_and_photometric_faults_change_the_picture() -> None:
    clean = render_frame(50.0, Faults(noise_sigma=0), np.random.default_rng(0)).astype(np.float32)
    shifted = render_frame(50.0, Faults(dx=20, noise_sigma=0), np.random.default_rng(0)).astype(np.float32)
    assert np.abs(shifted[:, 120:500] - clean[:, 100:480]).mean() < 3  # moved by 20 px to the right
    dark = render_frame(50.0, Faults(gain=0.05, tags=("hard_dark",)), np.random.default_rng(0))
    assert dark.mean() < 0.1 * clean.mean()


def test_default_fault_mix_is_about_one_frame_in_five() -> None:
    rng = np.random.default_rng(1)
    faults = [sample_faults(FaultMix(), rng) for _ in range(4000)]
    share = sum(bool(f.tags) for f in faults) / len(faults)
    assert 0.15 <= share <= 0.3
    assert 0 < sum(f.hard for f in faults) < 100
    assert not any(sample_faults(FaultMix.named("none"), rng).tags for _ in range(200))
    with pytest.raises(ValueError, match="default, none or heavy"):
        FaultMix.named("awful")


def test_digit_crops_are_deterministic_labelled_and_crop_sized() -> None:
    crops = digit_crops(40, seed=7)
    again = digit_crops(40, seed=7)
    assert len(crops) == 40
    assert all(np.array_equal(a, b) and la == lb for (a, la), (b, lb) in zip(crops, again, strict=True))
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(crops, digit_crops(40, seed=8), strict=True))
    for img, label in crops:
        assert img.dtype == np.uint8 and img.ndim == 3 and 47 <= img.shape[0] <= 49 and 29 <= img.shape[1] <= 31
        assert 0.0 <= label <= 9.9 and round(label * 10) == pytest.approx(label * 10)
    assert digit_crops(0, seed=1) == []
