"""`meter-edge calibrate` through click's CliRunner, on real frames and on the simulator's reference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge.calibrate.aiotedge import read_aiotedge_config
from edge.calibrate.align import Aligner, crop_rois
from edge.calibrate.cli import calibrate
from edge.calibrate.examples import AIOTEDGE_DEMO_ROIS
from edge.calibrate.layout import Anchor, load_layout, parse_rois
from meter_vision.geometry import Roi


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(calibrate, list(args))
    return result.exit_code, result.output


def test_calibrate_writes_layout_reference_and_picture(tmp_path: Path, demo_dir: Path) -> None:
    out = tmp_path / "site" / "layout.toml"
    code, output = run("--image", str(demo_dir / "reference.jpg"), "--rois", AIOTEDGE_DEMO_ROIS,
                       "--decimals", "1", "--out", str(out))
    assert code == 0, output
    layout = load_layout(out)
    assert layout.digits == parse_rois(AIOTEDGE_DEMO_ROIS)
    assert layout.decimals == 1 and layout.unit == "m3"
    assert layout.reference_image == out.parent / "layout.reference.png"
    ref = cv2.imread(str(layout.reference_image))
    assert ref.shape == (480, 640, 3)
    assert np.abs(ref.astype(int) - cv2.imread(str(demo_dir / "reference.jpg")).astype(int)).max() == 0
    picture = cv2.imread(str(out.parent / "layout.png"))
    assert picture is not None
    assert picture.shape[1] == 2 * 640  # small frames are shown at twice their size
    assert picture.shape[0] > 2 * 480 + 4 * 71  # the frame, then the crops enlarged under it
    assert str(out) in output and "layout.png" in output
    # the device can align the original frame against what was written
    assert Aligner(layout).align(cv2.imread(str(demo_dir / "reference.jpg"))).ok


def test_picture_says_when_the_model_is_missing(tmp_path: Path, demo_dir: Path) -> None:
    out = tmp_path / "layout.toml"
    code, output = run("--image", str(demo_dir / "reference.jpg"), "--rois", AIOTEDGE_DEMO_ROIS,
                       "--model", str(tmp_path / "missing.tflite"), "--out", str(out))
    assert code == 0, output
    assert "model not available" in output and "missing.tflite" in output
    assert cv2.imread(str(tmp_path / "layout.png")) is not None


@pytest.mark.parametrize(
    ("rois", "message"),
    [
        ("198,62,49,71;600,62,49,71", "ROI 2 (600,62,49,71) reaches past the image (640x480"),
        ("198,62,49", "ROI 1 '198,62,49' is invalid"),
        ("198,62,0,71", "width and height must be > 0"),
        ("198,62,49,71;198,62,49,71", "left to right"),
    ],
)
def test_bad_rois_fail_with_a_clear_error(tmp_path: Path, demo_dir: Path, rois: str, message: str) -> None:
    out = tmp_path / "layout.toml"
    code, output = run("--image", str(demo_dir / "reference.jpg"), "--rois", rois, "--out", str(out))
    assert code != 0
    assert message in output
    assert not out.exists()


def test_unreadable_image_and_missing_rois_fail(tmp_path: Path) -> None:
    bad = tmp_path / "frame.jpg"
    bad.write_bytes(b"not a jpeg")
    code, output = run("--image", str(bad), "--rois", "1,1,5,5", "--out", str(tmp_path / "l.toml"))
    assert code != 0 and "not a readable image" in output and "take another frame" in output
    cv2.imwrite(str(bad), np.zeros((48, 64, 3), np.uint8))
    code, output = run("--image", str(bad), "--out", str(tmp_path / "l.toml"))
    assert code != 0 and "no digit windows given" in output


def test_featureless_image_is_refused(tmp_path: Path) -> None:
    img = tmp_path / "wall.png"
    cv2.imwrite(str(img), np.full((480, 640, 3), 128, np.uint8))
    code, output = run("--image", str(img), "--rois", "10,10,20,30", "--out", str(tmp_path / "l.toml"))
    assert code != 0 and "usable features" in output


def test_rotate_option_stores_the_rotated_reference(tmp_path: Path, demo_dir: Path) -> None:
    out = tmp_path / "layout.toml"
    code, output = run("--image", str(demo_dir / "530.07077.jpg"), "--rotate", "-34.6", "--rois",
                       AIOTEDGE_DEMO_ROIS, "--out", str(out))
    assert code == 0, output
    layout = load_layout(out)
    assert layout.alignment.initial_rotation_deg == -34.6
    aligner = Aligner(layout)
    result = aligner.align(cv2.imread(str(demo_dir / "531.82235.jpg")))
    assert result.ok, result.reason
    assert len(crop_rois(result.image, layout)) == 5


def test_aiotedge_import_of_the_demo_config(demo_dir: Path) -> None:
    cfg = read_aiotedge_config(demo_dir / "config.ini")
    assert cfg.digits == [Roi(438, 62, 49, 71)]
    assert cfg.digit_names == ["dig1"]
    assert cfg.initial_rotation_deg == -34.6
    assert cfg.anchors == [Anchor("ref0", 30, 189, 44, 48), Anchor("ref1", 536, 113, 55, 55)]
    assert cfg.analog == [Roi(452, 199, 120, 120)]
    assert cfg.decimals == 0


def test_aiotedge_import_of_the_default_config(default_dir: Path) -> None:
    cfg = read_aiotedge_config(default_dir / "config.ini")
    assert cfg.digits == [Roi(294, 126, 30, 54), Roi(343, 126, 30, 54), Roi(391, 126, 30, 54)]
    assert cfg.initial_rotation_deg == 0.0
    assert [(a.name, a.x, a.y) for a in cfg.anchors] == [("ref0", 103, 271), ("ref1", 442, 142)]
    assert len(cfg.analog) == 4


def test_cli_from_aiotedge_plus_extra_rois(tmp_path: Path, demo_dir: Path) -> None:
    """The demo config has only the last wheel; the four to its left are added with --rois."""
    out = tmp_path / "layout.toml"
    extra = ";".join(AIOTEDGE_DEMO_ROIS.split(";")[:4])
    code, output = run("--from-aiotedge", str(demo_dir / "config.ini"), "--image", str(demo_dir / "reference.jpg"),
                       "--rois", extra, "--out", str(out))
    assert code == 0, output
    layout = load_layout(out)
    assert layout.digits == parse_rois(AIOTEDGE_DEMO_ROIS)  # sorted left to right
    assert layout.alignment.initial_rotation_deg == -34.6
    assert [a.name for a in layout.anchors] == ["ref0", "ref1"]
    result = Aligner(layout).align(cv2.imread(str(demo_dir / "530.48435.jpg")))
    assert result.ok, result.reason


def test_cli_from_aiotedge_warns_about_a_raw_frame(tmp_path: Path, demo_dir: Path) -> None:
    code, output = run("--from-aiotedge", str(demo_dir / "config.ini"), "--image", str(demo_dir / "530.07077.jpg"),
                       "--out", str(tmp_path / "layout.toml"))
    assert "pass the device's reference.jpg" in output
    # on the unrotated frame the imported window is not on the digit either: refused without --force
    assert code != 0 and "not on a digit" in output, output
    assert not (tmp_path / "layout.toml").exists()


def test_cli_from_aiotedge_default_config(tmp_path: Path, default_dir: Path) -> None:
    out = tmp_path / "layout.toml"
    code, output = run("--from-aiotedge", str(default_dir / "config.ini"), "--image",
                       str(default_dir / "reference.jpg"), "--out", str(out), "--force")
    assert code == 0, output  # its windows are not on the digits (test_calibrate_check.py): --force writes it
    assert load_layout(out).digits == [Roi(294, 126, 30, 54), Roi(343, 126, 30, 54), Roi(391, 126, 30, 54)]
    assert "ref0 is +16, +2 px" in output  # the shipped default config does not quite fit its photo
