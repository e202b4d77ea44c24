"""Prometheus metrics and a health check for the bridge (`/metrics`, `/healthz`).

Served by `meter-bridge run` on `metrics.host:metrics.port` (worker i of `--workers N` on port + i).
Names: one `meterfleet_` prefix, base units (seconds, bytes, celsius), `_total` for counters, and no
label that grows with the fleet (no device id, payer code, meter serial or period): per-device detail
is on the fleet page and in `devices list`, not in a time series.

Two sources:
- `StoreCollector`: computed from the database on every scrape (the same answer from any worker, for
  the whole fleet): device counts, telemetry aggregates, the period's submission progress, and the
  store's own totals (readings by status, refusals by reason: rows are never deleted, so they only
  grow and are exposed as counters). Only worker 0 registers it, so a fleet is not counted N times.
- `IngestMetrics`: what this process did since it started (messages by outcome, batches, commit
  time, database retries, MQTT connection).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select, text

from cloud_bridge.config import BridgeConfig
from cloud_bridge.device_health import fleet_summary, period_progress
from cloud_bridge.store.engine import read_only
from cloud_bridge.store.tables import counters, readings, refusals, settlements, utcnow

log = logging.getLogger(__name__)

PREFIX = "meterfleet_"
READING_STATUSES = ("ok", "suspect", "error")
SETTLEMENT_STATES = ("settled", "outlier", "pending")
SUBMISSION_STATES = ("pending", "sending", "accepted", "refused", "needs_attention")
DELAY_SAMPLE = 1000


def _gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value, labels=list(labels) or None)


class StoreCollector(Collector):
    """Fleet-wide metrics computed from the store on each scrape. A scrape while the database is down
    answers `meterfleet_store_up 0` (and nothing else from the store) instead of failing."""

    def __init__(self, engine: Engine, cfg: BridgeConfig) -> None:
        self.engine = engine
        self.cfg = cfg

    def describe(self) -> Iterable[Metric]:
        return []  # computed on scrape: do not query the database when registering

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            families = self._from_store()
            up = 1.0
        except Exception:
            log.exception("metrics: the store could not be read")
            families, up = [], 0.0
        yield from families
        yield _gauge("store_up", "1 when the last scrape could read the database, else 0.", up)
        yield _gauge("store_scrape_duration_seconds", "Time to compute the store's metrics.",
                     time.perf_counter() - started)

    def _from_store(self) -> list[Metric]:
        now = utcnow()
        out: list[Metric] = []
        with read_only(self.engine) as conn:
            # retired devices (`devices retire`) are history: not counted as unbound, stale or offline
            fleet = fleet_summary(conn, now, self.cfg.fleet)
            progress = period_progress(conn, now, self.cfg.window)
            totals: dict[str, int] = dict(conn.execute(select(counters.c.name, func.sum(counters.c.value))
                                       .group_by(counters.c.name)).all())
            by_status: dict[str, int] = dict(conn.execute(select(readings.c.status, func.count())
                                          .group_by(readings.c.status)).all())
            by_reason: dict[str, int] = dict(conn.execute(select(refusals.c.reason, func.count())
                                          .group_by(refusals.c.reason)).all())
            by_settlement: dict[str, int] = dict(conn.execute(
                select(settlements.c.state, func.count()).group_by(settlements.c.state)).all())
            newest = conn.execute(select(func.max(readings.c.stored_at))).scalar()
            recent = conn.execute(select(readings.c.stored_at, readings.c.taken_at)
                                  .order_by(readings.c.id.desc()).limit(DELAY_SAMPLE)).all()
            conn.rollback()

        out.append(_gauge("devices", "Registered devices.", fleet.devices))
        out.append(_gauge("devices_online", "Devices whose retained status is online.", fleet.online))
        out.append(_gauge("devices_offline", "Devices whose retained status is offline (last will or clean stop).",
                          fleet.offline))
        out.append(_gauge("devices_stale", "Devices with no reading taken for fleet.stale_factor x "
                          "fleet.device_interval_s.", fleet.stale))
        out.append(_gauge("devices_unbound", "Devices without a binding in force (their readings are refused).",
                          fleet.unbound))
        last = _gauge("devices_last_reading", "Devices by the status of their newest reading.", labels=["status"])
        for status, n in (("ok", fleet.last_ok), ("suspect", fleet.last_suspect), ("error", fleet.last_error)):
            last.add_metric([status], n)
        out.append(last)
        out.append(_gauge("devices_not_ok_3_in_row", "Devices whose 3 or more newest readings are not ok.",
                          fleet.not_ok_3_in_row))
        out.append(_gauge("devices_suspect_last_day", "Devices with a suspect reading taken in the last 24 h.",
                          fleet.suspect_last_day))
        out.append(_gauge("devices_error_last_day", "Devices with an error reading (nothing read) in the last 24 h.",
                          fleet.error_last_day))

        out.append(_gauge("devices_reporting_telemetry", "Devices the bridge has telemetry from.",
                          fleet.reporting_telemetry))
        out.append(_gauge("outbox_readings", "Readings waiting in the devices' outboxes (sum of their telemetry).",
                          fleet.outbox_readings))
        out.append(_gauge("outbox_readings_max", "The deepest single device outbox.", fleet.outbox_readings_max))
        out.append(_gauge("devices_disk_full", "Devices reporting a full disk (their outbox cannot grow).",
                          fleet.disk_full))
        if fleet.cpu_temp_max_c is not None:
            out.append(_gauge("devices_cpu_temperature_max_celsius", "Hottest CPU in the fleet.", fleet.cpu_temp_max_c))
        if fleet.free_disk_min_bytes is not None:
            out.append(_gauge("devices_free_disk_min_bytes", "Least free disk on any device.",
                              fleet.free_disk_min_bytes))

        out.append(_counter("readings_received", "Messages received on reading topics (all workers).",
                            totals.get("received", 0)))
        stored = CounterMetricFamily(PREFIX + "readings_stored", "Readings stored, by status.", labels=["status"])
        for status in READING_STATUSES:
            stored.add_metric([status], by_status.get(status, 0))
        out.append(stored)
        out.append(_counter("readings_duplicate", "Readings received again and answered `duplicate`.",
                            totals.get("duplicate", 0)))
        out.append(_counter("readings_seq_reused", "Duplicates whose content differed (a device reused a seq).",
                            totals.get("seq_reused", 0)))
        settled = _gauge("readings_settlement", "Stored readings by their settlement (settled: billable; outlier: "
                         "off the meter's course; pending: waiting for later readings).", labels=["state"])
        for state in SETTLEMENT_STATES:
            settled.add_metric([state], by_settlement.get(state, 0))
        out.append(settled)
        out.append(_gauge("devices_last_reading_outlier", "Devices whose newest reading settlement ruled out.",
                          fleet.last_outlier))
        refused = CounterMetricFamily(PREFIX + "readings_refused", "Messages refused, by reason.", labels=["reason"])
        for reason, count in sorted(by_reason.items()):
            refused.add_metric([str(reason)[:32]], count)
        out.append(refused)
        # residents' photos (cloud_bridge/web/photo.py, cloud_bridge/photo/store.py), counted in the store
        photo_refused = CounterMetricFamily(PREFIX + "photos_refused", "Residents' photos (or the values sent with "
                                            "them) refused, by reason; nothing was stored.", labels=["reason"])
        photo_read = CounterMetricFamily(PREFIX + "photos_read", "Residents' photos read, by the reader's status "
                                         "(ok / unsure / no_counter), re-reads after a moved box included.",
                                         labels=["status"])
        photo_sent = CounterMetricFamily(PREFIX + "photo_readings_sent", "Photo readings residents sent, by outcome "
                                         "(as_read / edited; accepted / review).", labels=["outcome"])
        for name, value in sorted(totals.items()):
            kind, _, label = str(name).partition(":")
            family = {"photo_refused": photo_refused, "photo_read": photo_read, "photo_sent": photo_sent}.get(kind)
            if family is not None and label:
                family.add_metric([label[:32]], value)
        out += [photo_refused, photo_read, photo_sent]
        out.append(_counter("photos_box_moved", "Photos whose counter box the resident moved to have it read again.",
                            totals.get("photo_box_moved", 0)))
        out.append(_counter("telemetry_received", "Telemetry messages received (all workers).",
                            totals.get("telemetry_received", 0)))
        out.append(_counter("telemetry_ignored", "Telemetry messages ignored as malformed.",
                            totals.get("telemetry_ignored", 0)))
        if newest is not None:
            out.append(_gauge("last_reading_stored_timestamp_seconds",
                              "When the newest reading was stored (Unix time).", newest.timestamp()))
        delays = sorted((r.stored_at - r.taken_at).total_seconds() for r in recent)
        if delays:
            delay = _gauge("reading_delay_seconds", f"stored_at - taken_at over the newest {DELAY_SAMPLE} readings.",
                           labels=["quantile"])
            for q in (0.5, 0.95, 1.0):
                delay.add_metric([str(q)], delays[min(len(delays) - 1, round(q * (len(delays) - 1)))])
            out.append(delay)

        out.append(_gauge("period_meters_bound", "Meters with a binding in force (to be billed this period).",
                          progress.meters_bound))
        meters = _gauge("period_meters", "Meters of the current period by their submission state (a meter counts "
                        "once; corrections apart).", labels=["state"])
        for state in SUBMISSION_STATES:
            meters.add_metric([state], progress.by_state.get(state, 0))
        out.append(meters)
        out.append(_gauge("period_meters_not_billed", "Bound meters with no accepted submission this period.",
                          progress.not_billed))
        out.append(_gauge("period_corrections_accepted", "Residents' corrections accepted this period.",
                          progress.corrections_accepted))
        out.append(_gauge("submission_window_open", "1 while the current period's submission window is open.",
                          1.0 if progress.window_open else 0.0))
        out.append(_gauge("submission_window_closes_timestamp_seconds",
                          "When the current period's submission window closes (Unix time).",
                          progress.window_closes.timestamp()))
        return out


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


class IngestMetrics:
    """What this ingest process did since it started."""

    def __init__(self, registry: CollectorRegistry, worker: str) -> None:
        self.messages = Counter(PREFIX + "ingest_messages", "Messages this worker handled, by outcome.",
                                ["outcome"], registry=registry)
        for outcome in ("stored", "duplicate", "refused", "status", "telemetry", "ignored"):
            self.messages.labels(outcome)
        self.batches = Counter(PREFIX + "ingest_batches", "Batches committed by this worker.", registry=registry)
        self.commit_seconds = Histogram(
            PREFIX + "ingest_commit_duration_seconds", "Time to decide, store and commit one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0), registry=registry)
        self.db_retries = Counter(PREFIX + "ingest_database_retries",
                                  "Batches kept unacknowledged and retried because the database was unavailable.",
                                  registry=registry)
        self.task_failures = Counter(PREFIX + "periodic_task_failures", "Periodic tasks (e.g. a submission pass) "
                                     "that raised.", ["task"], registry=registry)
        self.info = Gauge(PREFIX + "ingest_worker_info", "This process's worker id (value 1).", ["worker"],
                          registry=registry)
        self.info.labels(worker).set(1)

    def follow_source(self, registry: CollectorRegistry, connected: Callable[[], bool],
                      connects: Callable[[], int]) -> None:
        """Export the MQTT connection state, read from the source at scrape time."""
        registry.register(_SourceCollector(connected, connects))


class _SourceCollector(Collector):
    def __init__(self, connected: Callable[[], bool], connects: Callable[[], int]) -> None:
        self.connected = connected
        self.connects = connects

    def collect(self) -> Iterator[Metric]:
        yield _gauge("mqtt_connected", "1 while this worker is connected to the broker.",
                     1.0 if self.connected() else 0.0)
        yield _counter("mqtt_connects", "Connections this worker made to the broker (more than 1: it reconnected).",
                       self.connects())


def database_ok(engine: Engine) -> tuple[bool, str]:
    try:
        with read_only(engine) as conn:
            conn.execute(text("SELECT 1"))
            conn.rollback()
        return True, "ok"
    except Exception as exc:
        return False, str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]


def health(engine: Engine, broker_connected: Callable[[], bool] | None) -> tuple[bool, dict[str, Any]]:
    """(healthy, details): the database answers, and (in an ingest process) the broker is connected."""
    db_ok, db_detail = database_ok(engine)
    body: dict[str, Any] = {"database": db_detail}
    ok = db_ok
    if broker_connected is not None:
        connected = broker_connected()
        body["broker"] = "connected" if connected else "disconnected"
        ok = ok and connected
    body["status"] = "ok" if ok else "unhealthy"
    return ok, body


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


def wsgi_app(registry: CollectorRegistry, healthz: Callable[[], tuple[bool, dict[str, Any]]]) -> Any:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"GET only\n"]
        if path == "/healthz":
            ok, body = healthz()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [json.dumps(body).encode()]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics and /healthz only\n"]

    return app


class MetricsServer:
    """`/metrics` and `/healthz` on a small threaded HTTP server in a daemon thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 healthz: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self.httpd = make_server(host, port, wsgi_app(registry, healthz), server_class=_ThreadingWSGIServer,
                                 handler_class=_QuietHandler)
        self.port = int(self.httpd.server_port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
