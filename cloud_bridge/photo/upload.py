"""A resident's upload, checked and made safe to keep: JPEG, PNG or HEIC (iPhones), at most 10 MB, a
sane pixel count read from the header before any pixel is decoded, turned upright by its EXIF
orientation, scaled to at most 2000 px on the long side and re-encoded as a JPEG that carries no
metadata at all (no location, no camera, no time, no thumbnail).

`normalise(data)` gives a `Photo` (the JPEG to store and the BGR pixels for the reader) or raises
`PhotoRefused(code, detail)`; `code` is stable (metrics, the resident's message in their language),
`detail` is English for the log. The size limit on the request body itself is enforced before the body
is read (the portal's CSRF middleware, `MAX_UPLOAD_BYTES` + form overhead).
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from contract.images import HEAD_BYTES, header_size

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 50_000_000  # a 48 MP phone photo (8064 x 6048) passes; decoding one takes ~150 MB
MAX_SIDE = 12_000
MIN_SIDE = 200  # smaller than this cannot show a counter's digits
LONG_SIDE = 2000  # what is stored and read
JPEG_QUALITY = 85
STORED_MAX_BYTES = 3 * 1024 * 1024  # cloud_bridge.store.tables.PHOTO_MAX_BYTES
FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "HEIF": "HEIF"}  # Pillow's name -> what we record

RefusalCode = Literal["empty", "too_large", "not_an_image", "unsupported_format", "too_many_pixels", "too_small",
                      "corrupt"]
REFUSAL_CODES: tuple[str, ...] = ("empty", "too_large", "not_an_image", "unsupported_format", "too_many_pixels",
                                  "too_small", "corrupt")


class PhotoRefused(ValueError):
    """The upload cannot be used. `code`: one of REFUSAL_CODES (or the reader's / checks' codes upstream)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Photo:
    jpeg: bytes  # what is stored: upright, long side <= LONG_SIDE, no metadata
    width: int
    height: int
    upload_format: str  # JPEG / PNG / HEIF
    upload_bytes: int
    upload_size: tuple[int, int]  # as the header said, before turning upright

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()

    def bgr(self) -> np.ndarray:
        return decode_stored(self.jpeg)


_heif_lock = threading.Lock()
_heif_ready = False


def _register_heif() -> None:
    """pillow-heif's opener, registered on first need (it is ~10 MB of native code most uploads never use)."""
    global _heif_ready
    with _heif_lock:
        if not _heif_ready:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            _heif_ready = True


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim",
                                                   b"heis", b"avif")


def inspect(data: bytes) -> tuple[int, int, str]:
    """(width, height, format) from the header only; PhotoRefused for anything we will not decode."""
    if not data:
        raise PhotoRefused("empty", "the upload is empty (0 bytes)")
    if len(data) > MAX_UPLOAD_BYTES:
        raise PhotoRefused("too_large", f"{len(data):,} bytes, more than {MAX_UPLOAD_BYTES:,}")
    head = data[:HEAD_BYTES]
    known = header_size(head)
    if known is not None:
        width, height, fmt = known
        if fmt not in FORMATS:
            raise PhotoRefused("unsupported_format", f"{fmt} is not taken: send JPEG, PNG or HEIC")
    else:
        from PIL import Image, UnidentifiedImageError

        if _is_heif(head):
            _register_heif()
        try:
            with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header, decodes no pixel
                width, height = im.size
                fmt = im.format or "unknown"
        except Image.DecompressionBombError as exc:
            raise PhotoRefused("too_many_pixels", str(exc)[:160]) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise PhotoRefused("not_an_image", f"not an image Pillow knows: {str(exc)[:120]}") from None
        if fmt not in FORMATS:
            raise PhotoRefused("unsupported_format", f"{fmt} is not taken: send JPEG, PNG or HEIC")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise PhotoRefused("too_many_pixels", f"the header says {width:,} x {height:,} pixels "
                           f"({width * height / 1e6:.0f} MP; the limit is {MAX_PIXELS / 1e6:.0f} MP, {MAX_SIDE:,} "
                           "per side): refused before decoding")
    if min(width, height) < MIN_SIDE:
        raise PhotoRefused("too_small", f"{width} x {height} pixels: too small to show a meter's digits "
                           f"(at least {MIN_SIDE} px on each side)")
    return width, height, FORMATS[fmt]


def _decode(data: bytes, width: int, height: int) -> Image.Image:
    from PIL import Image, ImageOps

    im = Image.open(io.BytesIO(data))
    if im.format in ("JPEG", "MPO"):
        scale = LONG_SIDE / max(width, height)
        if scale < 1:  # let libjpeg decode at 1/2, 1/4 or 1/8 directly: a 48 MP photo never fills memory
            im.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    upright = ImageOps.exif_transpose(im)  # loads the pixels; a bad EXIF orientation is ignored by Pillow
    rgb = upright.convert("RGB")
    rgb.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
    # A fresh image: nothing of the upload's `info` (EXIF, GPS, ICC, XMP, comments) can travel along.
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def _encode(im: Image.Image) -> bytes:
    for quality, side in ((JPEG_QUALITY, None), (75, None), (75, 1600), (70, 1200)):
        out = im
        if side is not None and max(im.size) > side:
            out = im.copy()
            out.thumbnail((side, side))
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=quality, optimize=True)
        if buf.tell() <= STORED_MAX_BYTES:
            return buf.getvalue()
    raise PhotoRefused("corrupt", "could not be stored within the size limit")


def normalise(data: bytes) -> Photo:
    """Check the upload's header, then decode it upright, scale it down and re-encode it without metadata."""
    width, height, fmt = inspect(data)
    if fmt == "HEIF":
        _register_heif()
    try:
        im = _decode(data, width, height)
    except PhotoRefused:
        raise
    except MemoryError:
        raise PhotoRefused("too_many_pixels", "decoding ran out of memory") from None
    except Exception as exc:  # a truncated or corrupt file fails in the codec, in many ways
        raise PhotoRefused("corrupt", f"the {fmt} could not be decoded: {str(exc)[:120] or type(exc).__name__}") \
            from None
    jpeg = _encode(im)
    return Photo(jpeg, im.size[0], im.size[1], fmt, len(data), (width, height))


def decode_stored(jpeg: bytes) -> np.ndarray:
    """A stored photo (our own JPEG) as BGR pixels, the order OpenCV and the reader use."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        rgb = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])
