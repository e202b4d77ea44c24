"""Pixel geometry both the device and the bridge use: a digit window (:class:`Roi`) and turning an image
about its centre (AI-on-the-edge's InitialRotate convention: degrees clockwise, same size out)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field
from pydantic.dataclasses import dataclass


@dataclass(frozen=True)
class Roi:
    """A digit window: x, y (top-left), w, h in pixels of the reference image."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)

    def corners(self) -> list[tuple[float, float]]:
        """The four corners clockwise from top-left, as points (for drawing and accuracy checks)."""
        x1, y1 = self.x + self.w, self.y + self.h
        return [(self.x, self.y), (x1, self.y), (x1, y1), (self.x, y1)]

    def fits(self, width: int, height: int) -> bool:
        return self.x + self.w <= width and self.y + self.h <= height

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"


def rotation_matrix(width: int, height: int, clockwise_deg: float) -> np.ndarray:
    """3×3 rotation about the image centre, same size out (AI-on-the-edge's InitialRotate convention)."""
    m = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), -clockwise_deg, 1.0)
    return np.vstack([m[:2].astype(np.float64), [0.0, 0.0, 1.0]])


def rotate_image(image: np.ndarray, clockwise_deg: float) -> np.ndarray:
    """Rotate about the centre keeping the size (corners go black), as AI-on-the-edge's InitialRotate."""
    if not clockwise_deg:
        return image
    h, w = image.shape[:2]
    return cv2.warpAffine(image, rotation_matrix(w, h, clockwise_deg)[:2], (w, h), flags=cv2.INTER_LINEAR)


def transform_points(m: np.ndarray, pts: ArrayLike) -> np.ndarray:
    """Apply a 2×3 or 3×3 affine matrix to N×2 points."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(m, dtype=np.float64)[:2, :2].T + np.asarray(m, dtype=np.float64)[:2, 2]
