"""The capture interface: a Camera gives Frames; backends register themselves by name.

Like gpiozero's pin factories: one small base class, one module per backend under
`edge/capture/backends/`, picked by `capture.backend` in the config. A backend is added by one
class (with `backend = "name"`) and one value in `CaptureConfig.backend`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from edge.files import write_private

if TYPE_CHECKING:
    from edge.config import CaptureConfig


class CaptureError(Exception):
    """No frame could be taken; the message says what went wrong and what to check."""


class EndOfFrames(Exception):
    """The folder backend has replayed every file and is not set to loop."""


@dataclass(frozen=True)
class Frame:
    """One photo: BGR uint8 pixels, when it was taken (timezone-aware UTC) and where it came from."""

    image: np.ndarray
    taken_at: datetime
    source: str

    def __post_init__(self) -> None:
        if self.taken_at.tzinfo is None:
            raise ValueError("Frame.taken_at must be timezone-aware (UTC)")
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"Frame.image must be HxWx3 uint8 BGR, got {self.image.dtype} {self.image.shape}")


BACKENDS: dict[str, type[Camera]] = {}


class Camera:
    """A source of frames. Subclasses set `backend` and implement `from_config` and `capture`."""

    backend: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.backend:
            BACKENDS[cls.backend] = cls

    @classmethod
    def from_config(cls, cfg: CaptureConfig, state_dir: Path) -> Camera:
        raise NotImplementedError

    def capture(self) -> Frame:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device; closing twice is harmless."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    from edge.capture import backends

    for info in pkgutil.iter_modules(backends.__path__):
        importlib.import_module(f"{backends.__name__}.{info.name}")
    _discovered = True


def open_camera(cfg: CaptureConfig, state_dir: Path) -> Camera:
    """The camera named by `cfg.backend`; `state_dir` keeps what a backend must remember across restarts.

    The backend's own module is imported first (`backends/<name>.py`): the others are not loaded at all
    (the simulator alone brings fonts, Pillow and wheel textures, ~10 MB a device never needs)."""
    if cfg.backend not in BACKENDS and cfg.backend.isidentifier():
        with contextlib.suppress(ImportError):
            importlib.import_module(f"edge.capture.backends.{cfg.backend}")
    if cfg.backend not in BACKENDS:
        _discover()
    try:
        cls = BACKENDS[cfg.backend]
    except KeyError:
        raise CaptureError(
            f"unknown capture backend {cfg.backend!r}: set capture.backend to one of {', '.join(sorted(BACKENDS))}"
        ) from None
    return cls.from_config(cfg, state_dir)


def read_state(path: Path) -> dict[str, Any]:
    """A backend's small JSON state, or {} when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file, fsync, rename) so a power cut leaves the old or the new state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
