"""What a camera at a meter does to a digit crop, applied at random during training.

Geometry and blur work on the original crop (before the one shared resize, so the model sees the
pixels the device will feed it); colour, glare, noise and JPEG work on the resized batch. Vertical
shifts stay within about one model pixel: moving a wheel up or down changes where it stands.
"""

from __future__ import annotations

import cv2
import numpy as np

from meter_vision.infer.preprocess import to_model_input


def geometric(img: np.ndarray, rng: np.random.Generator, out_h: int = 32, strong: bool = False,
              zoom_out: float = 0.0) -> np.ndarray:
    """Small rotation, horizontal shift, crop aspect change and at most ~1 model pixel vertical shift.

    ``strong`` (the v2 recipe): a window misplaced by up to 15 % of its width, a wider range of digit
    sizes in the window, and a camera not square to the counter (perspective). ``zoom_out``: the
    share of crops whose digit is shrunk to 60–90 % (a window drawn generously around the digit;
    the neighbours above and below are mirrored in, as a wheel shows them).
    """
    if zoom_out > 0 and rng.random() < zoom_out:
        img = shrink(img, rng)
    h, w = img.shape[:2]
    if rng.random() < (0.15 if strong else 0.25):
        return img
    if strong and rng.random() < 0.3:
        img = perspective(img, rng)
    angle = rng.normal(0.0, 2.5 if strong else 2.0)
    sx = rng.uniform(0.8, 1.2) if strong else rng.uniform(0.85, 1.15)  # different crop widths around the digit
    sy = rng.uniform(0.92, 1.08) if strong else rng.uniform(0.96, 1.04)
    tx = rng.uniform(-0.15, 0.15) * w if strong else rng.uniform(-0.08, 0.08) * w
    ty = rng.uniform(-1.0, 1.0) * h / out_h
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[0, :2] = m[0, :2] * sx
    m[1, :2] = m[1, :2] * sy
    m[0, 2] += (1 - sx) * w / 2 + tx
    m[1, 2] += (1 - sy) * h / 2 + ty
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    if r < 0.12:
        sigma = rng.uniform(0.4, 1.2) * max(img.shape[0], 32) / 32
        return cv2.GaussianBlur(img, (0, 0), sigma)
    if r < 0.18:  # motion blur, mostly vertical (a wheel turning, a shaking camera)
        k = int(rng.integers(3, 6))
        kernel = np.zeros((k, k), np.float32)
        if rng.random() < 0.7:
            kernel[:, k // 2] = 1.0 / k
        else:
            kernel[k // 2, :] = 1.0 / k
        return cv2.filter2D(img, -1, kernel)
    return img


def photometric(batch: np.ndarray, rng: np.random.Generator, faint: float = 0.0) -> np.ndarray:
    """Brightness, contrast, colour cast, gamma, grayscale, glare spots, noise; on float 0..255 NHWC.

    ``faint``: the share of crops whose contrast drops to 12–45 % (a dull, dirty or fogged window;
    pale digits on a dark drum): the digit's strokes only 15–50 grey levels above their drum.
    """
    n, h, w, _ = batch.shape
    x = batch.copy()
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    contrast = rng.uniform(0.6, 1.4, (n, 1, 1, 1))
    if faint > 0:
        low = np.asarray(rng.random(n) < faint)
        contrast[low] = rng.uniform(0.12, 0.45, (int(low.sum()), 1, 1, 1))
    bright = rng.normal(0.0, 25.0, (n, 1, 1, 1))
    cast = rng.uniform(0.85, 1.15, (n, 1, 1, 3))
    x = (x - mean) * contrast + mean + bright
    x = x * cast
    gamma = rng.uniform(0.75, 1.33, (n, 1, 1, 1))
    x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** gamma
    gray = np.asarray(rng.random(n) < 0.08)
    if gray.any():
        x[gray] = x[gray].mean(axis=3, keepdims=True)
    glare = np.flatnonzero(rng.random(n) < 0.10)
    if glare.size:
        yy, xx = np.mgrid[0:h, 0:w]
        for i in glare:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(1.5, 5.0)
            amp = rng.uniform(60, 200)
            spot = amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            x[i] += spot[:, :, None]
    noise = rng.uniform(0, 6.0, (n, 1, 1, 1))
    x = x + rng.normal(0.0, 1.0, x.shape) * noise
    x = np.clip(x, 0, 255)
    jpeg = np.flatnonzero(rng.random(n) < 0.2)
    for i in jpeg:
        q = int(rng.integers(25, 80))
        ok, enc = cv2.imencode(".jpg", x[i].astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
        dec = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED) if ok else None
        if dec is not None:
            x[i] = dec.reshape(h, w, -1)
    return x.astype(np.float32)


def augmented_batch(
    crops: list[np.ndarray], rng: np.random.Generator, width: int, height: int, color: str = "RGB",
    strong: bool = False, keep: np.ndarray | None = None, zoom_out: float = 0.0, faint: float = 0.0,
) -> np.ndarray:
    """Augment BGR crops and run them through the shared preprocessing into a float batch.

    ``strong``: the v2 recipe (see :func:`geometric`, :func:`recolour`). Crops where ``keep`` is True
    get no geometry (a misplaced window made on purpose must stay misplaced). ``faint``: see
    :func:`photometric`.
    """
    moved = [blur(c if (keep is not None and keep[i]) else geometric(c, rng, height, strong, zoom_out), rng)
             for i, c in enumerate(crops)]
    x = to_model_input(moved, width, height, color)
    if strong:
        x = recolour(x, rng)
    return photometric(x, rng, faint)


def destroy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make a crop unreadable the way the field does (a finger or a drop in front, a glare that
    washes the window out, a lens far out of focus, a window with no digit in it).

    Trained with a flat target, these teach the model to spread its probability when it cannot see
    the wheel, so the confidence (the mass near its best guess) drops for real trouble.
    """
    h, w = img.shape[:2]
    out = img.copy()
    kind = int(rng.integers(0, 5))
    if kind == 0:  # something in front: covers most of the digit
        oh, ow = int(h * rng.uniform(0.55, 0.8)), int(w * rng.uniform(0.8, 1.0))
        y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
        colour = rng.integers(0, 256, 3).tolist()
        if rng.random() < 0.5:
            cv2.ellipse(out, (x + ow // 2, y + oh // 2), (ow // 2, oh // 2), 0, 0, 360, colour, -1)
        else:
            out[y : y + oh, x : x + ow] = colour
    elif kind == 1:  # glare that saturates the window
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.3, 0.7)
        r = h * rng.uniform(0.3, 0.5)
        spot = rng.uniform(350, 600) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out = np.clip(out.astype(np.float32) + spot[:, :, None], 0, 255).astype(np.uint8)
    elif kind == 2:  # far out of focus
        out = cv2.GaussianBlur(out, (0, 0), h * rng.uniform(0.15, 0.3))
    elif kind == 3:  # no digit: a flat patch with noise
        colour = np.array(rng.integers(0, 256, 3), np.float32)
        out = np.clip(colour + rng.normal(0, rng.uniform(2, 25), (h, w, 3)), 0, 255).astype(np.uint8)
    else:  # the window shows only a slice of two digits far apart (badly placed ROI)
        y = int(h * rng.uniform(0.55, 0.75))
        out = np.concatenate([img[y:], img[: h - (h - y)]], axis=0)
        out = cv2.resize(out[:, : max(2, int(w * rng.uniform(0.25, 0.4)))], (w, h))
    return out


# ---------------------------------------------------------------- v2: a wider range of meters


def shrink(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s = rng.uniform(0.6, 0.9)
    m = np.array([[s, 0, (1 - s) * w / 2], [0, s, (1 - s) * h / 2]], np.float32)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)


def perspective(img: np.ndarray, rng: np.random.Generator, amount: float = 0.06) -> np.ndarray:
    """A camera not square to the counter: each corner moves by up to ``amount`` of the crop size
    (less vertically, where a shift would change the wheel's position)."""
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jitter = rng.uniform(-1, 1, (4, 2)) * np.array([w * amount, h * amount * 0.4], np.float32)
    dst = (src + jitter).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def recolour(batch: np.ndarray, rng: np.random.Generator, swap: float = 0.25, invert: float = 0.06) -> np.ndarray:
    """Other drum and ink colours: the colour channels swapped (red decimal wheels, blue or green
    casts) and now and then light digits on a dark drum (the negative)."""
    x = batch.copy()
    n = x.shape[0]
    for i in np.flatnonzero(rng.random(n) < swap):
        x[i] = x[i][:, :, rng.permutation(3)]
    for i in np.flatnonzero(rng.random(n) < invert):
        x[i] = 255.0 - x[i]
    return x


def straddle(left: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A window placed between two wheels: the right part of one digit, a strip of the counter body,
    the left part of the next. Trained towards a flat output: such a window must read N.

    The window is off by 35–65 % of its width (a shift up to ~15 % is still trained as the digit).
    """
    h, w = left.shape[:2]
    right = cv2.resize(right, (w, h), interpolation=cv2.INTER_AREA)
    gap_w = round(w * rng.uniform(0.0, 0.3))
    body = np.full((h, gap_w, 3), rng.integers(0, 90, 3), np.uint8) if gap_w else np.zeros((h, 0, 3), np.uint8)
    strip = np.concatenate([left, body, right], axis=1)
    off = round(w * rng.uniform(0.35, 0.65)) if rng.random() < 0.5 else 0
    if off == 0:  # shifted left instead: the start of ``right`` sits mid-window
        off = round(strip.shape[1] - w - w * rng.uniform(0.35, 0.65))
        off = max(0, off)
    return strip[:, off : off + w].copy()


def zoomed_out(img: np.ndarray, rng: np.random.Generator, small: bool = True) -> np.ndarray:
    """A window far too large or too small for the digit (a wrong ROI size): a digit at 35–55 % of
    the window on a body colour (only when ``small``: some real windows are drawn that generously),
    or a 2.2–3× enlarged slice of it."""
    h, w = img.shape[:2]
    if rng.random() < 0.5 and small:
        s = rng.uniform(0.35, 0.55)
        tiny = cv2.resize(img, (max(2, int(w * s)), max(2, int(h * s))), interpolation=cv2.INTER_AREA)
        out = np.empty_like(img)
        out[:] = rng.integers(0, 256, 3).astype(np.uint8)
        y = int(rng.integers(0, h - tiny.shape[0] + 1))
        x = int(rng.integers(0, w - tiny.shape[1] + 1))
        out[y : y + tiny.shape[0], x : x + tiny.shape[1]] = tiny
        return out
    s = rng.uniform(2.2, 3.0)
    ch, cw = max(2, int(h / s)), max(2, int(w / s))
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return cv2.resize(img[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def foreign(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Something that is no digit window at all: gradients, lines, blobs, printed strokes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(-3, 3, 2)
    base = rng.uniform(0, 255, 3)
    img = base[None, None, :] + (a * xx[..., None] + b * yy[..., None]) * rng.uniform(-1, 1, 3)
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 6))):
        colour = rng.integers(0, 256, 3).tolist()
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.line(out, p0, p1, colour, int(rng.integers(1, max(2, w // 5))), cv2.LINE_AA)
        else:
            cv2.circle(out, p0, int(rng.integers(2, max(3, h // 3))), colour, -1 if rng.random() < 0.5 else 2)
    return cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.5))


def bar_across(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A band of one colour across the middle of the digit, 30–60 % of the window's height, its
    middle within the middle 40 % (a pointer, a strap, a strip of dirt or paint). What is left, the
    top and the bottom of one digit, looks like a wheel between two digits: trained flat."""
    h = img.shape[0]
    out = img.copy()
    bh = int(h * rng.uniform(0.30, 0.60))
    y = int(h * rng.uniform(0.30, 0.70)) - bh // 2
    out[max(0, y) : y + bh, :] = rng.integers(0, 256, 3)
    return out
