"""The folder backend: name order, corrupt files skipped and counted, resume, end, loop, time from names."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture import CaptureError, EndOfFrames, open_camera
from edge.capture.backends.folder import FolderCamera
from edge.config import CaptureConfig


def write_frames(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img = np.full((24, 32, 3), 10 * i, np.uint8)  # frame i has pixel value 10·i, to know which came back
        assert cv2.imwrite(str(folder / name), img)


def level(frame_image: np.ndarray) -> int:
    return round(float(frame_image.mean()) / 10)


def test_replays_in_name_order_then_end_of_frames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = tmp_path / "frames"
    write_frames(frames, ["c.png", "a.jpg", "b.bmp"])
    (frames / "notes.txt").write_text("not a frame")
    cam = open_camera(CaptureConfig(backend="folder", source=str(frames)), tmp_path / "state")
    got = [Path(cam.capture().source).name for _ in range(3)]
    assert got == ["a.jpg", "b.bmp", "c.png"]
    with caplog.at_level(logging.INFO), pytest.raises(EndOfFrames, match=r"capture\.loop"):
        cam.capture()
    assert "all frames replayed" in caplog.text


def test_corrupt_file_is_skipped_logged_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = tmp_path / "frames"
    write_frames(frames, ["01.jpg", "02.jpg", "03.jpg"])
    (frames / "02.jpg").write_bytes(b"\xff\xd8\xff truncated jpeg")
    cam = FolderCamera(frames, tmp_path / "state")
    with caplog.at_level(logging.WARNING):
        first, second = cam.capture(), cam.capture()
    assert [Path(first.source).name, Path(second.source).name] == ["01.jpg", "03.jpg"]
    assert level(second.image) == 2
    assert cam.corrupt == 1
    assert "02.jpg" in caplog.text and "skipping" in caplog.text


def test_restart_continues_after_the_last_frame(tmp_path: Path) -> None:
    frames, state = tmp_path / "frames", tmp_path / "state"
    write_frames(frames, [f"{i:02d}.png" for i in range(5)])
    cam = FolderCamera(frames, state)
    assert [level(cam.capture().image) for _ in range(2)] == [0, 1]
    cam.close()
    again = FolderCamera(frames, state)  # as after a reboot
    assert [level(again.capture().image) for _ in range(3)] == [2, 3, 4]
    with pytest.raises(EndOfFrames):
        again.capture()
    assert (state / "capture-folder.json").is_file()
    other = tmp_path / "other"
    write_frames(other, ["x.png"])
    assert Path(FolderCamera(other, state).capture().source).name == "x.png"  # another folder starts afresh


def test_loop_starts_over(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    write_frames(frames, ["a.png", "b.png"])
    cam = open_camera(CaptureConfig(backend="folder", source=str(frames), loop=True), tmp_path / "state")
    assert [Path(cam.capture().source).name for _ in range(5)] == ["a.png", "b.png", "a.png", "b.png", "a.png"]


def test_loop_over_only_unreadable_files_is_an_error(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "bad.jpg").write_bytes(b"nope")
    cam = FolderCamera(frames, tmp_path / "state", loop=True)
    with pytest.raises(CaptureError, match="no readable image"):
        cam.capture()


def test_time_from_timestamp_names_else_file_time(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    write_frames(frames, ["20250106T071500Z.jpg", "cam1-20250106T080000Z.jpg", "zz-unnamed.jpg"])
    recorded = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)
    os.utime(frames / "zz-unnamed.jpg", (recorded.timestamp(), recorded.timestamp()))
    cam = FolderCamera(frames, tmp_path / "state")
    assert cam.capture().taken_at == datetime(2025, 1, 6, 7, 15, tzinfo=UTC)
    assert cam.capture().taken_at == datetime(2025, 1, 6, 8, tzinfo=UTC)
    assert cam.capture().taken_at == recorded


def test_folder_backend_and_read_share_one_rule(tmp_path: Path) -> None:
    """The agent replaying a folder and `meter-edge read` on the same files give each frame the same time."""
    from edge.reading.cli import frame_time as read_frame_time

    frames = tmp_path / "frames"
    names = ["20261124T170000Z.png", "meter-20261124T171500Z.jpg", "photo.jpg", "20261399T000000Z.jpg"]
    write_frames(frames, names)
    os.utime(frames / "photo.jpg", (1_700_000_000, 1_700_000_000))
    cam = FolderCamera(frames, tmp_path / "state")
    by_agent = {Path(f.source).name: f.taken_at for f in (cam.capture() for _ in names)}
    assert by_agent == {n: read_frame_time(frames / n) for n in names}
    assert by_agent["meter-20261124T171500Z.jpg"] == datetime(2026, 11, 24, 17, 15, tzinfo=UTC)
    assert by_agent["photo.jpg"] == datetime.fromtimestamp(1_700_000_000, UTC)
    impossible = frames / "20261399T000000Z.jpg"  # month 13: no time in the name, so the file's own
    assert by_agent[impossible.name] == datetime.fromtimestamp(impossible.stat().st_mtime, UTC)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="does not exist"):
        open_camera(CaptureConfig(backend="folder", source=str(tmp_path / "nope")), tmp_path)
    with pytest.raises(CaptureError, match=r"capture\.source is empty"):
        open_camera(CaptureConfig(backend="folder", source=""), tmp_path)
