"""`meter-bridge run [--workers N]`: ingest readings until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

import click

from cloud_bridge.cli_common import fail, load_config, open_engine
from cloud_bridge.config import SOURCE_NAMES
from cloud_bridge.ingest.amqp_source import redacted
from cloud_bridge.ingest.source import SourceError
from cloud_bridge.service import bridge_worker
from cloud_bridge.store.engine import StoreError

log = logging.getLogger("cloud_bridge.ingest")


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d: finishing the current batch and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_worker(ctx: click.Context, index: int, client_id: str | None, source: str) -> None:
    cfg = load_config(ctx)
    stop = threading.Event()
    _on_signals(stop)
    try:
        with bridge_worker(cfg, index=index, name=client_id, source=source) as w:
            if w.metrics_url:
                click.echo(f"{w.name}: /metrics and /healthz on {w.metrics_url}", err=True)
            broker = (f" {cfg.mqtt.host}:{cfg.mqtt.port}" if source == "mqtt" else
                      f" queue {cfg.amqp.queue} on {', '.join(redacted(u) for u in cfg.amqp.urls)}")
            click.echo(f"{w.name}: ingesting from {source}{broker} into "
                       f"{w.engine.url.render_as_string(hide_password=True)} (pid {os.getpid()})", err=True)
            w.ingest.run(stop)
    except (StoreError, SourceError) as exc:
        fail(str(exc))
    s = w.ingest.stats
    click.echo(f"{w.name}: stopped after {s.messages} messages in {s.batches} batches "
               f"({dict(s.outcomes)})", err=True)


def supervise(ctx: click.Context, workers: int, source: str) -> None:
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
        return subprocess.Popen([*base, "run", "--worker-index", str(i), "--source", source])

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
@click.option("--source", type=click.Choice(SOURCE_NAMES), default=None,
              help="Where readings come from: mqtt (a shared subscription on one broker) or amqp (a quorum "
                   "queue on a RabbitMQ cluster). Default: ingest.source (BRIDGE_INGEST__SOURCE), else mqtt.")
@click.pass_context
def run(ctx: click.Context, workers: int | None, worker_index: int | None, client_id: str | None,
        source: str | None) -> None:
    """Ingest readings: validate, store, commit, then acknowledge and answer each device.

    Each worker keeps a persistent MQTT session under a stable client id and shares
    $share/<group>/meters/+/reading with the others; worker 0 also follows meters/+/status and
    meters/+/telemetry and sweeps the fleet state. Each worker serves /metrics and /healthz on
    metrics.host:metrics.port + its index (metrics.port = 0: none). Stops cleanly on SIGTERM or
    Ctrl-C (the current batch is finished).
    """
    cfg = load_config(ctx)
    n = workers or cfg.ingest.workers
    source = source or cfg.ingest.source
    if worker_index is not None or n == 1:
        run_worker(ctx, worker_index or 0, client_id, source)
    else:
        if client_id:
            fail("--client-id names one worker: use it with --worker-index or --workers 1")
        supervise(ctx, n, source)
