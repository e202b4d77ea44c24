"""Bridge benchmark: end-to-end ingest rate (publish -> committed) next to the raw broker QoS 1 rate.

    python -m bench.bridge [--n 5000] [--db sqlite,postgres] [--workers 1,2] [--out bench-out]

All in one run, on this machine: a private Mosquitto with the project's config; the baseline is one
paho QoS 1 publisher -> one QoS 1 subscriber (no database); each bridge run starts the real
`meter-bridge run --workers W` in a subprocess on a fresh database (a SQLite file, or a fresh
PostgreSQL database that is dropped afterwards), publishes N readings from 50 simulated devices,
and stops the clock when the N-th reading is committed (counted in the database).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import create_engine, func, select

from cloud_bridge import registry
from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.store.engine import open_store, read_only
from cloud_bridge.store.tables import readings
from contract.payloads import Reading

PG_ADMIN_URL = os.environ.get("METER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DEVICES = [f"bench-{i:02d}" for i in range(50)]
console = Console()


def _client(port: int, **kw: Any) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, **kw)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _payloads(n: int) -> list[tuple[str, bytes]]:
    """N readings from 50 devices, each device's meter turning like a household's (a reading every 10 min,
    12 litres apart): the bridge settles each meter's readings as they arrive, and what that costs depends
    on a sequence a device could send (one instant for all of a device's readings is not one)."""
    from datetime import UTC, datetime, timedelta

    out = []
    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
    for k in range(n):
        d = DEVICES[k % len(DEVICES)]
        seq = k // len(DEVICES)
        r = Reading(device_id=d, seq=seq, taken_at=t0 + timedelta(minutes=10 * seq),
                    value=f"{123 + seq * 0.012:09.3f}", status="ok", confidence=0.98,
                    digits=[{"v": 1, "f": 1.2, "p": 0.98}] * 8, model="digits-c100-v1")  # type: ignore[list-item]
        out.append((f"meters/{d}/reading", r.to_json_bytes()))
    return out


def broker_rate(port: int, payloads: list[tuple[str, bytes]]) -> float:
    """Raw QoS 1 publish -> receive rate through the broker, no database."""
    got = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal got
        with lock:
            got += 1
            if got == len(payloads):
                done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe("meters/+/reading", qos=1)
    ready.wait(5)
    pub = _client(port)
    t0 = time.perf_counter()
    for topic, payload in payloads:
        pub.publish(topic, payload, qos=1)
    if not done.wait(120):
        raise RuntimeError(f"baseline: only {got} of {len(payloads)} messages arrived")
    dt = time.perf_counter() - t0
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return len(payloads) / dt


def _fresh_pg() -> tuple[str, str] | None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"meter_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        console.print(f"[yellow]PostgreSQL not reachable at {PG_ADMIN_URL} ({exc.__class__.__name__}): skipped[/]")
        return None
    finally:
        admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", name


def _drop_pg(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin.dispose()


def bridge_rate(work: Path, db_url: str, workers: int, payloads: list[tuple[str, bytes]],
                progress: Progress) -> dict[str, Any]:
    engine = open_store(db_url)
    with engine.begin() as conn:
        for i, d in enumerate(DEVICES):
            registry.add_device(conn, d)
            registry.bind(conn, d, meter_serial=f"SN-{d}", kind="cold", payer_code=f"{2000000000 + i}",
                          address="bench")
    with MosquittoBroker(work / f"broker-{uuid.uuid4().hex[:6]}") as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env |= {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_MQTT__PORT": str(broker.port)}
        log_path = work / "bridge.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "cloud_bridge.cli", "run", "--workers", str(workers)],
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        acks = 0
        ack_lock = threading.Lock()

        def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
            nonlocal acks
            if m.topic.endswith("/ack"):
                with ack_lock:
                    acks += 1

        ready = threading.Event()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.on_message = lambda c, u, m: (ready.set() if m.topic == "bridge/fleet" else on_message(c, u, m))
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        sub.subscribe([("meters/+/ack", 1), ("bridge/fleet", 1)])
        try:
            if not ready.wait(30):
                raise RuntimeError(f"the bridge did not come up: {log_path.read_text()[-1500:]}")
            time.sleep(1.0 if workers > 1 else 0.2)  # the other workers subscribe too
            pub = _client(broker.port)
            task = progress.add_task(f"{engine.dialect.name} x{workers}", total=len(payloads))
            t0 = time.perf_counter()
            for topic, payload in payloads:
                pub.publish(topic, payload, qos=1)
            n = 0
            while n < len(payloads):
                with read_only(engine) as conn:
                    n = conn.execute(select(func.count()).select_from(readings)).scalar_one()
                progress.update(task, completed=n)
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"only {n} of {len(payloads)} stored after 300 s")
                if n < len(payloads):
                    time.sleep(0.01)
            dt = time.perf_counter() - t0
            pub.disconnect()
            pub.loop_stop()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            sub.disconnect()
            sub.loop_stop()
            engine.dispose()
    return {"db": engine.dialect.name, "workers": workers, "n": len(payloads), "seconds": dt,
            "rate": len(payloads) / dt, "acks_seen": acks}


@click.command()
@click.option("--n", "n", type=int, default=5000, show_default=True, help="Readings per run.")
@click.option("--db", "dbs", default="sqlite,postgres", show_default=True, help="Databases to run on.")
@click.option("--workers", "workers_list", default="1,2", show_default=True, help="Worker counts to run.")
@click.option("--baseline-runs", type=int, default=3, show_default=True, help="Broker baseline runs (median).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-out"), show_default=True)
def main(n: int, dbs: str, workers_list: str, baseline_runs: int, out: Path) -> None:
    """Bridge ingest rate vs the raw broker QoS 1 rate, for SQLite/PostgreSQL and 1/2 workers."""
    payloads = _payloads(n)
    size = statistics.mean(len(p) for _, p in payloads)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        work = Path(tmp)
        with MosquittoBroker(work / "baseline") as broker:
            rates = [broker_rate(broker.port, payloads) for _ in range(baseline_runs)]
        baseline = statistics.median(rates)
        with Progress(console=console, transient=True) as progress:
            for db in [d.strip() for d in dbs.split(",") if d.strip()]:
                for w in [int(x) for x in workers_list.split(",")]:
                    if db == "sqlite":
                        results.append(bridge_rate(work, f"sqlite:///{work / f'b-{w}.db'}", w, payloads, progress))
                    elif db == "postgres":
                        pg = _fresh_pg()
                        if pg is None:
                            continue
                        try:
                            results.append(bridge_rate(work, pg[0], w, payloads, progress))
                        finally:
                            _drop_pg(pg[1])
                    else:
                        raise click.BadParameter(f"unknown database {db!r}: sqlite or postgres")
    table = Table(title=f"bridge ingest, {n} readings of ~{size:.0f} B from {len(DEVICES)} devices, QoS 1, loopback")
    for col in ("run", "seconds", "readings/s", "vs broker"):
        table.add_column(col, justify="right" if col != "run" else "left")
    table.add_row("broker only (pub -> sub, median)", f"{n / baseline:.2f}", f"{baseline:,.0f}", "1.00")
    for r in results:
        table.add_row(f"bridge {r['db']}, {r['workers']} worker(s)", f"{r['seconds']:.2f}", f"{r['rate']:,.0f}",
                      f"{r['rate'] / baseline:.2f}")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bridge.json").write_text(json.dumps(
        {"n": n, "payload_bytes": size, "broker_rate": baseline, "broker_runs": rates, "runs": results}, indent=2))
    console.print(f"written {out / 'bridge.json'}")


if __name__ == "__main__":
    main()
