"""The running bridge, put together in one place.

`meter-bridge run` starts one or more worker processes; each is built here, from the config, in this
order: the store (engine), the message source (`ingest.source`: an MQTT shared subscription on one box,
an AMQP quorum queue on a RabbitMQ cluster), the fleet publisher (answers and retained fleet topics go
out through the source), and on worker 0 the billing and loyalty gateways and the timers (submission
pass, settlement); then the metrics listener and the ingest worker that uses all of them. Everything is
passed in explicitly; nothing below builds its own. They are closed in the reverse order, on every
way out (a clean stop, an error while starting, a crash in the loop): the metrics listener, the timers
(a running pass gets a few seconds to finish; one cut short is safe, its rows are leased), the
gateways, the source (the broker keeps what was not acknowledged), the engine.

A message source is added by one factory in `SOURCES` (a class with the `MessageSource` interface of
`cloud_bridge.ingest.source`) and one value of `ingest.source`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from cloud_bridge.config import SOURCE_NAMES, BridgeConfig
from cloud_bridge.fleet import FleetPublisher
from cloud_bridge.gateways.base import Gateways
from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.ingest.amqp_source import AmqpSource
from cloud_bridge.ingest.mqtt_source import MqttSource
from cloud_bridge.ingest.source import MessageSource, SourceError
from cloud_bridge.ingest.worker import IngestWorker
from cloud_bridge.metrics import IngestMetrics, MetricsServer, StoreCollector, health
from cloud_bridge.settlement import settle_dirty
from cloud_bridge.store.engine import open_existing_store
from cloud_bridge.submission.passes import logged_pass
from cloud_bridge.timers import BackgroundJob, PeriodicTask

log = logging.getLogger(__name__)

JOB_STOP_WAIT_S = 5.0

SourceFactory = Callable[[BridgeConfig, str, int], MessageSource]
"""(config, worker name, worker index) -> a source, not started yet."""


def mqtt_source(config: BridgeConfig, worker: str, index: int) -> MessageSource:
    """One box: the shared subscription `$share/<group>/meters/+/reading` on Mosquitto, under the worker's
    stable client id; worker 0 also follows the devices' status and telemetry."""
    return MqttSource(config.mqtt, worker, subscribe_status=index == 0)


def amqp_source(config: BridgeConfig, worker: str, index: int) -> MessageSource:
    """A city: the quorum queue `amqp.queue` on a RabbitMQ cluster, every worker competing on it; status
    and telemetry from `amqp.status_queue`, one active consumer at a time (any worker takes over)."""
    return AmqpSource(config.amqp, worker)


SOURCES: dict[str, SourceFactory] = {"mqtt": mqtt_source, "amqp": amqp_source}
assert set(SOURCES) == set(SOURCE_NAMES), "every ingest.source value needs a factory here"


def build_source(name: str, config: BridgeConfig, worker: str, index: int) -> MessageSource:
    factory = SOURCES.get(name)
    if factory is None:
        raise SourceError(f"unknown message source {name!r}: use one of {', '.join(sorted(SOURCES))}")
    return factory(config, worker, index)


def worker_name(config: BridgeConfig, index: int) -> str:
    """Worker i's stable name: its MQTT client id and its row in the ingest counters."""
    return f"{config.mqtt.client_id_prefix}-{index}"


@dataclass(frozen=True)
class TimedJob:
    job: BackgroundJob
    every_s: float

    def task(self) -> PeriodicTask:
        return PeriodicTask(self.job.name, self.every_s, self.job.tick)


def timed_jobs(engine: Engine, config: BridgeConfig, gateways: Gateways,
               on_failure: Callable[[str], None] | None = None) -> list[TimedJob]:
    """What the bridge does on its timers: a submission pass (billing, then loyalty credits) and the
    settlement of meters that got new readings. Each in a thread of its own, so ingest never waits;
    `on_failure(name)` hears of a run that raised."""
    return [
        TimedJob(BackgroundJob("submission", partial(logged_pass, engine, config, gateways), on_failure=on_failure),
                 config.submission.pass_every_s),
        TimedJob(BackgroundJob("settlement", partial(settle_dirty, engine, config.settlement),
                               on_failure=on_failure), config.settlement.every_s),
    ]


def _stop_jobs(jobs: list[TimedJob]) -> None:
    for t in jobs:
        if not t.job.join(JOB_STOP_WAIT_S):
            log.warning("%s still running at stop; it is cut short (its outbox rows are leased and retried)",
                        t.job.name)


@dataclass(frozen=True)
class BridgeWorker:
    """One running worker's parts, for the command that runs it."""

    name: str
    engine: Engine
    source: MessageSource
    ingest: IngestWorker
    jobs: list[TimedJob]
    metrics_url: str | None


def _metrics(config: BridgeConfig, engine: Engine, source: MessageSource, index: int,
             worker: str) -> tuple[IngestMetrics, CollectorRegistry]:
    """This worker's metrics; worker 0 also exports the fleet-wide metrics computed from the store."""
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry, worker)
    metrics.follow_source(registry, lambda: source.connected, lambda: source.connects)
    if index == 0:
        registry.register(StoreCollector(engine, config))
    return metrics, registry


def _metrics_server(config: BridgeConfig, engine: Engine, source: MessageSource, index: int, worker: str,
                    registry: CollectorRegistry) -> MetricsServer | None:
    """/metrics and /healthz on metrics.port + index (0: not served). A port in use is reported and ingest
    goes on without a listener: metrics must never stop ingest."""
    if not config.metrics.port:
        return None
    port = config.metrics.port + index
    try:
        server = MetricsServer(config.metrics.host, port, registry, lambda: health(engine, lambda: source.connected))
    except OSError as exc:
        log.error("no /metrics for %s: cannot listen on %s:%d (%s); set metrics.port (BRIDGE_METRICS__PORT), "
                  "0 turns the listener off", worker, config.metrics.host, port, exc.strerror or exc)
        return None
    return server.start()


@contextmanager
def bridge_worker(config: BridgeConfig, *, index: int = 0, name: str | None = None, source: str | None = None,
                  migrate: bool | None = None, timers: bool = True) -> Iterator[BridgeWorker]:
    """Build worker `index` (its name: `name` or <mqtt.client_id_prefix>-<index>) with the message source
    `source` (default: ingest.source), yield it, and close it all when the block ends.

    Raises StoreError or SourceError (their messages say what to check) when it cannot start. Worker 0
    migrates the store (unless `migrate` says otherwise), sweeps the fleet state and, unless `timers` is
    False (an ingest-only worker: tests, or passes run elsewhere), runs the timers."""
    name = name or worker_name(config, index)
    with ExitStack() as stack:
        engine = open_existing_store(config.database_url, migrate=index == 0 if migrate is None else migrate)
        stack.callback(engine.dispose)
        src = build_source(source or config.ingest.source, config, name, index)
        src.start()
        stack.callback(src.stop)
        fleet = FleetPublisher(engine, lambda t, p, q, r: src.publish(t, p, qos=q, retain=r), config.fleet,
                               config.window, sweep=index == 0)
        metrics, registry = _metrics(config, engine, src, index, name)
        jobs: list[TimedJob] = []
        if index == 0 and timers:
            gateways = stack.enter_context(http_gateways(config))
            jobs = timed_jobs(engine, config, gateways, lambda job: metrics.task_failures.labels(job).inc())
            for t in jobs:
                metrics.task_failures.labels(t.job.name)  # exported as 0 from the start
            stack.callback(_stop_jobs, jobs)
        server = _metrics_server(config, engine, src, index, name, registry)
        if server is not None:
            stack.callback(server.stop)
        ingest = IngestWorker(engine, src, config, shard=name, fleet=fleet, tasks=[j.task() for j in jobs],
                              metrics=metrics)
        url = f"http://{config.metrics.host}:{server.port}/" if server is not None else None
        yield BridgeWorker(name, engine, src, ingest, jobs, url)
