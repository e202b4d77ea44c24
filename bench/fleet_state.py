"""Fleet-state benchmark: the device-state query, the fleet page, the metrics scrape and one fleet sweep,
reading each device's newest reading from `device_latest` (now) against recomputing it from every
reading (before: the query as it was until migration 0008), in the same run on the same database.

    python -m bench.fleet_state [--devices 100000] [--per-device 24] [--db sqlite,postgres] [--repeat 2]

Each database is fresh (a SQLite file in a temporary directory, or a PostgreSQL database made for the
run and dropped afterwards) and filled directly (not through MQTT): `--devices` bound devices with
`--per-device` hourly readings each (~390-byte payloads kept as `raw`, 90 % ok, 7 % suspect, 3 % error),
each reading settled, half the devices with a retained status. The backfill (what `db upgrade` to 0008
does) is timed too, and the ingest cost: batches of 200 new readings stored with and without keeping
`device_latest`. Times are the best of `--repeat`; ratios are before / now (how many times faster now).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from alembic import command
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, func, select, text

import cloud_bridge.device_health as device_health_module
import cloud_bridge.ingest.store as ingest_store
from cloud_bridge.config import BridgeConfig
from cloud_bridge.device_health import FleetFilter, device_rows, fleet_listing, fleet_summary, period_progress
from cloud_bridge.fleet import FleetPublisher
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle_batch
from cloud_bridge.metrics import StoreCollector
from cloud_bridge.store.device_latest import latest_from_readings
from cloud_bridge.store.engine import _alembic_config, open_store, read_only, upgrade
from cloud_bridge.store.tables import bindings, device_latest, device_status, devices, meters, payers
from contract.payloads import DeviceState, Reading

PG_ADMIN_URL = os.environ.get("METER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
console = Console(width=150)


def _ts(t: datetime, sqlite: bool) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else t.isoformat()


def _raw(device_id: str, seq: int, at: datetime, value: str, status: str) -> str:
    # The shape and size of a real payload (~390 bytes).
    return (f'{{"v":1,"device_id":"{device_id}","epoch":1,"seq":{seq},"taken_at":"{at.isoformat()}",'
            f'"value":"{value}","unit":"m3","status":"{status}","reason":null,"confidence":0.97,'
            '"digits":[{"v":0,"f":0.1,"p":0.99},{"v":0,"f":0.2,"p":0.99},{"v":1,"f":1.3,"p":0.98},'
            '{"v":2,"f":2.1,"p":0.97},{"v":3,"f":3.4,"p":0.95}],"model":"digits-int8-v3"}')


def load(engine: Engine, n_devices: int, per_device: int) -> float:
    """Fill a fresh store; returns the seconds it took."""
    started = time.perf_counter()
    rnd = random.Random(19)
    is_sqlite = engine.dialect.name == "sqlite"
    since = NOW - timedelta(days=30)
    ids = [f"m{i:07d}" for i in range(n_devices)]
    chunk = 5000
    with engine.begin() as conn:
        for i in range(0, n_devices, chunk):
            part = ids[i:i + chunk]
            conn.execute(devices.insert(), [{"device_id": d, "created_at": since} for d in part])
            conn.execute(meters.insert(), [{"serial": f"S{d}", "kind": "cold", "created_at": since} for d in part])
            conn.execute(payers.insert(), [{"payer_code": f"{1_000_000_000 + i + k}", "address": f"Flat {d}",
                                            "created_at": since, "updated_at": since} for k, d in enumerate(part)])
            conn.execute(bindings.insert(), [{"device_id": d, "meter_serial": f"S{d}",
                                              "payer_code": f"{1_000_000_000 + i + k}", "valid_from": since}
                                             for k, d in enumerate(part)])
            conn.execute(device_status.insert(), [{"device_id": d, "online": True, "changed_at": since}
                                                  for d in part[::2]])
        binding_of = dict(conn.execute(select(bindings.c.device_id, bindings.c.id)).all())
    stored = _ts(NOW, is_sqlite)
    cols = ("device_id", "epoch", "seq", "taken_at", "stored_at", "status", "value", "unit", "confidence", "reason",
            "binding_id", "model", "raw", "source")

    def rows() -> Iterator[tuple[Any, ...]]:
        for k, d in enumerate(ids):
            base = 100 + k % 900
            for h in range(per_device):
                at = NOW - timedelta(hours=per_device - h)
                status = rnd.choices(("ok", "suspect", "error"), (0.90, 0.07, 0.03))[0]
                value = f"{base + h * 0.01:09.3f}"
                yield (d, 1, h + 1, _ts(at, is_sqlite), stored, status, None if status == "error" else value, "m3",
                       0.97, None if status == "ok" else "low_confidence", binding_of[d], "digits-int8-v3",
                       _raw(d, h + 1, at, value, status), "device")

    raw_conn = engine.raw_connection()
    try:
        cur = raw_conn.cursor()
        if is_sqlite:
            cur.execute("BEGIN IMMEDIATE")
            sql = f"INSERT INTO readings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            cur.executemany(sql, rows())  # type: ignore[arg-type]  # sqlite3 takes any iterable
            cur.execute("COMMIT")
        else:
            with cur.copy(f"COPY readings ({', '.join(cols)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for r in rows():
                    copy.write_row(r)
            raw_conn.commit()
    finally:
        raw_conn.close()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO settlements (reading_id, meter_serial, state, value, updated_at) "
                          "SELECT r.id, b.meter_serial, 'settled', r.value, r.stored_at FROM readings r "
                          "JOIN bindings b ON b.id = r.binding_id"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # what autovacuum does on PostgreSQL; SQLite: the planner's statistics
    return time.perf_counter() - started


@contextmanager
def scanning() -> Iterator[None]:
    """The code as it was before 0008: every device_rows recomputes the newest readings from all readings."""
    original = device_health_module.device_rows

    def scanned(now: datetime, fleet: Any, device_ids: Any = None, *, latest: Any = None) -> Any:
        ids = None if device_ids is None else sorted(set(device_ids))
        return original(now, fleet, ids, latest=latest_from_readings(ids))

    device_health_module.device_rows = scanned  # type: ignore[assignment]
    try:
        yield
    finally:
        device_health_module.device_rows = original


class PayloadPublisher(FleetPublisher):
    """The publisher before: kept each topic's payload (without its clock fields) and compared it."""

    def _send(self, state: DeviceState) -> int:
        import json

        payload = state.to_json_bytes()
        d = json.loads(payload)
        d.pop("at", None)
        d.pop("age_s", None)
        key = json.dumps(d, sort_keys=True).encode()
        topic = f"bridge/devices/{state.device_id}/state"
        if self._published.get(topic) == key:
            return 0
        self.publish(topic, payload, 1, True)
        self._published[topic] = key
        return 1


def _kept_bytes(p: FleetPublisher) -> int:
    return sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in p._published.items()) + sys.getsizeof(p._published)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def measure(engine: Engine, cfg: BridgeConfig, repeat: int) -> list[tuple[str, float, float, str]]:
    """[(what, before s, now s, note)]"""
    out: list[tuple[str, float, float, str]] = []

    def rows() -> int:
        with read_only(engine) as conn:
            return len(conn.execute(device_rows(NOW, cfg.fleet)).all())

    def rows_before() -> int:
        with read_only(engine) as conn:
            return len(conn.execute(device_rows(NOW, cfg.fleet, latest=latest_from_readings())).all())

    def page() -> int:
        with read_only(engine) as conn:
            progress = period_progress(conn, NOW, cfg.window)
            fleet_summary(conn, NOW, cfg.fleet)
            return len(fleet_listing(conn, NOW, cfg.fleet, FleetFilter(not_ok=1), progress, 100).rows)

    def scrape() -> int:
        return len(StoreCollector(engine, cfg)._from_store())

    with read_only(engine) as conn:  # both give the same rows
        assert conn.execute(device_rows(NOW, cfg.fleet)).all() == \
            conn.execute(device_rows(NOW, cfg.fleet, latest=latest_from_readings())).all()
    t_before, n = best(rows_before, repeat)
    t_now, _ = best(rows, repeat)
    out.append(("device_rows, every device", t_before, t_now, f"{n:,} rows"))
    with scanning():
        t_before, _ = best(page, repeat)
    t_now, _ = best(page, repeat)
    out.append(("fleet page (summary, progress, 100 not-ok)", t_before, t_now, ""))
    def summary() -> int:
        with read_only(engine) as conn:
            return fleet_summary(conn, NOW, cfg.fleet).devices

    with scanning():
        t_before, _ = best(summary, repeat)
    t_now, _ = best(summary, repeat)
    out.append(("fleet_summary (the scrape's device counts)", t_before, t_now, ""))
    with scanning():
        t_before, _ = best(scrape, repeat)
    t_now, _ = best(scrape, repeat)
    out.append(("metrics scrape (StoreCollector)", t_before, t_now, "also counts every reading by status"))

    sent: list[int] = []

    def publish(_t: str, _p: bytes, _q: int, _r: bool) -> None:
        sent.append(1)

    old = PayloadPublisher(engine, publish, cfg.fleet, cfg.window, sweep=True, clock=lambda: NOW)
    new = FleetPublisher(engine, publish, cfg.fleet, cfg.window, sweep=True, clock=lambda: NOW)
    with scanning():
        t_before, _ = best(lambda: old.tick(force=True), 1)
    t_now, _ = best(lambda: new.tick(force=True), 1)
    out.append(("first sweep (publishes every device)", t_before, t_now, f"{len(sent) // 2 - 1:,} device states each"))
    sent.clear()
    with scanning():
        t_before, _ = best(lambda: old.tick(force=True), repeat)
    t_now, _ = best(lambda: new.tick(force=True), repeat)
    assert len(sent) == 2 * repeat, "a sweep with nothing changed published device states"  # bridge/fleet only
    out.append(("next sweep (nothing changed)", t_before, t_now, "0 device states published"))
    out.append(("publisher memory, bytes per device", _kept_bytes(old) / len(old._published),
                _kept_bytes(new) / len(new._published), "payload kept / 16-byte digest"))
    return out


def ingest(engine: Engine, n_devices: int, batches: int, keep: bool) -> float:
    """Seconds per batch of 200 new readings (random devices, taken now) through handle_batch."""
    rnd = random.Random(7 if keep else 8)
    original = ingest_store.note_readings
    if not keep:
        ingest_store.note_readings = lambda conn, rows: None  # type: ignore[assignment]
    try:
        times = []
        for b in range(batches):
            msgs = []
            for i in range(200):
                d = f"m{rnd.randrange(n_devices):07d}"
                r = Reading(device_id=d, epoch=2 if keep else 3, seq=b * 200 + i + 1, taken_at=NOW, value="00500.000",
                            status="ok", confidence=0.97, model="digits-int8-v3")
                msgs.append(Message(f"meters/{d}/reading", r.to_json_bytes()))
            t = time.perf_counter()
            with engine.begin() as conn:
                handle_batch(conn, msgs, NOW)
            times.append(time.perf_counter() - t)
        times.sort()
        return times[len(times) // 2]
    finally:
        ingest_store.note_readings = original


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'fleet.db'}"
        return
    name = f"bench_fleet_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@click.command()
@click.option("--devices", "n_devices", default=100_000, show_default=True)
@click.option("--per-device", default=24, show_default=True, help="Hourly readings per device.")
@click.option("--db", "dbs", default="sqlite,postgres", show_default=True)
@click.option("--repeat", default=2, show_default=True)
def main(n_devices: int, per_device: int, dbs: str, repeat: int) -> None:
    cfg = BridgeConfig()
    for kind in dbs.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, database(kind, Path(tmp)) as url:
            engine = open_store(url)
            try:
                console.print(f"[bold]{kind}[/]: {n_devices:,} devices x {per_device} readings ...")
                loaded = load(engine, n_devices, per_device)
                # The migration's backfill, as `db upgrade` runs it on a store that has these readings.
                command.downgrade(_alembic_config(engine), "0007_photo_readings")
                t = time.perf_counter()
                upgrade(engine)
                backfill = time.perf_counter() - t
                with engine.connect() as conn:
                    assert conn.execute(select(func.count()).select_from(device_latest)).scalar_one() == n_devices
                table = Table(title=f"{kind}: {n_devices:,} devices x {per_device} readings "
                                    f"(loaded in {loaded:.0f} s; device_latest backfilled in {backfill:.1f} s)")
                for col in ("what", "before (scan) s", "now (device_latest) s", "before / now", ""):
                    table.add_column(col, justify="left" if col in ("what", "") else "right")
                for what, before, now, note in measure(engine, cfg, repeat):
                    unit = "" if "bytes" in what else "s"
                    fmt = (lambda v: f"{v:.0f}") if not unit else (lambda v: f"{v:.3f}")
                    table.add_row(what, fmt(before), fmt(now), f"{before / now:.1f}x" if now else "-", note)
                without = ingest(engine, n_devices, 10, keep=False)
                with_ = ingest(engine, n_devices, 10, keep=True)
                table.add_row("ingest, one batch of 200 (median of 10)", f"{without:.3f}", f"{with_:.3f}",
                              f"{without / with_:.2f}x", "without / with keeping device_latest")
                console.print(table)
            finally:
                engine.dispose()


if __name__ == "__main__":
    main()
