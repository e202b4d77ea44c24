"""Bridge benchmark: end-to-end ingest rate (publish -> committed) next to the raw broker QoS 1 rate.

    python -m bench.bridge [--n 5000] [--db sqlite,postgres] [--workers 1,2] [--out bench-out]
    python -m bench.bridge --broker rabbitmq [--n 5000] [--workers 1,2,4]     # the fleet broker

All in one run, on this machine: a private Mosquitto with the project's config; the baseline is one
paho QoS 1 publisher -> one QoS 1 subscriber (no database); each bridge run starts the real
`meter-bridge run --workers W` in a subprocess on a fresh database (a SQLite file, or a fresh
PostgreSQL database that is dropped afterwards), publishes N readings from 50 simulated devices,
and stops the clock when the N-th reading is committed (counted in the database).

`--broker rabbitmq`: a private 3-node RabbitMQ cluster with deploy/rabbitmq/ (cloud_bridge.rabbit_cluster);
the readings are published over MQTT 3.1.1 through all three nodes, the baseline is an AMQP consumer
acknowledging the quorum queue `bridge.readings` (no database), and each bridge run starts W
`meter-bridge run --source amqp` workers on a fresh PostgreSQL database. It also reports the CPU
seconds each reading cost the broker nodes, the workers and their PostgreSQL backends, and the bytes it
takes in PostgreSQL: the figures docs/operate-city-scale.md sizes a city from.
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


def _wait_stored(engine: Any, total: int, progress: Any, task: Any, t0: float, *, poll_s: float) -> None:
    """Until the store holds `total` readings (the progress bar follows), at most 300 s after `t0`."""
    n = 0
    while n < total:
        with read_only(engine) as conn:
            n = conn.execute(select(func.count()).select_from(readings)).scalar_one()
        progress.update(task, completed=n)
        if time.perf_counter() - t0 > 300:
            raise RuntimeError(f"only {n} of {total} stored after 300 s")
        if n < total:
            time.sleep(poll_s)


def _bound_store(db_url: str) -> Any:
    """The store with every bench device added and bound to a meter of its own."""
    engine = open_store(db_url)
    with engine.begin() as conn:
        for i, d in enumerate(DEVICES):
            registry.add_device(conn, d)
            registry.bind(conn, d, meter_serial=f"SN-{d}", kind="cold", payer_code=f"{2000000000 + i}",
                          address="bench")
    return engine


def bridge_rate(work: Path, db_url: str, workers: int, payloads: list[tuple[str, bytes]],
                progress: Progress) -> dict[str, Any]:
    engine = _bound_store(db_url)
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
            _wait_stored(engine, len(payloads), progress, task, t0, poll_s=0.01)
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


# -- the fleet broker: a RabbitMQ cluster ------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rabbit_publishers(cluster: Any) -> list[mqtt.Client]:
    user, password = cluster.admin_credentials
    pubs = []
    for node in cluster.nodes:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, client_id=f"bench-pub-{node.index}")
        c.username_pw_set(user, password)
        c.max_inflight_messages_set(100)
        c.connect("127.0.0.1", node.mqtt_port)
        c.loop_start()
        pubs.append(c)
    return pubs


def _publish_spread(pubs: list[mqtt.Client], payloads: list[tuple[str, bytes]]) -> None:
    """Every reading QoS 1 through one of the nodes in turn (as devices spread over a load balancer)."""
    for k, (topic, payload) in enumerate(payloads):
        pubs[k % len(pubs)].publish(topic, payload, qos=1)


def _close(clients: list[mqtt.Client]) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


def rabbit_broker_rate(cluster: Any, payloads: list[tuple[str, bytes]]) -> dict[str, float]:
    """Raw rate through the cluster: MQTT QoS 1 in (three nodes) -> quorum queue -> one AMQP consumer that
    acknowledges every message (no database)."""
    import pika

    user, password = cluster.admin_credentials
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", cluster.nodes[0].amqp_port, credentials=pika.PlainCredentials(user, password)))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)
    got = 0

    def on_message(c: Any, method: Any, _p: Any, _b: bytes) -> None:
        nonlocal got
        got += 1
        c.basic_ack(method.delivery_tag)

    ch.basic_consume("bridge.readings", on_message)
    pubs = _rabbit_publishers(cluster)
    cpu0 = sum(_cpu_s(n.pid) for n in cluster.nodes)
    t0 = time.perf_counter()
    _publish_spread(pubs, payloads)
    while got < len(payloads):
        conn.process_data_events(time_limit=0.1)
        if time.perf_counter() - t0 > 300:
            raise RuntimeError(f"baseline: only {got} of {len(payloads)} messages arrived")
    dt = time.perf_counter() - t0
    cpu = sum(_cpu_s(n.pid) for n in cluster.nodes) - cpu0
    _close(pubs)
    conn.close()
    return {"rate": len(payloads) / dt, "broker_cpu_ms_per_reading": 1000 * cpu / len(payloads)}


def rabbit_bridge_rate(cluster: Any, work: Path, db_url: str, workers: int, payloads: list[tuple[str, bytes]],
                       progress: Progress, secrets_dir: Path) -> dict[str, Any]:
    engine = _bound_store(db_url)
    user, _ = cluster.admin_credentials
    urls = cluster.amqp_urls
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_AMQP__USERNAME": user,
            "BRIDGE_AMQP__PASSWORD_FILE": str(secrets_dir / "admin-password"), "BRIDGE_METRICS__PORT": "0"}
    log_path = work / "bridge-rabbit.log"
    procs = []
    with log_path.open("ab") as log:
        for i in range(workers):
            e = env | {"BRIDGE_AMQP__URLS": json.dumps(urls[i % 3:] + urls[:i % 3])}
            procs.append(subprocess.Popen([sys.executable, "-m", "cloud_bridge.cli", "run", "--source", "amqp",
                                           "--worker-index", str(i)], env=e, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    pubs: list[mqtt.Client] = []
    try:
        deadline = time.monotonic() + 60
        while _consumers(cluster, "bridge.readings") < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the bridge workers did not come up: {log_path.read_text()[-1500:]}")
            time.sleep(0.2)
        with read_only(engine) as conn:
            backends = [int(r[0]) for r in conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        cpu0 = {p.pid: _cpu_s(p.pid) for p in procs} | {b: _cpu_s(b) for b in backends}
        node0 = sum(_cpu_s(n.pid) for n in cluster.nodes)
        pubs = _rabbit_publishers(cluster)
        task = progress.add_task(f"rabbitmq -> postgresql x{workers}", total=len(payloads))
        t0 = time.perf_counter()
        _publish_spread(pubs, payloads)
        _wait_stored(engine, len(payloads), progress, task, t0, poll_s=0.02)
        dt = time.perf_counter() - t0
        worker_cpu = sum(_cpu_s(p.pid) - cpu0[p.pid] for p in procs)
        with read_only(engine) as conn:  # the workers' backends now (a pool may have opened more since)
            backends = [int(r[0]) for r in conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        pg_cpu = sum(_cpu_s(b) - cpu0.get(b, 0.0) for b in backends)
        broker_cpu = sum(_cpu_s(nd.pid) for nd in cluster.nodes) - node0
        with read_only(engine) as conn:
            table_bytes = int(conn.exec_driver_sql("SELECT pg_total_relation_size('readings')").scalar_one())
    finally:
        _close(pubs)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        engine.dispose()
    k = len(payloads)
    return {"db": "postgresql", "broker": "rabbitmq", "workers": workers, "n": k, "seconds": dt, "rate": k / dt,
            "worker_cpu_ms_per_reading": 1000 * worker_cpu / k, "pg_backend_cpu_ms_per_reading": 1000 * pg_cpu / k,
            "broker_cpu_ms_per_reading": 1000 * broker_cpu / k, "readings_table_bytes_per_row": table_bytes / k}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rabbit_session_memory(cluster: Any, n: int = 300) -> dict[str, float]:
    """Broker memory (resident, summed over the nodes) per connected device: first N with a session per
    connection as the edge agent keeps it on this broker (clean session, its ack topic at QoS 0: a transient
    queue), then N with a clean session subscribed at QoS 1 (a durable classic queue), then N with a
    persistent one (QoS 1 kept in a quorum queue, as deploy/rabbitmq/ sets), all kept connected until the
    end so freed memory is not counted twice."""
    user, password = cluster.admin_credentials

    def rss() -> int:
        time.sleep(3.0)  # let the connections and queues settle
        return sum(_rss(nd.pid) for nd in cluster.nodes)

    out: dict[str, float] = {}
    clients: list[mqtt.Client] = []
    try:
        for kind, persistent, qos in (("connection", False, 0), ("clean", False, 1), ("persistent", True, 1)):
            before = rss()
            for k in range(n):
                node = cluster.nodes[k % len(cluster.nodes)]
                cid = f"mem-{kind}-{k}"
                c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, client_id=cid,
                                clean_session=not persistent)
                c.username_pw_set(user, password)
                c.connect("127.0.0.1", node.mqtt_port, keepalive=60)
                c.loop_start()
                c.subscribe(f"meters/{cid}/ack", qos=qos)
                clients.append(c)
            out[kind] = (rss() - before) / n
    finally:
        _close(clients)
        for k in range(n):  # persistent sessions' queues outlive the connection: drop them
            cluster.api("DELETE", f"/api/queues/%2F/mqtt-subscription-mem-persistent-{k}qos1")
    return out


def _consumers(cluster: Any, queue: str) -> int:
    r = cluster.api("GET", f"/api/queues/%2F/{queue}")
    return int(r.json().get("consumers") or 0) if r.status_code == 200 else 0


def rabbit_main(n: int, workers_list: str, baseline_runs: int, out: Path) -> None:
    from cloud_bridge.broker import write_secret
    from cloud_bridge.rabbit_cluster import ClusterError, RabbitCluster

    payloads = _payloads(n)
    size = statistics.mean(len(p) for _, p in payloads)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bridge-rabbit-") as tmp:
        work = Path(tmp)
        try:
            cluster = RabbitCluster(work / "cluster", 3).start()
        except ClusterError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            write_secret(work / "secrets" / "admin-password", cluster.admin_credentials[1] + "\n")
            memory = rabbit_session_memory(cluster)
            base = [rabbit_broker_rate(cluster, payloads) for _ in range(baseline_runs)]
            baseline = statistics.median(b["rate"] for b in base)
            broker_cpu = statistics.median(b["broker_cpu_ms_per_reading"] for b in base)
            with Progress(console=console, transient=True) as progress:
                for w in [int(x) for x in workers_list.split(",")]:
                    pg = _fresh_pg()
                    if pg is None:
                        raise click.ClickException("the RabbitMQ path stores into PostgreSQL, which is not reachable")
                    try:
                        results.append(rabbit_bridge_rate(cluster, work, pg[0], w, payloads, progress,
                                                          work / "secrets"))
                    finally:
                        _drop_pg(pg[1])
        finally:
            cluster.stop()
    table = Table(title=f"fleet broker: {n} readings of ~{size:.0f} B, MQTT QoS 1 into a 3-node RabbitMQ cluster "
                        "on this machine, AMQP out; CPU ms per reading")
    for col in ("run", "seconds", "readings/s", "vs broker", "broker ms", "workers ms", "PG ms"):
        table.add_column(col, justify="right" if col != "run" else "left")
    table.add_row("broker only", f"{n / baseline:.2f}", f"{baseline:,.0f}", "1.00", f"{broker_cpu:.2f}", "-", "-")
    for r in results:
        table.add_row(f"bridge x{r['workers']} -> PG", f"{r['seconds']:.2f}", f"{r['rate']:,.0f}",
                      f"{r['rate'] / baseline:.2f}", f"{r['broker_cpu_ms_per_reading']:.2f}",
                      f"{r['worker_cpu_ms_per_reading']:.2f}", f"{r['pg_backend_cpu_ms_per_reading']:.2f}")
    console.print(table)
    if results:
        console.print(f"readings table: {statistics.median(r['readings_table_bytes_per_row'] for r in results):.0f} "
                      "bytes per reading in PostgreSQL (rows and indexes)")
    console.print(f"broker memory per connected device: {memory['connection'] / 1024:.0f} KiB with a session per "
                  f"connection (QoS 0), {memory['clean'] / 1024:.0f} KiB clean with QoS 1, "
                  f"{memory['persistent'] / 1024:.0f} KiB persistent (quorum queue)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bridge-rabbitmq.json").write_text(json.dumps(
        {"n": n, "payload_bytes": size, "broker_rate": baseline, "broker_runs": base, "runs": results,
         "memory_per_device_bytes": memory, "cpus": os.cpu_count()}, indent=2))
    console.print(f"written {out / 'bridge-rabbitmq.json'}")



@click.command()
@click.option("--n", "n", type=int, default=5000, show_default=True, help="Readings per run.")
@click.option("--db", "dbs", default="sqlite,postgres", show_default=True, help="Databases to run on.")
@click.option("--workers", "workers_list", default=None, help="Worker counts to run [default: 1,2; rabbitmq: 1,2,4].")
@click.option("--broker", type=click.Choice(["mosquitto", "rabbitmq"]), default="mosquitto", show_default=True,
              help="mosquitto: one box (SQLite and PostgreSQL). rabbitmq: a private 3-node cluster, AMQP ingest, "
              "PostgreSQL.")
@click.option("--baseline-runs", type=int, default=3, show_default=True, help="Broker baseline runs (median).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-out"), show_default=True)
def main(n: int, dbs: str, workers_list: str | None, broker: str, baseline_runs: int, out: Path) -> None:
    """Bridge ingest rate vs the raw broker QoS 1 rate, for SQLite/PostgreSQL and 1/2 workers (Mosquitto),
    or through a 3-node RabbitMQ cluster into PostgreSQL with 1/2/4 workers (--broker rabbitmq)."""
    if broker == "rabbitmq":
        rabbit_main(n, workers_list or "1,2,4", baseline_runs, out)
        return
    workers_list = workers_list or "1,2"
    payloads = _payloads(n)
    size = statistics.mean(len(p) for _, p in payloads)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        work = Path(tmp)
        with MosquittoBroker(work / "baseline") as mosquitto:
            rates = [broker_rate(mosquitto.port, payloads) for _ in range(baseline_runs)]
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
