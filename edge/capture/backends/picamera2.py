"""The Raspberry Pi camera through Picamera2 (libcamera). Imported only when used: it exists only on a Pi."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.capture.base import Camera, CaptureError, Frame

if TYPE_CHECKING:
    from edge.config import CaptureConfig

log = logging.getLogger(__name__)

INSTALL_HINT = ("install it from apt, not pip: `sudo apt install python3-picamera2`, and create the venv with "
                "`python3 -m venv --system-site-packages .venv` so it can see it")


def _import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError as exc:
        raise CaptureError(f"capture.backend is 'picamera2' but the picamera2 module is missing ({exc}): "
                           f"{INSTALL_HINT}; off a Pi use the 'opencv', 'folder' or 'simulator' backend") from exc
    return Picamera2


class Picamera2Camera(Camera):
    backend = "picamera2"

    def __init__(self, width: int, height: int, camera_num: int = 0) -> None:
        picamera2_cls = _import_picamera2()
        try:
            self.cam = picamera2_cls(camera_num)
            # Picamera2's "RGB888" is stored B, G, R per pixel (libcamera names formats by word order):
            # exactly OpenCV's BGR, so frames need no conversion.
            config = self.cam.create_still_configuration(main={"format": "RGB888", "size": (width, height)})
            self.cam.configure(config)
            self.cam.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise CaptureError(f"Pi camera {camera_num} could not be started ({exc}): check the ribbon cable and "
                               "`rpicam-hello --list-cameras`") from exc
        self.name = f"picamera2:{camera_num}"

    @classmethod
    def from_config(cls, cfg: CaptureConfig, state_dir: Path) -> Picamera2Camera:
        src = cfg.source.strip()
        return cls(cfg.width, cfg.height, int(src) if src.isdigit() else 0)

    def capture(self) -> Frame:
        try:
            image = self.cam.capture_array("main")
        except RuntimeError as exc:
            raise CaptureError(f"Pi camera capture failed ({exc}): check the cable and `dmesg`") from exc
        if image.ndim == 3 and image.shape[2] == 4:  # XRGB8888-style buffers carry a fourth byte
            image = image[:, :, :3]
        return Frame(image.copy(), datetime.now(UTC), self.name)

    def close(self) -> None:
        cam = getattr(self, "cam", None)
        if cam is not None:
            cam.stop()
            cam.close()
            self.cam = None
