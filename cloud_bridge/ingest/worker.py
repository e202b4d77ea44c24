"""The ingest worker: take a batch from the source, decide and store it in one transaction, commit,
then answer each device and acknowledge the batch to the source. A crash before the commit loses
nothing (the source redelivers); a crash after it only causes `duplicate` answers later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from cloud_bridge.config import BridgeConfig
from cloud_bridge.fleet import FleetPublisher
from cloud_bridge.ingest.source import Message, MessageSource
from cloud_bridge.ingest.store import (
    STORE_ERROR,
    Outcome,
    bump_counters,
    count_outcomes,
    handle_batch,
    record_refusal,
)
from cloud_bridge.metrics import IngestMetrics
from cloud_bridge.store.tables import utcnow
from cloud_bridge.timers import PeriodicTask
from contract import topics
from contract.payloads import Ack, DeadLetter

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    batches: int = 0
    messages: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class IngestWorker:
    def __init__(self, engine: Engine, source: MessageSource, cfg: BridgeConfig, *, shard: str,
                 fleet: FleetPublisher | None = None, tasks: Sequence[PeriodicTask] = (),
                 clock: Callable[[], datetime] = utcnow, metrics: IngestMetrics | None = None) -> None:
        self.engine = engine
        self.source = source
        self.cfg = cfg
        self.shard = shard
        self.fleet = fleet
        self.tasks = list(tasks)
        self.clock = clock
        self.metrics = metrics
        self.stats = WorkerStats()

    def run(self, stop: threading.Event) -> None:
        ing = self.cfg.ingest
        wait = min(0.5, self.cfg.fleet.publish_every_s)
        while not stop.is_set():
            batch = self.source.next_batch(ing.batch_size, ing.batch_ms / 1000, wait)
            if batch:
                self.process(batch, stop)
            if self.fleet is not None:
                self.fleet.tick()
            self._run_tasks()
        if self.fleet is not None:
            self.fleet.tick(force=True)

    def _run_tasks(self) -> None:
        mono = time.monotonic()
        for task in self.tasks:
            if mono - task.last >= task.every_s:
                task.last = mono
                try:
                    task.run(self.clock())
                except Exception:
                    log.exception("periodic task %s failed; it runs again in %.0fs", task.name, task.every_s)
                    if self.metrics is not None:
                        self.metrics.task_failures.labels(task.name).inc()

    def process(self, batch: list[Message], stop: threading.Event | None = None) -> list[Outcome]:
        """Store a batch; returns the outcomes (after commit, answers sent and source acked)."""
        started = time.perf_counter()
        outcomes = self._commit_with_retry(batch, stop)
        if self.metrics is not None and outcomes is not None:
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
        if outcomes is None:  # stopping while the database is down: leave the batch unacked
            return []
        for o in outcomes:
            self._answer(o)
        self.source.ack(batch)
        self.stats.batches += 1
        self.stats.messages += len(batch)
        self.stats.outcomes.update(o.kind for o in outcomes)
        if self.metrics is not None:
            self.metrics.batches.inc()
            for o in outcomes:
                self.metrics.messages.labels(o.kind).inc()
        if self.fleet is not None:
            self.fleet.mark(o.device_id for o in outcomes if o.device_id and o.kind in ("stored", "status"))
        return outcomes

    def _store(self, batch: list[Message]) -> list[Outcome]:
        now = self.clock()
        keep = self.cfg.ingest.keep_refused_payload
        with self.engine.begin() as conn:
            outcomes = handle_batch(conn, batch, now, keep, max_clock_skew_s=self.cfg.ingest.max_clock_skew_s)
            bump_counters(conn, self.shard, count_outcomes(outcomes), now)
        return outcomes

    def _commit_with_retry(self, batch: list[Message], stop: threading.Event | None) -> list[Outcome] | None:
        delay = 0.2
        while True:
            try:
                return self._store(batch)
            except OperationalError as exc:  # database unreachable/locked: nothing acked, try again
                log.error("database unavailable (%s); batch of %d kept unacknowledged, retrying in %.1fs",
                          str(exc.orig or exc).splitlines()[0], len(batch), delay)
                if self.metrics is not None:
                    self.metrics.db_retries.inc()
            except Exception:
                # Something in this batch the database (or the driver: OverflowError for an integer
                # SQLite cannot hold) will not take: store one by one, so one bad message becomes a
                # refusal instead of a crash loop on every redelivery.
                log.exception("batch of %d failed; storing its messages one by one", len(batch))
                return self._store_one_by_one(batch)
            if stop is not None and stop.wait(delay):
                return None
            if stop is None:
                time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _store_one_by_one(self, batch: list[Message]) -> list[Outcome]:
        outcomes = []
        for m in batch:
            try:
                outcomes += self._store([m])
            except OperationalError:
                raise
            except Exception as exc:
                now = self.clock()
                orig = exc.orig if isinstance(exc, DBAPIError) else exc
                detail = f"{type(orig).__name__}: {str(orig or exc).splitlines()[0] if str(orig) else ''}"[:300]
                with self.engine.begin() as conn:
                    o = record_refusal(conn, m, STORE_ERROR, detail, None, None, now, keep_payload=True)
                    bump_counters(conn, self.shard, count_outcomes([o]), now)
                outcomes.append(o)
        return outcomes

    def _answer(self, o: Outcome) -> None:
        if o.kind in ("status", "telemetry", "ignored"):
            return
        parsed = topics.parse_device_topic(o.message.topic)
        ack_to = parsed.device_id if parsed is not None and parsed.kind == topics.READING else None
        if o.kind in ("stored", "duplicate"):
            assert ack_to is not None
            self.source.publish(topics.ack(ack_to), Ack(seq=o.seq, epoch=o.epoch, state=o.kind).to_json_bytes())
            return
        reason = o.reason or "refused"
        if ack_to is not None:
            ack = Ack(seq=o.seq, epoch=o.epoch, state="rejected", reason=reason)
            self.source.publish(topics.ack(ack_to), ack.to_json_bytes())
        letter = DeadLetter(topic=o.message.topic[:300], reason=reason, detail=(o.detail or None) and o.detail[:300],
                            device_id=o.device_id, seq=o.seq, size=len(o.message.payload), at=self.clock())
        self.source.publish(topics.BRIDGE_DEADLETTER, letter.to_json_bytes())
