"""When a frame was taken, from its file: the one rule the folder backend and `meter-edge read` share.

A `YYYYMMDDTHHMMSSZ` anywhere in the file name (as `meter-edge simulate` and most field recorders
write it, e.g. `20250106T071500Z.jpg` or `meter-20250106T071500Z.jpg`) is that UTC time; a file
without one was taken when it was last modified.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

TIME_IN_NAME = re.compile(r"(\d{8}T\d{6}Z)")
NAME_FORMAT = "%Y%m%dT%H%M%SZ"


def time_from_name(path: Path) -> datetime | None:
    """The UTC time a file name carries (`…20250106T071500Z…`); None when it carries none (or an impossible one)."""
    m = TIME_IN_NAME.search(Path(path).name)
    if m is None:
        return None
    try:
        return datetime.strptime(m.group(1), NAME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def frame_name(taken_at: datetime, suffix: str = ".jpg") -> str:
    """The file name that carries `taken_at` (UTC)."""
    return taken_at.astimezone(UTC).strftime(NAME_FORMAT) + suffix


def frame_time(path: Path, fallback: datetime | None = None) -> datetime:
    """The time in the file name, else `fallback`, else the file's modification time (UTC)."""
    named = time_from_name(path)
    if named is not None:
        return named
    if fallback is not None:
        return fallback
    return datetime.fromtimestamp(Path(path).stat().st_mtime, tz=UTC)
