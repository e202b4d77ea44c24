"""`meter-bridge photo read PHOTO --json`: the JSON scripts rely on, and clear refusals of bad files."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cloud_bridge.cli import main
from contract.payloads import VALUE_PATTERN

DEMO = "frames/ai-on-the-edge-demo"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["photo", "read", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_json_contract_on_a_real_photo(shared_data: Path) -> None:
    code, out, _ = run(str(shared_data / DEMO / "531.63071.jpg"), "--digits", "5", "--decimals", "0", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"value", "status", "confidence", "boxes", "reason", "counter_box", "wheels", "seconds",
            "angle_deg", "rotation_deg", "digits", "decimals"} <= set(data)
    assert data["status"] in ("ok", "unsure")
    assert re.fullmatch(VALUE_PATTERN, data["value"]) and len(data["value"]) == 5
    assert len(data["boxes"]) == 5 and all(len(b) == 4 for b in data["boxes"])
    assert 0 <= data["confidence"] <= 1
    assert data["size"] == [640, 480]


@pytest.mark.slow
def test_exif_orientation_is_honoured(shared_data: Path, tmp_path: Path) -> None:
    """A phone stores a photo sideways with an EXIF Orientation tag; the reader gets it upright."""
    img = Image.open(shared_data / "frames/ai-on-the-edge-default-config/reference.jpg")
    sideways = img.transpose(Image.Transpose.ROTATE_90)  # as stored; Orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    sideways.save(path, exif=exif.tobytes(), quality=95)
    code, out, err = run(str(path), "--digits", "5", "--decimals", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["size"] == list(img.size)
    assert data["value"] == "00016"


def test_text_output_and_help(tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((300, 400, 3), 180, np.uint8))
    code, out, _ = run(str(blank))
    assert code == 0
    assert "no_counter" in out and "reason:" in out
    code, out, _ = run("--help")
    assert code == 0 and "--digits" in out and "--counter-box" in out and "HEIC" in out


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("name", "content", "message"), [
    ("notes.jpg", b"these are not pixels", "(not_an_image)"),
    ("empty.jpg", b"", "(empty)"),
    ("bomb.png", _png_header(30_000, 30_000), "refused before decoding"),
    ("huge.jpg", b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024 + 1), "more than 10,485,760"),
    ("cut.jpg", None, "(corrupt)"),
])
def test_bad_files_are_refused_clearly(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is None:  # a JPEG cut off half way
        _, jpeg = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (400, 600, 3), np.uint8))
        content = jpeg.tobytes()[: len(jpeg) // 2]
    path.write_bytes(content)
    code, out, err = run(str(path), "--json")
    assert code == 1 and out == ""
    assert message in err, err


def test_one_pixel_and_missing_files(tmp_path: Path) -> None:
    tiny = tmp_path / "dot.png"
    cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
    code, _, err = run(str(tiny))
    assert code == 1 and "(too_small)" in err
    code, _, err = run(str(tmp_path / "nothing.jpg"))
    assert code == 1 and "does not exist" in err
    code, _, err = run(str(tiny), "--counter-box", "1,2,3")
    assert code != 0 and "x,y,w,h" in err
