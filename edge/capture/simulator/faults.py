"""Camera faults of a meter reader in the field, drawn at random with configurable rates.

Soft faults (a shifted or rotated camera, blur, glare from the flash on the glass, a dark frame, sensor
noise) are what alignment and the model must cope with; hard faults (very dark, very blurred) are frames
that should be refused rather than read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class FaultMix:
    """Per-frame probability of each fault (independent), and how strong the soft ones get."""

    shift: float = 0.05
    rotate: float = 0.04
    scale: float = 0.03
    blur: float = 0.03
    glare: float = 0.03
    dark: float = 0.03
    noise: float = 0.04
    hard_dark: float = 0.005
    hard_blur: float = 0.005
    max_shift_px: float = 30.0
    max_angle_deg: float = 3.0
    max_scale: float = 0.06

    @classmethod
    def named(cls, name: str) -> FaultMix:
        """`default` (about a fifth of the frames have a fault), `none`, or `heavy` (about two thirds)."""
        if name == "default":
            return cls()
        if name == "none":
            return cls(0, 0, 0, 0, 0, 0, 0, 0, 0)
        if name == "heavy":
            return cls(0.2, 0.2, 0.15, 0.15, 0.15, 0.15, 0.2, 0.03, 0.03, 40.0, 3.0, 0.08)
        raise ValueError(f"unknown fault mix {name!r}: use default, none or heavy")

    def without_hard(self) -> FaultMix:
        return replace(self, hard_dark=0.0, hard_blur=0.0)

    def photometric_only(self) -> FaultMix:
        return replace(self, shift=0.0, rotate=0.0, scale=0.0)


@dataclass(frozen=True)
class Glare:
    x: float
    y: float
    radius: float
    strength: float


@dataclass(frozen=True)
class Faults:
    """The faults of one frame. The default instance is a clean frame."""

    dx: float = 0.0
    dy: float = 0.0
    angle_deg: float = 0.0
    scale: float = 1.0
    blur_sigma: float = 0.0
    glare: Glare | None = None
    gain: float = 1.0
    noise_sigma: float = 1.5
    tags: tuple[str, ...] = field(default=())

    @property
    def geometric(self) -> bool:
        return self.dx != 0 or self.dy != 0 or self.angle_deg != 0 or self.scale != 1.0

    @property
    def hard(self) -> bool:
        return any(t.startswith("hard_") for t in self.tags)


def sample_faults(mix: FaultMix, rng: np.random.Generator, size: tuple[int, int] = (640, 480)) -> Faults:
    """Draw one frame's faults from `mix`; `size` is (width, height) of the frame (for the glare spot)."""
    w, h = size
    f: dict[str, object] = {}
    tags: list[str] = []
    u = rng.random(9)
    if u[0] < mix.shift:
        r, a = rng.uniform(8, mix.max_shift_px), rng.uniform(0, 2 * np.pi)
        f["dx"], f["dy"] = float(r * np.cos(a)), float(r * np.sin(a))
        tags.append("shift")
    if u[1] < mix.rotate:
        f["angle_deg"] = float(rng.choice([-1, 1]) * rng.uniform(0.7, mix.max_angle_deg))
        tags.append("rotate")
    if u[2] < mix.scale:
        f["scale"] = float(1 + rng.choice([-1, 1]) * rng.uniform(0.02, mix.max_scale))
        tags.append("scale")
    if u[3] < mix.blur:
        f["blur_sigma"] = float(rng.uniform(0.8, 1.8))
        tags.append("blur")
    if u[4] < mix.glare:
        f["glare"] = Glare(float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.7) * h),
                           float(rng.uniform(25, 70)), float(rng.uniform(0.5, 1.0)))
        tags.append("glare")
    if u[5] < mix.dark:
        f["gain"] = float(rng.uniform(0.35, 0.6))
        tags.append("dark")
    if u[6] < mix.noise:
        f["noise_sigma"] = float(rng.uniform(5, 12))
        tags.append("noise")
    if u[7] < mix.hard_dark:
        f["gain"] = float(rng.uniform(0.03, 0.08))
        tags.append("hard_dark")
    if u[8] < mix.hard_blur:
        f["blur_sigma"] = float(rng.uniform(7, 12))
        tags.append("hard_blur")
    return Faults(**f, tags=tuple(tags))  # type: ignore[arg-type]


def apply_geometric(img: np.ndarray, faults: Faults) -> np.ndarray:
    """Move the picture as a camera knocked on its mount would: rotate/scale about the centre, then shift."""
    if not faults.geometric:
        return img
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), faults.angle_deg, faults.scale)
    m[0, 2] += faults.dx
    m[1, 2] += faults.dy
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def apply_photometric(img: np.ndarray, faults: Faults, rng: np.random.Generator,
                      origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Blur, glare, gain and sensor noise. `origin` is where `img` sits in the full frame (for the glare)."""
    out: np.ndarray = img.astype(np.float32)
    if faults.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), faults.blur_sigma)
    if faults.glare is not None:
        g = faults.glare
        h, w = out.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d2 = (xx + origin[0] - g.x) ** 2 + ((yy + origin[1] - g.y) * 1.3) ** 2
        spot = np.exp(-d2 / (2 * (g.radius / 2) ** 2)) * g.strength
        out = out + (255 - out) * spot[..., None]
    if faults.gain != 1.0:
        out = out * faults.gain
    if faults.noise_sigma > 0:
        # noise relative to the signal is what makes a dark frame grainy
        out = out + rng.normal(0, faults.noise_sigma, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
