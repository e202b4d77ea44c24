"""`meter-edge calibrate` checks that each window sits on a digit, and prints the value as `read` resolves it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge.calibrate.check import check_windows
from edge.calibrate.cli import calibrate
from edge.calibrate.examples import AIOTEDGE_DEMO_ROIS
from edge.calibrate.layout import load_layout, parse_rois
from edge.calibrate.picture import BAD_COLOUR
from edge.capture.simulator import SIM_ROIS, render_reference
from edge.reading.cli import read
from meter_vision.geometry import Roi
from meter_vision.infer import DigitModel


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(calibrate, list(args))
    return result.exit_code, result.output


def red_pixels(picture: np.ndarray) -> int:
    return int(np.all(np.abs(picture.astype(int) - np.array(BAD_COLOUR)) < 30, axis=2).sum())


def test_a_layout_15_px_off_its_photo_is_refused_with_a_red_picture(tmp_path: Path, default_dir: Path) -> None:
    """AI-on-the-edge's shipped default config sits 14-16 px beside the digits of its own reference
    photo (half a 30 px window): every window cuts a digit in half. That must not pass quietly."""
    out = tmp_path / "layout.toml"
    code, output = run("--from-aiotedge", str(default_dir / "config.ini"), "--image",
                       str(default_dir / "reference.jpg"), "--out", str(out))
    assert code != 0, output
    assert "not on a digit" in output and "--force" in output
    assert output.count("WARNING: window") >= 2
    assert not out.exists() and not (tmp_path / "layout.reference.png").exists()
    picture = cv2.imread(str(tmp_path / "layout.png"))
    assert picture is not None and red_pixels(picture) > 500

    code, output = run("--from-aiotedge", str(default_dir / "config.ini"), "--image",
                       str(default_dir / "reference.jpg"), "--out", str(out), "--force")
    assert code == 0, output
    assert "WARNING: window" in output and "--force" in output
    assert len(load_layout(out).digits) == 3


def test_the_same_windows_moved_onto_the_digits_pass(tmp_path: Path, default_dir: Path) -> None:
    out = tmp_path / "layout.toml"
    code, output = run("--image", str(default_dir / "reference.jpg"), "--rois", "310,126,30,54;359,126,30,54;"
                       "407,126,30,54", "--out", str(out))
    assert code == 0, output
    assert "read would give: 016 m3" in output
    assert "WARNING" not in output
    assert red_pixels(cv2.imread(str(tmp_path / "layout.png"))) == 0


def test_printed_value_is_what_read_resolves_not_the_raw_digits(tmp_path: Path, demo_dir: Path) -> None:
    """At 530.07 the tens wheel is still rolling from 2 to 3 (it shows about 2.9) while the units wheel
    has passed 0: `read` says 00530, the raw floors would say 00520."""
    frame = demo_dir / "530.07077.jpg"
    out = tmp_path / "layout.toml"
    code, output = run("--image", str(frame), "--rotate", "-34.6", "--rois", AIOTEDGE_DEMO_ROIS, "--out", str(out))
    assert code == 0, output
    assert "read would give: 00530 m3" in output
    result = CliRunner().invoke(read, [str(frame), "--layout", str(out)])
    assert result.exit_code == 0, result.output
    line = next(json.loads(t) for t in result.output.splitlines() if t.startswith("{"))
    assert line["value"] == "00530"


def test_simulated_windows_half_a_wheel_off_are_all_caught() -> None:
    image = render_reference()
    model = DigitModel()
    rois = parse_rois(SIM_ROIS)
    good = check_windows(image, rois, model)
    assert all(c.ok for c in good), [c.problem for c in good]
    assert all(c.offset_px is not None and abs(c.offset_px) <= 4 for c in good)
    moved = [Roi(r.x + 18, r.y, r.w, r.h) for r in rois[:-1]]  # half the 36 px wheel pitch
    bad = check_windows(image, moved, model)
    assert all(not c.ok for c in bad), [(c.prediction, c.offset_px) for c in bad]


@pytest.mark.parametrize("shift", [-15, 15])
def test_demo_windows_moved_by_a_third_are_caught(tmp_path: Path, demo_dir: Path, shift: int) -> None:
    rois = ";".join(f"{r.x + shift},{r.y},{r.w},{r.h}" for r in parse_rois(AIOTEDGE_DEMO_ROIS))
    code, output = run("--image", str(demo_dir / "reference.jpg"), "--rois", rois, "--out",
                       str(tmp_path / "layout.toml"))
    assert code != 0, output
    assert "not on a digit" in output
