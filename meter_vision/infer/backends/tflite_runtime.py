"""``tflite_runtime``: the older runtime; imports with numpy 2 but fails when the interpreter is made."""

from __future__ import annotations

from typing import Any

from meter_vision.infer.backends import Backend, BackendUnavailable


class TFLiteRuntimeBackend(Backend):
    name = "tflite_runtime"

    def interpreter_class(self) -> Any:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise BackendUnavailable(f"cannot import tflite_runtime.interpreter ({exc})") from exc
        return Interpreter
