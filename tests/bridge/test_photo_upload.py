"""A resident's upload: what is taken (JPEG, PNG, HEIC; turned upright; no metadata kept) and what is
refused before or instead of decoding (not an image, a bomb, 1 x 1, too large, truncated)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud_bridge.photo.upload import LONG_SIDE, MAX_UPLOAD_BYTES, PhotoRefused, decode_stored, inspect, normalise

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def frame(shared_data: Path) -> Path:
    return shared_data / "frames" / "ai-on-the-edge-demo" / "530.07077.jpg"


def with_exif(im: Image.Image, *, orientation: int = 1, gps: bool = True, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Phone 15"  # Model
    if gps:
        exif[GPS_IFD] = {1: "N", 2: (55.0, 45.0, 21.0), 3: "E", 4: (37.0, 37.0, 4.0)}
    buf = io.BytesIO()
    im.save(buf, fmt, exif=exif.tobytes(), comment=b"secret note") if fmt == "JPEG" else \
        im.save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header says width x height; its single IDAT is tiny (it would inflate to gigabytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


def test_a_real_meter_photo_is_taken_and_kept_as_a_clean_jpeg(shared_data: Path) -> None:
    data = frame(shared_data).read_bytes()
    photo = normalise(data)
    assert (photo.width, photo.height) == (640, 480)  # small enough: not scaled
    assert photo.upload_format == "JPEG" and photo.upload_bytes == len(data)
    with Image.open(io.BytesIO(photo.jpeg)) as im:
        assert im.format == "JPEG" and im.size == (640, 480)
    bgr = photo.bgr()
    assert bgr.shape == (480, 640, 3)
    original = np.asarray(Image.open(frame(shared_data)).convert("RGB"))[:, :, ::-1]
    assert np.abs(bgr.astype(int) - original.astype(int)).mean() < 4  # the same picture, re-encoded


def test_location_and_every_other_metadata_are_gone_after_storing(shared_data: Path) -> None:
    im = Image.open(frame(shared_data)).convert("RGB")
    data = with_exif(im)
    with Image.open(io.BytesIO(data)) as check:  # the upload really carries them
        assert check.getexif().get_ifd(GPS_IFD) and check.info.get("comment") == b"secret note"
    photo = normalise(data)
    with Image.open(io.BytesIO(photo.jpeg)) as stored:
        assert not stored.getexif(), "EXIF survived"
        assert "exif" not in stored.info and "comment" not in stored.info and "icc_profile" not in stored.info
        assert not stored.applist or all(name == "APP0" for name, _ in stored.applist)  # JFIF only
    assert b"PhoneMaker" not in photo.jpeg and b"secret note" not in photo.jpeg


def test_exif_orientation_turns_the_photo_upright(shared_data: Path) -> None:
    upright = Image.open(frame(shared_data)).convert("RGB")
    # a phone held sideways stores the pixels turned and says "rotate 90 CW to view" (orientation 6)
    stored_turned = upright.transpose(Image.Transpose.ROTATE_90)
    photo = normalise(with_exif(stored_turned, orientation=6))
    assert (photo.width, photo.height) == (640, 480)
    got = decode_stored(photo.jpeg)[:, :, ::-1].astype(int)
    assert np.abs(got - np.asarray(upright).astype(int)).mean() < 6


def test_a_big_phone_photo_is_scaled_to_the_stored_size() -> None:
    rng = np.random.default_rng(1)
    big = Image.fromarray(rng.integers(0, 255, (3024, 4032, 3), dtype=np.uint8))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=80)
    photo = normalise(buf.getvalue())
    assert max(photo.width, photo.height) == LONG_SIDE and photo.upload_size == (4032, 3024)
    assert len(photo.jpeg) <= 3 * 1024 * 1024


def test_png_and_heic_are_taken(shared_data: Path) -> None:
    from pillow_heif import from_pillow

    im = Image.open(frame(shared_data)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    assert normalise(buf.getvalue()).upload_format == "PNG"
    heif = from_pillow(im)
    out = io.BytesIO()
    heif.save(out, quality=80)
    data = out.getvalue()
    assert data[4:8] == b"ftyp"
    photo = normalise(data)
    assert photo.upload_format == "HEIF" and (photo.width, photo.height) == (640, 480)
    got = decode_stored(photo.jpeg)[:, :, ::-1].astype(int)
    assert np.abs(got - np.asarray(im).astype(int)).mean() < 8


@pytest.mark.parametrize(("data", "code"), [
    (b"", "empty"),
    (b"Dear utility, my meter shows 123.\n" * 10, "not_an_image"),
    (b"%PDF-1.7\n" + b"0" * 500, "not_an_image"),
    (png_bomb(30_000, 30_000), "too_many_pixels"),
    (png_bomb(100_000, 1000), "too_many_pixels"),
])
def test_what_is_refused_before_decoding(data: bytes, code: str) -> None:
    with pytest.raises(PhotoRefused) as err:
        inspect(data)
    assert err.value.code == code


def test_a_one_pixel_image_and_a_gif_are_refused() -> None:
    for size, fmt, code in (((1, 1), "PNG", "too_small"), ((1, 1), "JPEG", "too_small"),
                            ((640, 480), "GIF", "unsupported_format"), ((640, 480), "BMP", "unsupported_format")):
        buf = io.BytesIO()
        Image.new("RGB", size, (200, 200, 200)).save(buf, fmt)
        with pytest.raises(PhotoRefused) as err:
            normalise(buf.getvalue())
        assert err.value.code == code, (size, fmt)


def test_too_large_and_truncated(shared_data: Path) -> None:
    with pytest.raises(PhotoRefused) as err:
        inspect(b"\xff\xd8\xff" + b"\0" * MAX_UPLOAD_BYTES)
    assert err.value.code == "too_large"
    data = frame(shared_data).read_bytes()
    with pytest.raises(PhotoRefused) as err:
        normalise(data[: len(data) // 3])
    assert err.value.code == "corrupt"
