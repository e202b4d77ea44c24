"""Helpers shared by the digit-inference tests (a module name no other test folder uses)."""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_crop(seed: int = 0, size: tuple[int, int] = (40, 64)) -> np.ndarray:
    """A BGR crop with a drawn digit: enough to exercise the code without the shared data."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.full((h, w, 3), 235, np.uint8) + rng.integers(0, 15, (h, w, 3), dtype=np.uint8)
    cv2.putText(img, str(seed % 10), (w // 6, int(h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, h / 40, (20, 20, 20), 3)
    return img
