"""The digit model: a ``.tflite`` file plus its sidecar JSON, all crops in one call."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meter_vision.infer.backends import InferenceError, Interpreter, create_interpreter
from meter_vision.infer.decode import decode_positions, position_to_reading, softmax
from meter_vision.infer.preprocess import normalize_windows, to_model_input

log = logging.getLogger(__name__)

MODEL_FILENAME = "digits.tflite"


def bundled_model_path() -> Path:
    """The model shipped with the project: ``models/digits.tflite`` at the repository root in a checkout
    (and ``pip install -e .``), else ``<prefix>/share/meter-reader/models/`` where a wheel installs it."""
    checkout = Path(__file__).resolve().parents[2] / "models" / MODEL_FILENAME
    if checkout.is_file():
        return checkout
    installed = Path(sys.prefix) / "share" / "meter-reader" / "models" / MODEL_FILENAME
    return installed if installed.is_file() else checkout


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


@dataclass(frozen=True)
class DigitPrediction:
    """One wheel: ``digit`` 0–9 (floor of ``value``) or None (N: under the confidence threshold)."""

    digit: int | None
    value: float
    confidence: float

    @property
    def label(self) -> str:
        """The digit as the CSV and the wire contract write it: "0"–"9" or "N"."""
        return "N" if self.digit is None else str(self.digit)


@dataclass(frozen=True)
class ModelSpec:
    """What the sidecar JSON says about the model: the code reads these, never hard-codes them."""

    model_id: str
    width: int
    height: int
    color: str
    classes: int
    output_kind: str  # "probabilities" or "logits"
    window: int
    threshold: float
    raw: dict[str, Any]
    # input.normalize = {"kind": "per_window", "epsilon": e}: the batch is normalised per window
    # (:func:`normalize_windows`) before quantization; the model then takes normalised values
    normalize_epsilon: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> ModelSpec:
        try:
            inp = data["input"]
            out = data["output"]
            dec = data["decode"]
            spec = cls(
                model_id=str(data["model_id"]),
                width=int(inp["width"]),
                height=int(inp["height"]),
                color=str(inp["color"]),
                classes=int(out["classes"]),
                output_kind=str(out.get("kind", "probabilities")),
                window=int(dec["window"]),
                threshold=float(dec["confidence_threshold"]),
                raw=data,
                normalize_epsilon=_normalize_epsilon(inp.get("normalize")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InferenceError(f"model sidecar {source} is incomplete or malformed: {exc!r}") from exc
        if spec.color not in ("RGB", "BGR"):
            raise InferenceError(f"model sidecar {source}: input.color must be RGB or BGR, not {spec.color!r}")
        if spec.classes % 10:
            raise InferenceError(f"model sidecar {source}: output.classes must be a multiple of 10")
        return spec

    @classmethod
    def load(cls, path: Path) -> ModelSpec:
        if not path.is_file():
            raise InferenceError(f"model sidecar {path} is missing (it must sit next to the .tflite file)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InferenceError(f"model sidecar {path} is not readable JSON: {exc}") from exc
        return cls.from_json(data, path)


def _normalize_epsilon(entry: Any) -> float | None:
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("kind") != "per_window":
        raise ValueError(f"input.normalize must be {{'kind': 'per_window', 'epsilon': e}}, not {entry!r}")
    eps = float(entry["epsilon"])
    if not eps > 0:
        raise ValueError(f"input.normalize.epsilon must be > 0, not {eps}")
    return eps


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.floating):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


class DigitModel:
    """Classifies digit crops; every call sends all crops through the interpreter in one invoke.

    The input tensor is resized to the batch size once and kept, so a device that always sends the
    same number of ROIs never re-allocates.
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        threshold: float | None = None,
    ) -> None:
        path = Path(model_path) if model_path is not None else bundled_model_path()
        if not path.is_file():
            raise InferenceError(f"model file {path} is missing")
        self.path = path
        self.spec = ModelSpec.load(sidecar_path(path))
        self.threshold = self.spec.threshold if threshold is None else float(threshold)
        self._interp: Interpreter
        self._interp, self.backend = create_interpreter(path, backend=backend, num_threads=num_threads)
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        shape = tuple(int(s) for s in self._in["shape"])
        if shape[1:] != (self.spec.height, self.spec.width, 3):
            raise InferenceError(
                f"model {path} takes input {shape[1:]} but its sidecar says "
                f"{(self.spec.height, self.spec.width, 3)}"
            )
        if int(self._out["shape"][-1]) != self.spec.classes:
            raise InferenceError(f"model {path} has {self._out['shape'][-1]} outputs, sidecar says {self.spec.classes}")
        self._batch = shape[0]

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def _ensure_batch(self, n: int) -> None:
        if n == self._batch:
            return
        self._interp.resize_tensor_input(self._in["index"], [n, self.spec.height, self.spec.width, 3])
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._batch = n

    def prepare(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """BGR crops of any size -> the float32 NHWC batch the model's input quantization expects."""
        return to_model_input(crops, self.spec.width, self.spec.height, self.spec.color)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Run one prepared float batch (values 0..255) through the interpreter in one invoke (normalised
        per window first when the sidecar says so)."""
        n = int(batch.shape[0])
        if n == 0:
            return np.zeros((0, self.spec.classes), dtype=np.float32)
        self._ensure_batch(n)
        if self.spec.normalize_epsilon is not None:
            batch = normalize_windows(batch, self.spec.normalize_epsilon)
        self._interp.set_tensor(self._in["index"], _quantize(batch, self._in))
        self._interp.invoke()
        out = _dequantize(np.asarray(self._interp.get_tensor(self._out["index"])), self._out)
        if self.spec.output_kind == "logits":
            out = softmax(out)
        return out

    def decode(self, probs: np.ndarray) -> list[DigitPrediction]:
        pos, conf = decode_positions(probs, self.spec.window)
        preds = []
        for p, c in zip(pos, conf, strict=True):
            value, digit = position_to_reading(float(p), self.spec.classes)
            confidence = float(c)
            preds.append(DigitPrediction(None if confidence < self.threshold else digit, value, confidence))
        return preds

    def classify(self, crops: Sequence[np.ndarray]) -> list[DigitPrediction]:
        """Classify BGR crops (any size) in one interpreter call, in order."""
        return self.decode(self.probabilities(self.prepare(crops)))


DigitClassifier = DigitModel
