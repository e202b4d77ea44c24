"""What the running bridge does on a timer, between ingest batches.

`PeriodicTask` is what the ingest worker calls (`run(now)` every `every_s`); `BackgroundJob` runs a piece
of work that may take long (a submission pass waits for billing's backoff and Retry-After) in its own
thread, one run at a time, so a batch of readings never waits for it. Which tasks a bridge runs is
decided in one place, `cloud_bridge.service`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

log = logging.getLogger(__name__)


@dataclass
class PeriodicTask:
    """Something the running bridge does on a timer (e.g. a submission pass), between batches."""

    name: str
    every_s: float
    run: Callable[[datetime], None]
    last: float = field(default=0.0)


class BackgroundJob:
    """Runs `work(now)` in a thread of its own, at most one run at a time; a tick while the previous
    run is still going is skipped. A run that raises is logged and counted; the next tick tries again
    (every job here is safe to repeat: the outboxes and settlement keep their state in the store)."""

    def __init__(self, name: str, work: Callable[[datetime], object], *,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.work = work
        self.on_failure = on_failure  # e.g. count it in meterfleet_periodic_task_failures_total
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick(self, now: datetime) -> None:
        self.start(now)

    def start(self, now: datetime) -> bool:
        """Start a run as of `now` unless one is still going; returns whether it started one."""
        if self.running:
            log.info("%s still running; skipping this tick", self.name)
            return False
        self._thread = threading.Thread(target=self._run, args=(now,), name=self.name, daemon=True)
        self._thread.start()
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the current run; returns False when it is still going after `timeout`."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _run(self, now: datetime) -> None:
        try:
            self.work(now)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed; it runs again on the next tick", self.name)
            if self.on_failure is not None:
                self.on_failure(self.name)
            return
        self.runs += 1
        self.last_error = None
