"""systemd notifications for `Type=notify` with `WatchdogSec` (sdnotify; silent outside systemd)."""

from __future__ import annotations

import time
from typing import Any


class Watchdog:
    """systemd notifications (READY, WATCHDOG, STOPPING, STATUS); silent without $NOTIFY_SOCKET."""

    def __init__(self) -> None:
        try:
            import sdnotify

            self._n: Any = sdnotify.SystemdNotifier()
        except ImportError:  # pragma: no cover - sdnotify is in the edge extra
            self._n = None
        self._last = 0.0

    def notify(self, msg: str) -> None:
        if self._n is not None:
            self._n.notify(msg)

    def ping(self, min_gap_s: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._last >= min_gap_s:
            self._last = now
            self.notify("WATCHDOG=1")
