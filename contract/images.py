"""Size limits for images, checked from the file's header before anything decodes it.

A 389 KB PNG can say 20,000 × 20,000: decoding it takes 1.2 GB, more than a Pi Zero 2 W has. Every
path that decodes an image someone else supplied (the agent's camera folder, `meter-edge read`,
`classify`, `calibrate`, and later the bridge's photos) asks `check_image` first.

Pillow reads only the header here (`Image.open` is lazy: no pixel is decoded), so this module needs no
numpy or OpenCV. It is imported lazily, so `contract` itself stays stdlib + pydantic: a side that calls
`check_image` needs Pillow installed (the edge extra has it; add `pillow` to the cloud extra when the
bridge starts reading photos).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

MAX_PIXELS = 24_000_000  # a Pi HQ camera frame is 12.3 MP; twice that is still fine on a Pi Zero 2 W
MAX_SIDE = 12_000
MAX_FILE_BYTES = 40 * 1024 * 1024


class ImageRefused(ValueError):
    """The image is empty, not an image, or too large to decode; the message says which and what to do."""


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    format: str


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
    from PIL import Image, UnidentifiedImageError

    try:
        stream = source.open("rb") if isinstance(source, Path) else io.BytesIO(source)
        with stream, Image.open(stream) as im:
            width, height = im.size
            fmt = im.format or "unknown"
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher limit (178 MP)
        raise ImageRefused(f"{name}: {str(exc)[:160]}: refused before decoding") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRefused(f"{name} is not a readable image (corrupt, truncated or not a photo): "
                           f"{str(exc)[:120] or type(exc).__name__}") from None
    if width <= 0 or height <= 0:
        raise ImageRefused(f"{name} says it is {width} × {height} pixels: not a photo")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ImageRefused(f"{name} says it is {width:,} × {height:,} pixels ({width * height / 1e6:.0f} MP); "
                           f"the limit is {max_pixels / 1e6:.0f} MP and {max_side:,} per side: refused before "
                           "decoding (a real meter photo is a few MP)")
    return ImageHeader(width, height, fmt)
