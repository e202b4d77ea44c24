"""How a digit model is judged (pure numpy, no TensorFlow: the benchmark uses it too).

* right: the digit equals the label, or the position is within a tenth of the truth, circularly (a
  label is good to a tenth, and a wheel at 3.9 looks like one at 4.0; the reading's rules decide
  such a digit from the wheel below it);
* strict: the digit equals the label (floor of the true position);
* within: the position is within ±0.1 of the truth, circularly;
* held: the model said N; wrong_confident: neither right nor N.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOL = 0.1 + 1e-6


def circular_distance(a: np.ndarray, b: np.ndarray, period: float = 10.0) -> np.ndarray:
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) % period
    out: np.ndarray = np.minimum(d, period - d)
    return out


def outcome_arrays(
    digits: Sequence[int | None], values: Sequence[float | None], true_values: Sequence[float] | np.ndarray
) -> dict[str, np.ndarray]:
    """Per-crop booleans: right, strict, within, held, wrong_confident."""
    held = np.array([d is None for d in digits])
    truth = np.asarray(true_values, dtype=np.float64)
    label = np.floor(truth + 1e-6).astype(int) % 10
    dig = np.array([-1 if d is None else int(d) for d in digits])
    val = np.array([np.nan if (v is None or d is None) else float(v) for d, v in zip(digits, values, strict=True)])
    strict = (dig == label) & ~held
    with np.errstate(invalid="ignore"):
        within = (circular_distance(val, truth) <= TOL) & ~held
    right = strict | within
    return {"right": right, "strict": strict, "within": within, "held": held, "wrong_confident": ~right & ~held}


def summarize(outcomes: dict[str, np.ndarray]) -> dict[str, float]:
    n = len(outcomes["right"])
    return {k: (float(v.mean()) if n else float("nan")) for k, v in outcomes.items()} | {"n": float(n)}
