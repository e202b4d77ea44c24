"""Size limits for images, checked from the file's header before anything decodes it.

A 389 KB PNG can say 20,000 × 20,000: decoding it takes 1.2 GB, more than a Pi Zero 2 W has. Every
path that decodes an image someone else supplied (the agent's camera folder, `meter-edge read`,
`classify`, `calibrate`, and later the bridge's photos) asks `check_image` first.

PNG, JPEG and BMP (what a camera, the folder backend and the tools accept) are read here from their
first bytes with the standard library: width and height sit at fixed places (PNG's IHDR, BMP's DIB
header) or in the first SOF segment (JPEG). Anything else goes to Pillow, whose `Image.open` is lazy
and decodes no pixel either. Pillow is imported only then, so `contract` stays stdlib + pydantic and
the agent does not carry Pillow's ~4 MB for the formats it sees every cycle; a side that must check
other formats needs Pillow installed (the edge extra has it; add it to the cloud extra when the bridge
reads photos).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_PIXELS = 24_000_000  # a Pi HQ camera frame is 12.3 MP; twice that is still fine on a Pi Zero 2 W
MAX_SIDE = 12_000
MAX_FILE_BYTES = 40 * 1024 * 1024
HEAD_BYTES = 256 * 1024  # EXIF (with its thumbnail) comes before a JPEG's SOF and is at most 64 KiB
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageRefused(ValueError):
    """The image is empty, not an image, or too large to decode; the message says which and what to do."""


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    format: str


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > len(head):
                return None
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
            return None
        i += 2 + length
    return None


def header_size(head: bytes) -> tuple[int, int, str] | None:
    """(width, height, format) of a PNG, JPEG or BMP from its first bytes; None for anything else."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return width, height, "PNG"
    if head[:3] == b"\xff\xd8\xff":
        size = _jpeg_size(head)
        return (*size, "JPEG") if size else None
    if head[:2] == b"BM" and len(head) >= 26:
        (dib,) = struct.unpack("<I", head[14:18])
        if dib == 12:
            width, height = struct.unpack("<HH", head[18:22])
        else:
            width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height), "BMP"
    return None


def _pillow_size(source: Path | bytes, name: str) -> tuple[int, int, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        stream = source.open("rb") if isinstance(source, Path) else io.BytesIO(source)
        with stream, Image.open(stream) as im:
            width, height = im.size
            return width, height, im.format or "unknown"
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher limit (178 MP)
        raise ImageRefused(f"{name}: {str(exc)[:160]}: refused before decoding") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRefused(f"{name} is not a readable image (corrupt, truncated or not a photo): "
                           f"{str(exc)[:120] or type(exc).__name__}") from None


def check_image(source: Path | bytes, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE,
                max_bytes: int = MAX_FILE_BYTES) -> ImageHeader:
    """Width, height and format from the header of a file or bytes; ImageRefused when it is empty, not an
    image Pillow knows, or larger than the limits. Decodes no pixel."""
    name = str(source) if isinstance(source, Path) else "image"
    try:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
    except OSError as exc:
        raise ImageRefused(f"cannot read {name}: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageRefused(f"{name} is empty (0 bytes): not a photo")
    if size > max_bytes:
        raise ImageRefused(f"{name} is {size:,} bytes, more than {max_bytes:,}: not a meter photo")
    try:
        if isinstance(source, Path):
            with source.open("rb") as f:
                head = f.read(HEAD_BYTES)
        else:
            head = source[:HEAD_BYTES]
    except OSError as exc:
        raise ImageRefused(f"cannot read {name}: {exc.strerror or exc}") from None
    known = header_size(head)
    width, height, fmt = known if known is not None else _pillow_size(source, name)
    if width <= 0 or height <= 0:
        raise ImageRefused(f"{name} says it is {width} × {height} pixels: not a photo")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ImageRefused(f"{name} says it is {width:,} × {height:,} pixels ({width * height / 1e6:.0f} MP); "
                           f"the limit is {max_pixels / 1e6:.0f} MP and {max_side:,} per side: refused before "
                           "decoding (a real meter photo is a few MP)")
    return ImageHeader(width, height, fmt)
