"""Submission passes and settlement on the running bridge's timer (`meter-bridge run` imports
`periodic_tasks`).

A pass may wait for billing (backoff, Retry-After), so it runs in its own thread: ingest never waits
for billing. One pass at a time per process; several processes are safe (rows are claimed)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from cloud_bridge.settlement.settings import settlement_settings
from cloud_bridge.submission.settings import submission_settings

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig
    from cloud_bridge.ingest.worker import PeriodicTask

log = logging.getLogger(__name__)


class SubmissionTimer:
    def __init__(self, engine: Engine, config: BridgeConfig) -> None:
        self.engine = engine
        self.config = config
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.last_error: str | None = None

    def tick(self, now: datetime) -> None:
        self.start(now)

    def start(self, now: datetime) -> bool:
        """Start a pass as of `now` unless one is still running; returns whether it started one."""
        if self._thread is not None and self._thread.is_alive():
            log.info("submission pass still running; skipping this tick")
            return False
        self._thread = threading.Thread(target=self._run, args=(now,), name="submission-pass", daemon=True)
        self._thread.start()
        return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, now: datetime) -> None:
        from cloud_bridge.submission.passes import run_submission_pass

        try:
            report = run_submission_pass(self.engine, self.config, now)
        except Exception as exc:  # the next tick tries again; the outbox keeps every item
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("submission pass failed; the next one runs on the next tick")
            return
        self.passes += 1
        self.last_error = None
        counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts().items())) or "nothing to do"
        credits = sum(1 for c in report.credits if c.state == "credited")
        log.info("submission pass for %s: %s; %d credits reported", report.period or "(no open window)", counts,
                 credits)


class SettlementTimer:
    """Settles the meters that got new readings (cloud_bridge.settlement.settle_dirty), in its own thread
    so a batch of readings never waits for it; one run at a time."""

    def __init__(self, engine: Engine, config: BridgeConfig) -> None:
        self.engine = engine
        self.limits = settlement_settings(config)
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.meters = 0
        self.last_error: str | None = None

    def tick(self, now: datetime) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, args=(now,), name="settlement", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, now: datetime) -> None:
        from cloud_bridge.settlement import settle_dirty

        try:
            done = settle_dirty(self.engine, self.limits, now)
        except Exception as exc:  # the next tick tries again: settlement is derived and idempotent
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("settlement failed; it runs again on the next tick")
            return
        self.runs += 1
        self.meters += len(done)
        self.last_error = None


def periodic_tasks(config: BridgeConfig, engine: Engine) -> list[PeriodicTask]:
    from cloud_bridge.ingest.worker import PeriodicTask

    timer = SubmissionTimer(engine, config)
    settler = SettlementTimer(engine, config)
    return [PeriodicTask("submission", submission_settings(config).pass_every_s, timer.tick),
            PeriodicTask("settlement", settlement_settings(config).every_s, settler.tick)]
