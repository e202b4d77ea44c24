"""Full-integer int8 TFLite export (int8 input and output) and the sidecar JSON beside it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from meter_vision.infer.preprocess import normalize_windows
from training.model import for_device


def to_int8_tflite(model: Any, calibration: np.ndarray) -> bytes:
    """Quantize weights and activations to int8, input and output tensors included.

    The calibration batch holds real preprocessed crops (float 0..255), so the input scale comes out
    as about 1.0 with zero point -128: an int8 input is the pixel value minus 128.
    """
    import tensorflow as tf  # type: ignore[import-untyped]

    def representative() -> Iterator[list[np.ndarray]]:
        for i in range(len(calibration)):
            yield [calibration[i : i + 1].astype(np.float32)]

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        data: bytes = conv.convert()
    return data


def device_int8(model: Any, temperature: float, calibration: np.ndarray) -> tuple[bytes, dict[str, Any] | None]:
    """The trained model as the device runs it (`training.model.for_device`: temperature baked in, a
    contrast layer left to the device's preprocessing), in int8, its ranges calibrated on `calibration`
    (float 0..255 crops) prepared the same way; and the sidecar's `input.normalize` entry (None: none)."""
    shipped, normalize = for_device(model, temperature)
    if normalize:
        calibration = normalize_windows(calibration, normalize["epsilon"])
    return to_int8_tflite(shipped, calibration), normalize


def write_model(out_dir: Path, tflite: bytes, sidecar: dict[str, Any], name: str = "digits") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.tflite"
    path.write_bytes(tflite)
    sidecar = {**sidecar, "file": path.name, "sha256": hashlib.sha256(tflite).hexdigest(), "bytes": len(tflite)}
    (out_dir / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return path
