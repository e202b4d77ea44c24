"""Digit inference on the device: one call per frame through a TFLite int8 model.

Public API: :class:`DigitModel` (alias ``DigitClassifier``), :class:`DigitPrediction`,
:func:`bundled_model_path`, :class:`InferenceError`.
"""

from edge.infer.backends import InferenceError
from edge.infer.model import DigitClassifier, DigitModel, DigitPrediction, ModelSpec, bundled_model_path

__all__ = ["DigitClassifier", "DigitModel", "DigitPrediction", "InferenceError", "ModelSpec", "bundled_model_path"]
