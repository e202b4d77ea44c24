"""Turn the model's class probabilities into a wheel position and a confidence (pure functions).

The model has 100 classes, class ``k`` meaning the wheel stands at ``k / 10`` (0.0 … 9.9), arranged on
a circle (9.9 is next to 0.0). The position is the circular expectation over the argmax's
neighbourhood: finer than the argmax when the wheel sits between two tenths, and immune to
probability mass far away on the circle. The confidence is the probability mass in that
neighbourhood: "how sure is the model where the wheel stands", high for a wheel caught between two
digits (that is a position, not a doubt) and low for glare, blur or something in front of the digit.
"""

from __future__ import annotations

import math

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def decode_positions(probs: np.ndarray, window: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Decode a (batch, classes) probability array on a circle into (positions, confidences).

    ``positions`` are in class units, 0 <= p < classes (a float); ``confidences`` the mass of the
    ``2 * window + 1`` classes around the argmax.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[-1]
    top = probs.argmax(axis=-1)
    offsets = np.arange(-window, window + 1)
    idx = (top[:, None] + offsets[None, :]) % n
    mass = np.take_along_axis(probs, idx, axis=-1)
    conf = mass.sum(axis=-1)
    shift = (mass * offsets[None, :]).sum(axis=-1) / np.maximum(conf, 1e-12)
    pos = np.mod(top + shift, n)
    return pos, np.clip(conf, 0.0, 1.0)


def position_to_reading(position: float, classes: int = 100, digits: int = 10) -> tuple[float, int]:
    """Class-unit position -> (value rounded to a tenth in [0, digits), floor digit of that value)."""
    tenths = round(position * (digits * 10) / classes) % (digits * 10)
    value = tenths / 10
    return value, math.floor(value)
