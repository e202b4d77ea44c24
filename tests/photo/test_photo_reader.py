"""`meter_vision.photo.read_photo` on real meter photos and simulated phone photos: the value right or an
honest `unsure`, never a wrong value marked ok; the counter box a resident drags is honoured; an image
no reading can come from is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.simulator.phone import phone_photo
from meter_vision.images import read_bgr
from meter_vision.infer import DigitModel
from meter_vision.photo import PhotoRefused, read_photo

DEMO = "frames/ai-on-the-edge-demo"


def right(value: str | None, reading: float, decimals: int) -> bool:
    """The counter's value, or the next step when the lowest wheel is more than half way to it."""
    if value is None:
        return False
    steps = reading * 10 ** decimals
    got = round(float(value) * 10 ** decimals)
    return got == math.floor(steps + 1e-6) or (steps - math.floor(steps) > 0.5 and got == math.floor(steps) + 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["530.07077.jpg", "530.95675.jpg", "531.63071.jpg"])
def test_real_tilted_meter_photo(shared_data: Path, digit_model: DigitModel, name: str) -> None:
    """ESP32-CAM frames of a real meter turned 34.6°: five wheels, the last one rolling in 530.95675."""
    reading = float(Path(name).stem)
    result = read_photo(read_bgr(shared_data / DEMO / name), digits=5, decimals=0, model=digit_model)
    assert result.status in ("ok", "unsure")
    if result.status == "ok":
        assert right(result.value, reading, 0), result
    assert result.value is not None and len(result.value) == 5
    assert 25 < abs(result.angle_deg) < 45
    assert len(result.boxes) == 5 and result.counter_box is not None
    json.dumps(result.to_json())


@pytest.mark.slow
def test_real_meter_with_a_serial_number_above_the_counter(shared_data: Path, digit_model: DigitModel) -> None:
    """The serial number 2000692952 is a longer row of digits right above the counter 00016."""
    img = read_bgr(shared_data / "frames/ai-on-the-edge-default-config/reference.jpg")
    result = read_photo(img, digits=5, decimals=0, model=digit_model)
    assert result.status != "ok" or result.value == "00016", result
    assert result.value == "00016"


@pytest.mark.slow
@pytest.mark.parametrize("turn", [cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE])
def test_a_counter_turned_by_a_quarter(shared_data: Path, digit_model: DigitModel, turn: int) -> None:
    """A meter on a vertical pipe: the counter reads top to bottom or bottom to top; the first wheel's box
    is at the right end."""
    img = cv2.rotate(read_bgr(shared_data / "frames/ai-on-the-edge-default-config/reference.jpg"), turn)
    result = read_photo(img, digits=5, decimals=0, model=digit_model)
    assert result.value == "00016" and result.status == "ok", result
    assert 80 < abs(result.rotation_deg) < 100
    first, last = result.boxes[0], result.boxes[-1]
    assert (first[1] < last[1]) == (turn == cv2.ROTATE_90_CLOCKWISE)  # wheel 1 above wheel 5 when turned clockwise


@pytest.mark.slow
def test_a_photo_where_the_counter_is_covered_is_never_ok(shared_data: Path, digit_model: DigitModel) -> None:
    """The AI-on-the-edge device sits in front of the meter: no counter in view."""
    img = read_bgr(shared_data / "frames/ai-on-the-edge-default-config/doc_watermeter_all.jpg")
    result = read_photo(img, digits=5, decimals=0, model=digit_model)
    assert result.status in ("unsure", "no_counter")
    assert result.reason


@pytest.mark.slow
def test_simulated_phone_photos_are_right_or_unsure(digit_model: DigitModel) -> None:
    rng = np.random.default_rng(2024)
    ok = 0
    for _ in range(4):
        photo = phone_photo(rng)
        result = read_photo(photo.image, digits=5, decimals=3, model=digit_model)
        if result.status == "ok":
            assert right(result.value, photo.reading, 3), (photo.value, photo.tags, result)
            ok += 1
        else:
            assert result.reason
    assert ok >= 2  # measured: most easy photos read ok (docs/photo.md)


@pytest.mark.slow
def test_the_residents_counter_box_is_where_it_reads(digit_model: DigitModel) -> None:
    photo = phone_photo(np.random.default_rng(11))
    result = read_photo(photo.image, digits=5, decimals=3, model=digit_model, counter_box=photo.counter_box)
    assert result.status == "ok" and right(result.value, photo.reading, 3), (photo.value, result)
    x, y, w, h = photo.counter_box
    for cx, cy in (np.mean(wheel.corners, axis=0) for wheel in result.wheels):
        assert x <= cx <= x + w and y <= cy <= y + h
    # a box on bare wall: the box is divided into wheels, and nothing there is ok
    empty = read_photo(photo.image, digits=5, decimals=3, model=digit_model, counter_box=(0, 0, 200, 40))
    assert empty.status != "ok"


@pytest.mark.parametrize("shape", [(1, 1, 3), (40, 600, 3), (13_000, 64, 3)])
def test_absurd_sizes_are_refused(shape: tuple[int, int, int], digit_model: DigitModel) -> None:
    with pytest.raises(PhotoRefused, match="pixels"):
        read_photo(np.zeros(shape, np.uint8), digits=5, decimals=3, model=digit_model)


def test_bad_arguments_are_refused(digit_model: DigitModel) -> None:
    img = np.full((200, 300, 3), 128, np.uint8)
    with pytest.raises(ValueError, match="wheels"):
        read_photo(img, digits=0, decimals=3, model=digit_model)
    with pytest.raises(ValueError, match="counter_box"):
        read_photo(img, digits=5, decimals=3, model=digit_model, counter_box=(500, 10, 50, 20))
    with pytest.raises(PhotoRefused, match="8-bit"):
        read_photo(img.astype(np.float32), digits=5, decimals=3, model=digit_model)


def test_a_blank_photo_has_no_counter(digit_model: DigitModel) -> None:
    result = read_photo(np.full((480, 640, 3), 200, np.uint8), digits=5, decimals=3, model=digit_model)
    assert result.status == "no_counter" and result.value is None and result.reason
    assert result.to_json()["boxes"] == []


@pytest.mark.slow
def test_a_sticker_with_a_longer_number_is_not_taken_for_the_counter(shared_data: Path,
                                                                    digit_model: DigitModel) -> None:
    """The photo benchmark's phone-style shot of a real frame with a sticker reading "00247662" beside the
    meter: five of its digits looked like a counter, and the digit left of them says the row goes on."""
    from bench.photo import cases

    case = next(c for c in cases(0, 0, 2, 20261206) if c.name == "demo 530.12067.jpg #0")
    result = read_photo(case.image, digits=5, decimals=0, model=digit_model)
    assert result.status != "ok" or right(result.value, 530.12067, 0), result
