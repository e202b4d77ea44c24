"""`meter-edge calibrate --auto`: windows proposed on a real tilted photo and a simulated tilted, glared meter;
a photo without a counter is a clear error that says to draw the windows."""

from __future__ import annotations

import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge.calibrate.cli import calibrate
from edge.capture.simulator.faults import Faults, Glare
from edge.capture.simulator.meter import ROIS, MeterStyle, render_frame
from meter_vision.geometry import rotation_matrix, transform_points
from meter_vision.windows import NoCounterFound, propose_windows


def test_simulated_tilted_meter_with_glare(tmp_path: Path) -> None:
    angle = 12.0
    faults = Faults(angle_deg=angle, glare=Glare(260, 200, 50, 0.8))
    img = render_frame(4711.237, faults, np.random.default_rng(3), MeterStyle.random(np.random.default_rng(5)))
    frame = tmp_path / "tilted.png"
    cv2.imwrite(str(frame), img)
    out = tmp_path / "layout.toml"
    result = CliRunner().invoke(calibrate, ["--image", str(frame), "--auto", "--digits", "8", "--decimals", "3",
                                            "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "found a counter of 8 wheels (8 seen)" in result.output
    assert "read would give: 04711.237 m3" in result.output
    layout = tomllib.loads(out.read_text())
    rot = layout["alignment"]["initial_rotation_deg"]
    assert abs(rot - angle) < 1.0
    assert layout["decimals"] == 3 and len(layout["digits"]) == 8
    # every window centred within 3 px of where the renderer put the wheel
    h, w = img.shape[:2]
    truth = transform_points(cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0),
                             np.array([[x + rw / 2, y + rh / 2] for x, y, rw, rh in ROIS], float))
    found = transform_points(np.linalg.inv(rotation_matrix(w, h, rot)),
                             np.array([[d["x"] + d["w"] / 2, d["y"] + d["h"] / 2] for d in layout["digits"]], float))
    assert np.hypot(*(found - truth).T).max() < 3.0
    assert (tmp_path / "layout.png").is_file() and (tmp_path / "layout.reference.png").is_file()


def test_real_photo_tilted_35_degrees(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "layout.toml"
    result = CliRunner().invoke(calibrate, ["--image", str(demo_dir / "531.10877.jpg"), "--auto", "--digits", "5",
                                            "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "read would give: 00531 m3" in result.output and ": sure" in result.output
    rot = tomllib.loads(out.read_text())["alignment"]["initial_rotation_deg"]
    assert abs(rot - -34.6) < 1.5


def test_no_counter_is_an_error_that_says_to_draw_the_windows(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.dstack([(xx / 3 + yy / 4).astype(np.uint8)] * 3)  # a smooth gradient: nothing digit-like
    with pytest.raises(NoCounterFound):
        propose_windows(img, digits=5)
    frame = tmp_path / "wall.png"
    cv2.imwrite(str(frame), img)
    result = CliRunner().invoke(calibrate, ["--image", str(frame), "--auto", "--out", str(tmp_path / "l.toml")])
    assert result.exit_code == 1
    assert "no row of digits found" in result.output and '--rois "x,y,w,h;' in result.output
    assert not (tmp_path / "l.toml").exists()


def test_auto_refuses_windows_given_by_hand(tmp_path: Path) -> None:
    frame = tmp_path / "f.png"
    cv2.imwrite(str(frame), np.zeros((48, 64, 3), np.uint8))
    r = CliRunner().invoke(calibrate, ["--image", str(frame), "--auto", "--rois", "1,1,5,5",
                                       "--out", str(tmp_path / "l.toml")])
    assert r.exit_code == 1 and "leave out --rois" in r.output
    r = CliRunner().invoke(calibrate, ["--image", str(frame), "--digits", "5", "--rois", "1,1,5,5",
                                       "--out", str(tmp_path / "l.toml")])
    assert r.exit_code == 1 and "--digits goes with --auto" in r.output
