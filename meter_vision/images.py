"""Decode an image someone else supplied, after `contract.images.check_image` has looked at its header:
a PNG bomb is refused before OpenCV allocates its pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from contract.images import ImageRefused, check_image

__all__ = ["ImageRefused", "decode_bgr", "read_bgr"]


def decode_bgr(data: bytes, name: str = "image", *, grey: bool = False) -> np.ndarray:
    """BGR (or grey) uint8 pixels of encoded bytes; ImageRefused saying why not."""
    check_image(data)
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if img is None:
        raise ImageRefused(f"{name} is not a readable image (corrupt, truncated or not a photo)")
    return img


def read_bgr(path: Path, *, grey: bool = False) -> np.ndarray:
    """BGR (or grey) uint8 pixels of an image file; ImageRefused (a ValueError) saying why not."""
    check_image(Path(path))
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_bgr(data, str(path), grey=grey)
