"""Real `meter-bridge run` processes: kill -9 in the middle of a burst, and two workers sharing the load."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from bridge_helpers import Device, bridge_process, config, reading, register, wait_until
from sqlalchemy import Engine, func, select

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.store.tables import counters, readings

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(readings)).scalar_one())


def wait_subscribed(dev: Device) -> None:
    # Worker 0 publishes bridge/fleet once it is connected and subscribed.
    assert wait_until(lambda: bool(dev.on_topic("bridge/fleet")), timeout=20), "the bridge did not come up"


def test_kill_9_mid_burst_then_restart_stores_each_reading_once(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                                tmp_path: Path) -> None:
    devices = [f"k-{i}" for i in range(10)]
    register(engine, devices)
    cfg = config(db_url, broker.port, tmp_path, ingest={"batch_size": 1})  # slow it down: one commit each
    dev = Device(broker.port)
    log = tmp_path / "bridge.log"
    proc = bridge_process(cfg, log_path=log)
    try:
        wait_subscribed(dev)
        total = 1500
        for n in range(total):
            dev.publish_reading(reading(devices[n % 10], n // 10, f"{n:05d}.5"))
        assert wait_until(lambda: stored(engine) >= 150, timeout=30), log.read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        at_kill = stored(engine)
        assert at_kill < total, "the burst was over before the kill: the test proved nothing"
        proc = bridge_process(cfg, log_path=log)  # same client id: the broker redelivers its session
        assert wait_until(lambda: stored(engine) == total, timeout=60), (stored(engine), log.read_text()[-2000:])
        assert wait_until(lambda: len({(a["device_id"], a["seq"]) for a in dev.acks
                                       if a["state"] in ("stored", "duplicate")}) == total, timeout=20)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    assert proc.returncode == 0, log.read_text()[-2000:]
    with engine.connect() as conn:
        rows = conn.execute(select(readings.c.device_id, readings.c.seq, readings.c.value)).all()
    assert len(rows) == total
    assert set(rows) == {(devices[n % 10], n // 10, f"{n:05d}.5") for n in range(total)}
    dev.close()


def test_two_workers_share_the_subscription(broker: MosquittoBroker, engine: Engine, db_url: str,
                                            tmp_path: Path) -> None:
    devices = [f"w-{i}" for i in range(20)]
    register(engine, devices)
    cfg = config(db_url, broker.port, tmp_path, ingest={"batch_size": 20})
    dev = Device(broker.port)
    log = tmp_path / "bridge.log"
    proc = bridge_process(cfg, "--workers", "2", log_path=log)
    try:
        wait_subscribed(dev)
        assert wait_until(lambda: log.read_text().count("ingesting from") == 2, timeout=20), log.read_text()
        total = 2000
        for n in range(total):
            dev.publish_reading(reading(devices[n % 20], n // 20))
        assert wait_until(lambda: stored(engine) == total, timeout=60), log.read_text()[-2000:]
        assert wait_until(lambda: len(dev.acks) == total, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert dev.acks_by_state() == {"stored": total}
    with engine.connect() as conn:
        shares = dict(conn.execute(select(counters.c.shard, counters.c.value)
                                   .where(counters.c.name == "received")).all())
    assert set(shares) == {"bridge-0", "bridge-1"}, shares
    assert sum(shares.values()) == total
    assert min(shares.values()) > total * 0.1, f"one worker did (almost) nothing: {shares}"
    assert "stopped after" in log.read_text()
    dev.close()
