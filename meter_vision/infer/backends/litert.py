"""``ai_edge_litert``: the maintained TFLite runtime (works with numpy 2); the first choice."""

from __future__ import annotations

from typing import Any

from meter_vision.infer.backends import Backend, BackendUnavailable


class LiteRTBackend(Backend):
    name = "ai_edge_litert"

    def interpreter_class(self) -> Any:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise BackendUnavailable(f"cannot import ai_edge_litert.interpreter ({exc})") from exc
        return Interpreter
