"""`meter-bridge run [--workers N]`: ingest readings until SIGTERM/SIGINT."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

import click
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from cloud_bridge.cli_common import fail, load_config, open_engine
from cloud_bridge.config import BridgeConfig
from cloud_bridge.fleet import FleetPublisher
from cloud_bridge.ingest.mqtt_source import MqttSource
from cloud_bridge.ingest.source import SourceError
from cloud_bridge.ingest.worker import IngestWorker, PeriodicTask
from cloud_bridge.metrics import IngestMetrics, MetricsServer, StoreCollector, health

log = logging.getLogger("cloud_bridge.ingest")
TASKS_MODULE = "cloud_bridge.submission.timer"  # optional: `periodic_tasks(cfg, engine) -> list[PeriodicTask]`


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d: finishing the current batch and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _periodic_tasks(cfg: BridgeConfig, engine: object) -> list[PeriodicTask]:
    try:
        module = importlib.import_module(TASKS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != TASKS_MODULE:
            raise
        return []
    return list(module.periodic_tasks(cfg, engine))


def _metrics(cfg: BridgeConfig, engine: Engine, source: MqttSource, index: int,
             client_id: str) -> tuple[IngestMetrics, MetricsServer | None]:
    """This worker's metrics, served on metrics.port + index (0: not served). Worker 0 also exports the
    fleet-wide metrics computed from the store. A port in use is reported and ingest goes on without
    a listener: metrics must never stop ingest."""
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry, client_id)
    metrics.follow_source(registry, lambda: source.connected, lambda: source.connects)
    if index == 0:
        registry.register(StoreCollector(engine, cfg))
    if not cfg.metrics.port:
        return metrics, None
    port = cfg.metrics.port + index
    try:
        server = MetricsServer(cfg.metrics.host, port, registry, lambda: health(engine, lambda: source.connected))
    except OSError as exc:
        log.error("no /metrics for %s: cannot listen on %s:%d (%s); set metrics.port (BRIDGE_METRICS__PORT), "
                  "0 turns the listener off", client_id, cfg.metrics.host, port, exc.strerror or exc)
        return metrics, None
    click.echo(f"{client_id}: /metrics and /healthz on http://{cfg.metrics.host}:{server.port}/", err=True)
    return metrics, server.start()


def run_worker(ctx: click.Context, index: int, client_id: str | None) -> None:
    cfg = load_config(ctx)
    engine = open_engine(ctx, migrate=index == 0)
    client_id = client_id or f"{cfg.mqtt.client_id_prefix}-{index}"
    source = MqttSource(cfg.mqtt, client_id, subscribe_status=index == 0)
    stop = threading.Event()
    _on_signals(stop)
    try:
        source.start()
    except SourceError as exc:
        engine.dispose()
        fail(str(exc))
    fleet = FleetPublisher(engine, lambda t, p, q, r: source.publish(t, p, qos=q, retain=r), cfg.fleet,
                           cfg.window, sweep=index == 0)
    tasks = _periodic_tasks(cfg, engine) if index == 0 else []
    metrics, server = _metrics(cfg, engine, source, index, client_id)
    worker = IngestWorker(engine, source, cfg, shard=client_id, fleet=fleet, tasks=tasks, metrics=metrics)
    click.echo(f"{client_id}: ingesting from {cfg.mqtt.host}:{cfg.mqtt.port} into "
               f"{engine.url.render_as_string(hide_password=True)} (pid {os.getpid()})", err=True)
    try:
        worker.run(stop)
    finally:
        if server is not None:
            server.stop()
        source.stop()
        engine.dispose()
    s = worker.stats
    click.echo(f"{client_id}: stopped after {s.messages} messages in {s.batches} batches "
               f"({dict(s.outcomes)})", err=True)


def supervise(ctx: click.Context, workers: int) -> None:
    """Run N worker processes (each its own stable client id) and restart one that dies."""
    load_config(ctx)
    open_engine(ctx).dispose()  # migrate once, before any worker starts
    stop = threading.Event()
    _on_signals(stop)
    base = [sys.executable, "-m", "cloud_bridge.cli"]
    config_path = (ctx.find_root().obj or {}).get("config_path")
    if config_path is not None:
        base += ["--config", str(config_path)]
    verbose = ctx.find_root().params.get("verbose") or 0
    base += ["-v"] * verbose

    def spawn(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*base, "run", "--worker-index", str(i)])

    procs = {i: spawn(i) for i in range(workers)}
    click.echo(f"supervising {workers} workers: pids {[p.pid for p in procs.values()]}", err=True)
    while not stop.wait(0.5):
        for i, p in list(procs.items()):
            if p.poll() is not None:
                log.error("worker %d (pid %d) exited with %s; restarting it in 2s", i, p.pid, p.returncode)
                if stop.wait(2.0):
                    break
                procs[i] = spawn(i)
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not stop in time; killing it", p.pid)
            p.kill()


@click.command("run")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes sharing the subscription (default: ingest.workers).")
@click.option("--worker-index", type=click.IntRange(0, 63), default=None,
              help="Run only worker I in this process (its client id is <mqtt.client_id_prefix>-I).")
@click.option("--client-id", default=None, help="Override the worker's MQTT client id (keep it stable).")
@click.pass_context
def run(ctx: click.Context, workers: int | None, worker_index: int | None, client_id: str | None) -> None:
    """Ingest readings: validate, store, commit, then acknowledge and answer each device.

    Each worker keeps a persistent MQTT session under a stable client id and shares
    $share/<group>/meters/+/reading with the others; worker 0 also follows meters/+/status and
    meters/+/telemetry and sweeps the fleet state. Each worker serves /metrics and /healthz on
    metrics.host:metrics.port + its index (metrics.port = 0: none). Stops cleanly on SIGTERM or
    Ctrl-C (the current batch is finished).
    """
    cfg = load_config(ctx)
    n = workers or cfg.ingest.workers
    if worker_index is not None or n == 1:
        run_worker(ctx, worker_index or 0, client_id)
    else:
        if client_id:
            fail("--client-id names one worker: use it with --worker-index or --workers 1")
        supervise(ctx, n)
