"""Digit inference (device frames, bridge photos): one call per batch through a TFLite int8 model.

Public API: :class:`DigitModel` (alias ``DigitClassifier``), :class:`DigitPrediction`,
:func:`bundled_model_path`, :class:`InferenceError`.
"""

from meter_vision.infer.backends import InferenceError
from meter_vision.infer.model import DigitClassifier, DigitModel, DigitPrediction, ModelSpec, bundled_model_path

__all__ = ["DigitClassifier", "DigitModel", "DigitPrediction", "InferenceError", "ModelSpec", "bundled_model_path"]
