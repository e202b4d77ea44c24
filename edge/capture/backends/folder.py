"""Replays image files from a folder in name order: field recordings, tests, demos."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge.capture.base import Camera, CaptureError, EndOfFrames, Frame, read_state, write_state
from edge.capture.frametime import frame_time, time_from_name
from meter_vision.images import ImageRefused, read_bgr

if TYPE_CHECKING:
    from edge.config import CaptureConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
STATE_FILE = "capture-folder.json"

__all__ = ["FolderCamera", "time_from_name"]


class FolderCamera(Camera):
    """Frames from `folder` in file-name order. Remembers in `state_dir` where it is, so a restart continues.

    A file that cannot be decoded is logged, counted (`corrupt`) and skipped. At the end:
    `EndOfFrames`, or start over when `loop`. A frame's time: `edge.capture.frametime.frame_time`
    (the time in its name, else its modification time), the same rule as `meter-edge read`.
    """

    backend = "folder"

    def __init__(self, folder: Path, state_dir: Path, loop: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CaptureError(
                f"frame folder {self.folder} does not exist or is not a folder: set capture.source to a folder of "
                "jpg/png/bmp files")
        self.loop = loop
        self.state_path = Path(state_dir) / STATE_FILE
        state = read_state(self.state_path)
        same = state.get("folder") == str(self.folder.resolve())
        self.last: str | None = state.get("last") if same else None
        self.corrupt: int = int(state.get("corrupt", 0)) if same else 0
        self.served = 0

    @classmethod
    def from_config(cls, cfg: CaptureConfig, state_dir: Path) -> FolderCamera:
        if not cfg.source:
            raise CaptureError("capture.backend is 'folder' but capture.source is empty: set it to a folder of frames")
        return cls(Path(cfg.source), state_dir, loop=cfg.loop)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    def _save(self) -> None:
        write_state(self.state_path, {"folder": str(self.folder.resolve()), "last": self.last,
                                      "corrupt": self.corrupt})

    def capture(self) -> Frame:
        restarted = False
        while True:
            pending = [p for p in self.files() if self.last is None or p.name > self.last]
            for path in pending:
                self.last = path.name
                try:
                    image = read_bgr(path)
                except (ImageRefused, OSError) as exc:  # refused by its header before any pixel is decoded
                    self.corrupt += 1
                    log.warning("skipping %s: %s; %d skipped so far", path, exc, self.corrupt)
                    self._save()
                    continue
                self._save()
                self.served += 1
                try:
                    taken_at = frame_time(path)
                except OSError:  # removed since it was read: the time it was read is the best there is
                    taken_at = datetime.now(UTC)
                return Frame(image, taken_at, str(path))
            if not self.loop:
                log.info("folder %s: all frames replayed (%d unreadable skipped); nothing more to capture",
                         self.folder, self.corrupt)
                raise EndOfFrames(f"all frames in {self.folder} replayed (set capture.loop to start over)")
            if restarted:
                raise CaptureError(f"folder {self.folder} has no readable image (jpg/jpeg/png/bmp) to loop over")
            log.info("folder %s: at the end, starting over", self.folder)
            self.last, restarted = None, True
