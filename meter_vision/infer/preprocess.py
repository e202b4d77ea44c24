"""The one preprocessing step shared by training, inference and the benchmark.

A model fed other pixels on the device than it learned on loses accuracy silently, so every path that
turns a digit crop into model input goes through :func:`to_model_input`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP) into a BGR uint8 array, or raise ValueError (an
    ImageRefused: empty, not an image, or too large by its header, checked before decoding)."""
    from meter_vision.images import decode_bgr

    return decode_bgr(data)


def resize_crop(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize one BGR crop to the model's input size: area filter when shrinking, linear when enlarging."""
    h, w = bgr.shape[:2]
    interp = cv2.INTER_AREA if (w >= width and h >= height) else cv2.INTER_LINEAR
    return cv2.resize(bgr, (width, height), interpolation=interp)


def to_model_input(crops: Sequence[np.ndarray], width: int, height: int, color: str = "RGB") -> np.ndarray:
    """Turn BGR uint8 crops of any size into one float32 NHWC batch with values 0..255.

    ``color`` is the channel order the model expects ("RGB" or "BGR"), read from the model's sidecar.
    """
    batch = np.empty((len(crops), height, width, 3), dtype=np.float32)
    for i, crop in enumerate(crops):
        if crop.size == 0 or crop.ndim not in (2, 3):
            raise ValueError(f"crop {i} is empty or not an image (shape {crop.shape})")
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        img = resize_crop(crop, width, height)
        if color == "RGB":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        batch[i] = img
    return batch
