"""layout.toml: ROI parsing, save/load round trip, and errors that say which key and what to do."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.calibrate.layout import (
    AlignSettings,
    Anchor,
    Layout,
    LayoutError,
    Roi,
    check_rois_inside,
    load_layout,
    parse_rois,
    save_layout,
)


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    path = tmp_path / "layout.reference.png"
    cv2.imwrite(str(path), np.full((48, 64, 3), 128, np.uint8))
    return path


def test_parse_rois_accepts_commas_spaces_and_semicolons() -> None:
    assert parse_rois("1,2,3,4; 10 20 30 40;\n50,60,7,8;") == [Roi(1, 2, 3, 4), Roi(10, 20, 30, 40), Roi(50, 60, 7, 8)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,3", "ROI 1 '1,2,3'"),
        ("1,2,3,4;5,6,0,8", "ROI 2 '5,6,0,8'"),
        ("1,2,3,4;-5,6,7,8", "ROI 2"),
        ("1,2,x,4", "ROI 1"),
        ("  ;  ", "no ROIs given"),
    ],
)
def test_parse_rois_names_the_bad_roi(text: str, expected: str) -> None:
    with pytest.raises(LayoutError, match=expected):
        parse_rois(text)


def test_check_rois_inside_names_the_roi_past_the_edge() -> None:
    check_rois_inside([Roi(0, 0, 64, 48)], 64, 48)
    with pytest.raises(LayoutError, match=r"ROI 2 \(60,0,5,10\) reaches past the image \(64x48"):
        check_rois_inside([Roi(0, 0, 10, 10), Roi(60, 0, 5, 10)], 64, 48)


def test_save_and_load_round_trip_with_relative_reference(tmp_path: Path, reference: Path) -> None:
    layout = Layout(
        reference_image=reference,
        anchors=[Anchor("ref0", 1, 2, 10, 12)],
        digits=[Roi(5, 6, 7, 8), Roi(20, 6, 7, 8)],
        decimals=1,
        unit="m3",
        alignment=AlignSettings(initial_rotation_deg=-34.6, refine=False),
    )
    path = save_layout(layout, tmp_path / "layout.toml")
    text = path.read_text()
    assert text.startswith("# Meter layout written by `meter-edge calibrate`")
    assert 'reference_image = "layout.reference.png"' in text
    loaded = load_layout(path)
    assert loaded.reference_image.resolve() == reference.resolve()
    assert loaded.model_dump(exclude={"reference_image"}) == layout.model_dump(exclude={"reference_image"})


def test_layout_moved_with_its_reference_still_loads(tmp_path: Path, reference: Path) -> None:
    save_layout(Layout(reference_image=reference, digits=[Roi(1, 1, 5, 5)]), tmp_path / "layout.toml")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for name in ("layout.toml", "layout.reference.png"):
        (tmp_path / name).rename(moved / name)
    assert load_layout(moved / "layout.toml").reference_image == moved / "layout.reference.png"


def test_missing_layout_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="does not exist: write one with `meter-edge calibrate"):
        load_layout(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("reference_image = 'layout.reference.png'\ndigits = [{x = 1, y = 2, w = 0, h = 4}]", r"digits\[1\].w"),
        ("reference_image = 'layout.reference.png'\ndigits = []", "digits"),
        ("digits = [{x = 1, y = 2, w = 3, h = 4}]", "reference_image: Field required"),
        ("reference_image = 'layout.reference.png'\ndigits = [{x = 1, y = 2, w = 3, h = 4}]\ncolour = 1",
         "colour: Extra inputs are not permitted"),
        ("reference_image = 'layout.reference.png'\ndigits = [{x = 1, y = 2, w = 3, h = 4}]\n"
         "[alignment]\nmin_scale = 2", "alignment.min_scale"),
        ("reference_image = 'layout.reference.png'\ndigits = [{x = 1, y = 2, w = 3, h = 4}]\ndecimals = 2",
         "only 1 digit ROIs"),
        ("reference_image = 'layout.reference.png'\n"
         "digits = [{x = 30, y = 2, w = 3, h = 4}, {x = 1, y = 2, w = 3, h = 4}]", "left to right"),
        ("reference_image = 'missing.png'\ndigits = [{x = 1, y = 2, w = 3, h = 4}]", "missing.png does not exist"),
        ("version = 7\nreference_image = 'layout.reference.png'", "version = 7"),
        ("digits = [", "not valid TOML"),
    ],
)
def test_invalid_layout_names_the_key(tmp_path: Path, reference: Path, body: str, expected: str) -> None:
    path = tmp_path / "layout.toml"
    path.write_text(body)
    with pytest.raises(LayoutError, match=expected):
        load_layout(path)
