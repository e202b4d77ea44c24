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


def normalize_windows(batch: np.ndarray, epsilon: float) -> np.ndarray:
    """Each window of a float 0..255 batch brought to mean 0 and deviation 1 over its pixels and
    colours, on the 0..1 scale with ``epsilon`` added to the variance (so an empty, flat window is not
    blown up into its noise). Exactly what the networks' contrast layer did in training (a Keras
    ``LayerNormalization`` over height, width and channels without scale or offset); done here, in
    float, because the int8 kernels of that layer cost the device as much as half a network.
    """
    n = batch.shape[0]
    flat = batch.reshape(n, -1).astype(np.float32, copy=False)
    centred = flat - flat.mean(axis=1, keepdims=True)
    var = np.einsum("ij,ij->i", centred, centred)[:, None] / np.float32(flat.shape[1])
    # on the 0..1 scale: (x/255 - m/255) / sqrt(v/255² + eps) = (x - m) / sqrt(v + eps·255²)
    out: np.ndarray = (centred / np.sqrt(var + np.float32(epsilon * 255.0 * 255.0))).reshape(batch.shape)
    return out.astype(np.float32, copy=False)
