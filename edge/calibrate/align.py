"""Align each frame to the installer's reference image before the digit windows are cut out.

Method (docs/calibrate.md says why): ORB features matched against the reference's (computed once),
a RANSAC fit of a partial affine transform (rotation, uniform scale, shift: a meter face is a plane
seen almost head-on, and four degrees of freedom are far more stable than a homography's eight), then
an ECC refinement on the whole face with the digit windows masked out (they change between frames).
A frame is refused, with a reason, when it is black, blurred, of another scene, or when the fitted
transform is implausible; it is never cropped blindly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.calibrate.layout import Layout
from meter_vision.geometry import Roi, transform_points
from meter_vision.images import ImageRefused, read_bgr

log = logging.getLogger(__name__)

RATIO_TEST = 0.8
RANSAC_PX = 3.0  # at the matching scale


class AlignError(Exception):
    """The aligner cannot be set up (reference image missing or unreadable)."""


@dataclass
class AlignResult:
    """``ok`` with the frame warped into reference coordinates, or not ok with a ``reason``.

    ``matrix`` (2×3) maps frame pixels to reference pixels (also set on some refusals, for diagnosis);
    ``score`` is the correlation of the aligned frame with the reference (-1…1, 0 when not computed).
    """

    ok: bool
    image: np.ndarray | None
    reason: str | None
    matrix: np.ndarray | None
    score: float
    inliers: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as BGR uint8, or raise AlignError saying what to do."""
    if not Path(path).is_file():
        raise AlignError(f"reference image {path} does not exist; run `meter-edge calibrate` again")
    try:
        return read_bgr(Path(path))
    except ImageRefused as exc:
        raise AlignError(f"reference image: {exc}; run `meter-edge calibrate` again") from None


def to_grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _h(m: np.ndarray) -> np.ndarray:
    """2×3 → 3×3."""
    return np.vstack([m[:2].astype(np.float64), [0.0, 0.0, 1.0]])


def _scale(s: float) -> np.ndarray:
    return np.diag([s, s, 1.0])


def decompose(m: np.ndarray) -> tuple[float, float]:
    """Scale and rotation (degrees, clockwise positive in image coordinates) of a similarity 2×3/3×3."""
    a, b = float(m[0, 0]), float(m[1, 0])
    return float(np.hypot(a, b)), float(np.degrees(np.arctan2(b, a)))


def sharpness(grey: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the Laplacian over the variance of the grey levels, at half the matching scale.

    It falls steeply when a photo is out of focus or shaken; dividing by the grey variance keeps a dim
    but sharp frame from looking blurred, and the half scale ignores the mild softness that does not
    hurt reading (Gaussian blur σ ≤ 2 px at 640 px passes, σ ≥ 3 is refused with the default ratio).
    """
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(half, cv2.CV_32F)
    values = half.astype(np.float32)
    if mask is not None:
        sel = cv2.resize(mask, (half.shape[1], half.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        if not np.any(sel):
            return 0.0
        lap, values = lap[sel], values[sel]
    var = float(values.var())
    return float(lap.var()) / var if var > 0 else 0.0


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    sel = mask > 0
    if sel.sum() < 100:
        return 0.0
    x = a[sel].astype(np.float32)
    y = b[sel].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def crop_rois(image: np.ndarray, layout: Layout | list[Roi]) -> list[np.ndarray]:
    """Cut each digit ROI (reference coordinates) out of an aligned image, left to right (copies)."""
    rois = layout.digits if isinstance(layout, Layout) else layout
    h, w = image.shape[:2]
    crops = []
    for i, r in enumerate(rois, start=1):
        if not r.fits(w, h):
            raise ValueError(f"ROI {i} ({r}) is outside the {w}x{h} image: was it aligned to the layout's reference?")
        crops.append(image[r.y : r.y + r.h, r.x : r.x + r.w].copy())
    return crops


class Aligner:
    """Aligns frames to one layout's reference image; the reference's features are computed once."""

    def __init__(self, layout: Layout, reference: np.ndarray | None = None) -> None:
        self.layout = layout
        self.settings = s = layout.alignment
        ref = reference if reference is not None else read_image(layout.reference_image)
        self._reference = reference  # a frame read from the layout is not kept: 3.7 MB at 1280 × 960
        self.ref_h, self.ref_w = ref.shape[:2]
        grey = to_grey(ref)
        self.k = min(1.0, s.match_width / self.ref_w)
        self.ref_small = self._resize(grey, self.k)
        # Pixels of the reference that show the meter (not the black corners of a rotated reference).
        valid: np.ndarray = cv2.erode((self.ref_small > 3).astype(np.uint8) * 255, np.ones((5, 5), np.uint8))
        self.valid_small = valid
        # ECC and the score ignore the digit windows: the wheels turn between frames.
        steady = valid.copy()
        for r in layout.digits:
            x0, y0 = int(r.x * self.k) - 2, int(r.y * self.k) - 2
            x1, y1 = int((r.x + r.w) * self.k) + 3, int((r.y + r.h) * self.k) + 3
            steady[max(0, y0) : y1, max(0, x0) : x1] = 0
        self.steady_small = steady
        self.ref_sharpness = sharpness(self.ref_small, valid)
        self.orb = cv2.ORB_create(  # type: ignore[attr-defined]
            nfeatures=s.features)
        kps, desc = self.orb.detectAndCompute(self.ref_small, valid)
        if desc is None or len(kps) < s.min_inliers:
            raise AlignError(
                f"reference image {layout.reference_image} has only {len(kps)} usable features (need "
                f"{s.min_inliers}); take the reference frame with the LED on and the meter in focus")
        self.ref_pts = np.array([kp.pt for kp in kps], np.float32) / self.k  # reference pixels
        self.ref_desc = desc
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.anchor_templates = [
            (a, grey[a.y : a.y + a.h, a.x : a.x + a.w].copy())
            for a in layout.anchors
            if a.roi.fits(self.ref_w, self.ref_h)
        ]

    @property
    def reference(self) -> np.ndarray:
        """The reference frame (BGR), read again from the layout's file when it was not passed in."""
        return self._reference if self._reference is not None else read_image(self.layout.reference_image)

    @staticmethod
    def _resize(grey: np.ndarray, k: float) -> np.ndarray:
        if abs(k - 1.0) < 1e-9:
            return grey
        return cv2.resize(grey, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)

    def _pre(self, width: int, height: int) -> np.ndarray:
        """Frame pixels → reference pixels before matching: scale to the reference size, initial rotation."""
        s0 = self.ref_w / width
        t1 = np.array([[1, 0, -width / 2.0], [0, 1, -height / 2.0], [0, 0, 1]])
        rot = _h(cv2.getRotationMatrix2D((0.0, 0.0), -self.settings.initial_rotation_deg, 1.0))
        t2 = np.array([[1, 0, self.ref_w / 2.0], [0, 1, self.ref_h / 2.0], [0, 0, 1]])
        return t2 @ rot @ _scale(s0) @ t1

    def align(self, frame: np.ndarray) -> AlignResult:
        """Warp ``frame`` into reference coordinates, or refuse with a reason."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        s = self.settings

        def refuse(reason: str, matrix: np.ndarray | None = None, score: float = 0.0, inliers: int = 0,
                   **details: Any) -> AlignResult:
            timings["total"] = time.perf_counter() - t0
            return AlignResult(False, None, reason, matrix, score, inliers, details, timings)

        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3) or frame.size == 0:
            return refuse("not an image: expected a BGR uint8 array")
        fh, fw = frame.shape[:2]
        if abs(fw / fh - self.ref_w / self.ref_h) > 0.03 * self.ref_w / self.ref_h:
            return refuse(
                f"frame is {fw}x{fh} px but the reference is {self.ref_w}x{self.ref_h} (another aspect ratio): "
                "set the camera to the resolution used at calibration, or calibrate again")
        grey = to_grey(frame)
        kf = self.k * self.ref_w / fw
        small = self._resize(grey, kf)
        mean, std = float(small.mean()), float(small.std())
        if mean < s.min_brightness:
            return refuse(f"frame too dark: mean brightness {mean:.0f} < {s.min_brightness:.0f} "
                          "(LED off, lens covered or camera failing?)", brightness=mean)
        if std < s.min_contrast:
            return refuse(f"frame has no contrast: grey spread {std:.1f} < {s.min_contrast:.1f} "
                          "(overexposed, fogged or blank image)", contrast=std)
        sharp = sharpness(small)
        sharp_ratio = sharp / self.ref_sharpness if self.ref_sharpness > 0 else 1.0
        if sharp_ratio < s.min_sharpness_ratio:
            return refuse(f"frame blurred: sharpness {sharp_ratio:.2f} of the reference's < {s.min_sharpness_ratio} "
                          "(out of focus, condensation or camera shake)", sharpness_ratio=sharp_ratio)
        timings["checks"] = time.perf_counter() - t0

        kps, desc = self.orb.detectAndCompute(small, None)
        pre = self._pre(fw, fh)
        if desc is None or len(kps) < s.min_inliers:
            return refuse(f"another scene? only {len(kps)} features in the frame (need {s.min_inliers})",
                          sharpness_ratio=sharp_ratio)
        pairs = self.matcher.knnMatch(desc, self.ref_desc, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO_TEST * p[1].distance]
        timings["features"] = time.perf_counter() - t0 - timings["checks"]
        if len(good) < s.min_inliers:
            return refuse(f"another scene? only {len(good)} features match the reference (need {s.min_inliers})",
                          matches=len(good), sharpness_ratio=sharp_ratio)
        src = transform_points(pre, np.array([kps[m.queryIdx].pt for m in good], np.float32) / kf)
        dst = self.ref_pts[[m.trainIdx for m in good]]
        fit, mask = cv2.estimateAffinePartial2D(
            src.astype(np.float32), dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX / self.k,
            maxIters=2000, confidence=0.995)
        inliers = int(mask.sum()) if mask is not None else 0
        if fit is None or inliers < s.min_inliers:
            return refuse(f"another scene? only {inliers} of {len(good)} matching features agree on one position "
                          f"(need {s.min_inliers})", inliers=inliers, matches=len(good))
        matrix = (_h(fit) @ pre)[:2]
        scale, angle = decompose(fit)
        centre = np.array([[self.ref_w / 2.0, self.ref_h / 2.0]])
        shift = float(np.linalg.norm(transform_points(fit, centre) - centre))
        details: dict[str, Any] = {"scale": scale, "rotation_deg": angle, "shift_px": shift, "matches": len(good),
                                   "sharpness_ratio": sharp_ratio}
        if not (s.min_scale <= scale <= s.max_scale) or abs(angle) > s.max_rotation_deg or \
                shift > s.max_shift_frac * self.ref_w:
            return refuse(f"implausible camera move: scale {scale:.2f} (allowed {s.min_scale}–{s.max_scale}), "
                          f"rotation {angle:.1f}° (max ±{s.max_rotation_deg}), shift {shift:.0f} px "
                          f"(max {s.max_shift_frac * self.ref_w:.0f}); check the camera mount or calibrate again",
                          matrix, 0.0, inliers, **details)
        timings["fit"] = time.perf_counter() - t0 - timings["checks"] - timings["features"]

        if s.refine:
            t = time.perf_counter()
            matrix, details["refined"] = self._refine(small, kf, matrix)
            timings["refine"] = time.perf_counter() - t
        t = time.perf_counter()
        k_m = (_scale(self.k) @ _h(matrix) @ _scale(1 / kf))[:2]
        warped_small = cv2.warpAffine(small, k_m, (self.ref_small.shape[1], self.ref_small.shape[0]),
                                      flags=cv2.INTER_LINEAR, borderValue=0)
        inside: np.ndarray = cv2.warpAffine(np.full(small.shape, 255, np.uint8), k_m,
                                (self.ref_small.shape[1], self.ref_small.shape[0]), flags=cv2.INTER_NEAREST)
        score = _ncc(warped_small, self.ref_small, self.steady_small & inside)
        details["overlap"] = float((self.valid_small & inside).sum() / max(1, self.valid_small.sum()))
        if score < s.min_score:
            return refuse(f"another scene? the aligned frame matches the reference only {score:.2f} "
                          f"(need {s.min_score})", matrix, score, inliers, **details)
        image = cv2.warpAffine(frame, matrix, (self.ref_w, self.ref_h), flags=cv2.INTER_LINEAR, borderValue=0)
        timings["warp"] = time.perf_counter() - t
        if self.anchor_templates:
            bad = self._check_anchors(to_grey(image), details)
            if bad:
                return refuse(bad, matrix, score, inliers, **details)
        timings["total"] = time.perf_counter() - t0
        return AlignResult(True, image, None, matrix, score, inliers, details, timings)

    def _refine(self, small: np.ndarray, kf: float, matrix: np.ndarray) -> tuple[np.ndarray, bool]:
        """ECC refinement at the matching scale; the frame is the template, the masked reference the input.

        This way the mask (meter face minus the turning wheels) is on the reference, where ECC can use it.
        """
        k_m = (_scale(self.k) @ _h(matrix) @ _scale(1 / kf))[:2].astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        try:
            _, warp = cv2.findTransformECC(small, self.ref_small, k_m.copy(), cv2.MOTION_AFFINE, criteria,
                                           self.steady_small, 5)
        except cv2.error as exc:
            log.debug("ECC refinement did not converge, keeping the feature fit: %s", exc)
            return matrix, False
        refined = (_scale(1 / self.k) @ _h(warp) @ _scale(kf))[:2]
        # ECC may wander off on a scene with little texture; keep it only when it stays close.
        corners = np.array([[0, 0], [self.ref_w, 0], [0, self.ref_h], [self.ref_w, self.ref_h]], np.float64)
        inv_old = cv2.invertAffineTransform(matrix)
        moved = np.abs(transform_points(refined, transform_points(inv_old, corners)) - corners).max()
        if moved > 8.0 / self.k:
            log.debug("ECC moved the fit by %.1f px, keeping the feature fit", moved)
            return matrix, False
        return refined, True

    def _check_anchors(self, aligned_grey: np.ndarray, details: dict[str, Any]) -> str | None:
        s = self.settings
        found = {}
        for anchor, tmpl in self.anchor_templates:
            m = s.anchor_search_px
            x0, y0 = max(0, anchor.x - m), max(0, anchor.y - m)
            x1, y1 = min(self.ref_w, anchor.x + anchor.w + m), min(self.ref_h, anchor.y + anchor.h + m)
            window = aligned_grey[y0:y1, x0:x1]
            if window.shape[0] < tmpl.shape[0] or window.shape[1] < tmpl.shape[1] or tmpl.std() < 1:
                continue
            res = cv2.matchTemplate(window, tmpl, cv2.TM_CCOEFF_NORMED)
            _, best, _, loc = cv2.minMaxLoc(res)
            found[anchor.name] = {"score": float(best), "dx": x0 + loc[0] - anchor.x, "dy": y0 + loc[1] - anchor.y}
            if best < s.min_anchor_score:
                details["anchors"] = found
                return (f"alignment mark {anchor.name!r} not found where expected (match {best:.2f} < "
                        f"{s.min_anchor_score}): something covers it, glare, or the alignment is wrong")
        details["anchors"] = found
        return None
