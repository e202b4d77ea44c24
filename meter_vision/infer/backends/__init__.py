"""Inference backends: one small interface, one module per runtime, tried in order.

A backend turns a ``.tflite`` file into an interpreter object with the standard TFLite Python API
(``allocate_tensors``, ``get_input_details``, ``resize_tensor_input``, ``set_tensor``, ``invoke``,
``get_tensor``). Adding a runtime is one module with one :class:`Backend` subclass, listed in
:data:`BACKEND_MODULES`.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class InferenceError(RuntimeError):
    """The model or the runtime cannot be used; the message says what to do."""


class Interpreter(Protocol):
    """The part of the TFLite interpreter API the edge code uses."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def resize_tensor_input(self, input_index: int, tensor_size: Any, strict: bool = False) -> None: ...
    def set_tensor(self, tensor_index: int, value: Any) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, tensor_index: int) -> Any: ...


class BackendUnavailable(Exception):
    """This runtime is not installed or cannot run here (the message says why)."""


class Backend:
    """One TFLite runtime. Subclasses set ``name`` and implement :meth:`interpreter_class`."""

    name: str = ""

    def interpreter_class(self) -> Any:
        """Import the runtime and return its Interpreter class, or raise BackendUnavailable."""
        raise NotImplementedError

    def create(self, model_path: Path, num_threads: int | None = None) -> Interpreter:
        cls = self.interpreter_class()
        kwargs: dict[str, Any] = {"model_path": str(model_path)}
        if num_threads is not None:
            kwargs["num_threads"] = num_threads
        interp: Interpreter = cls(**kwargs)
        return interp


# name -> "module:Class"; the order is the order of preference.
BACKEND_MODULES: dict[str, str] = {
    "ai_edge_litert": "meter_vision.infer.backends.litert:LiteRTBackend",
    "tflite_runtime": "meter_vision.infer.backends.tflite_runtime:TFLiteRuntimeBackend",
}


def get_backend(name: str) -> Backend:
    try:
        target = BACKEND_MODULES[name]
    except KeyError:
        raise InferenceError(f"unknown inference backend {name!r}; known: {', '.join(BACKEND_MODULES)}") from None
    module, _, attr = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module), attr)()
    return backend


def _is_model_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("model", "flatbuffer", "identifier", "tflite", "could not open"))


def create_interpreter(
    model_path: Path, *, backend: str | None = None, num_threads: int | None = None
) -> tuple[Interpreter, str]:
    """Open ``model_path`` with the first backend that works (or the one named); return it and its name.

    Raises :class:`InferenceError` naming every backend tried when none works, and naming the file
    when the runtime loads but the model does not.
    """
    names = [backend] if backend else list(BACKEND_MODULES)
    problems: list[str] = []
    for name in names:
        be = get_backend(name)
        try:
            be.interpreter_class()
        except BackendUnavailable as exc:
            log.info("inference backend %s unavailable: %s", name, exc)
            problems.append(f"{name}: {exc}")
            continue
        try:
            interp = be.create(model_path, num_threads)
            interp.allocate_tensors()
        except Exception as exc:  # runtimes raise ValueError, RuntimeError, ImportError, ...
            if _is_model_error(exc):
                raise InferenceError(
                    f"model file {model_path} could not be loaded by {name} (corrupt or not a TFLite model): {exc}"
                ) from exc
            log.warning("inference backend %s failed, trying the next: %s", name, exc)
            problems.append(f"{name}: {exc}")
            continue
        if problems:
            log.warning("using inference backend %s (%s)", name, "; ".join(problems))
        return interp, name
    raise InferenceError(
        "no TFLite runtime works here; tried "
        + "; ".join(problems)
        + ". Install ai-edge-litert (pip install ai-edge-litert), or tflite-runtime with numpy < 2."
    )
