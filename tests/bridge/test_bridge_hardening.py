"""Issue 20, as an attacker and bad luck would do it, against a real Mosquitto and both databases.

- A device whose outbox is lost starts at seq 1 again: before, the bridge answered `duplicate` and the
  device dropped 19 of 19 new readings; now each outbox has an epoch and nothing is lost.
- An outbox restored from a backup reuses seqs of its own epoch: the bridge refuses those as
  `seq_reused` (not `duplicate`), the device starts a new epoch and sends them again: nothing lost.
- Payloads that crashed the bridge in a loop (seq ≥ 2^63 on SQLite, a taken_at whose UTC form is
  before year 1, a reading dated 9999) are refused, dead-lettered, and ingest goes on.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bridge_helpers import Device, InProcessBridge, config, reading, register, wait_until
from sqlalchemy import Engine, func, select

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.device_health import device_health
from cloud_bridge.residents import payer_history
from cloud_bridge.store.tables import readings, refusals
from contract.payloads import Reading
from edge.agent.core import Agent, ReadResult
from edge.config import EdgeConfig

pytestmark = pytest.mark.mosquitto


class CountingReader:
    """Stands in for camera + pipeline: each cycle reads the previous value + 1 (a distinct payload)."""

    model_id = "hardening-test"

    def __init__(self, cfg: EdgeConfig) -> None:
        self.device_id = cfg.device_id

    def read(self, state: dict[str, Any] | None) -> ReadResult:
        value = int(state["n"]) + 1 if state else 1
        r = Reading(device_id=self.device_id, seq=0, taken_at=datetime.now(UTC), value=f"{value:05d}.000",
                    status="ok", confidence=0.99, model=self.model_id)
        return ReadResult(r, {"n": value})

    def set_previous(self, state: dict[str, Any] | None, value: str, at: datetime) -> dict[str, Any]:
        return {"n": int(float(value))}

    def close(self) -> None:
        pass


def run_agent(state_dir: Path, port: int, cycles: int, start_at: int = 0) -> Agent:
    cfg = EdgeConfig(device_id="dev-a", state_dir=state_dir, interval_s=0.02, telemetry_interval_s=60,
                     ack_timeout_s=30, drain_timeout_s=15,
                     mqtt={"host": "127.0.0.1", "port": port, "reconnect_min_s": 1, "reconnect_max_s": 1})
    agent = Agent(cfg, CountingReader)
    if start_at:
        agent.outbox.set_reading_state({"n": start_at})
    t = threading.Thread(target=agent.run, args=(cycles,), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive()
    return agent


def stored_values(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(v for (v,) in conn.execute(select(readings.c.value).where(readings.c.device_id == "dev-a")))


def outbox_counts(state_dir: Path) -> dict[str, int]:
    import sqlite3
    db = sqlite3.connect(state_dir / "outbox.sqlite3")
    try:
        rows = db.execute("SELECT coalesce(ack, state), coalesce(ack_reason, ''), count(*) FROM readings "
                          "GROUP BY 1, 2").fetchall()
    finally:
        db.close()
    return {f"{a}{'/' + r if r else ''}": n for a, r, n in rows}


def test_a_lost_outbox_loses_no_reading(broker: MosquittoBroker, engine: Engine, db_url: str, tmp_path: Path) -> None:
    register(engine, ["dev-a"])
    state = tmp_path / "state"
    with InProcessBridge(engine, config(db_url, broker.port, tmp_path)):
        run_agent(state, broker.port, 20)
        assert wait_until(lambda: len(stored_values(engine)) == 20)
        shutil.rmtree(state)  # a new SD card: the outbox (and its seq) is gone
        run_agent(state, broker.port, 19, start_at=20)
        wait_until(lambda: len(stored_values(engine)) >= 39, timeout=10)
    lost = {f"{n:05d}.000" for n in range(21, 40)} - set(stored_values(engine))
    assert not lost, f"{len(lost)} of 19 new readings lost; outbox says {outbox_counts(state)}"
    assert stored_values(engine) == [f"{n:05d}.000" for n in range(1, 40)]
    assert outbox_counts(state) == {"stored": 19}
    with engine.connect() as conn:  # the fleet's view: one device, its newest reading is the newest stored
        health = device_health(conn, datetime.now(UTC), config(db_url, broker.port, tmp_path).fleet, ["dev-a"])
    assert [(h.readings, h.last_seq, h.last_value) for h in health] == [(39, 19, "00039.000")]


def test_an_outbox_restored_from_a_backup_loses_no_reading(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                           tmp_path: Path) -> None:
    register(engine, ["dev-a"])
    state, backup = tmp_path / "state", tmp_path / "backup"
    with InProcessBridge(engine, config(db_url, broker.port, tmp_path)):
        run_agent(state, broker.port, 5)
        assert wait_until(lambda: len(stored_values(engine)) == 5)
        shutil.copytree(state, backup)
        run_agent(state, broker.port, 3)  # seqs 6-8 (values 6-8)
        assert wait_until(lambda: len(stored_values(engine)) == 8)
        shutil.rmtree(state)
        shutil.copytree(backup, state)  # the backup still says "next seq 6"
        run_agent(state, broker.port, 4, start_at=8)  # seqs 6-9 again, values 9-12: not duplicates
        wait_until(lambda: len(stored_values(engine)) >= 12, timeout=15)
    assert stored_values(engine) == [f"{n:05d}.000" for n in range(1, 13)], outbox_counts(state)
    with engine.connect() as conn:
        reused = conn.execute(select(func.count()).select_from(refusals).where(refusals.c.reason == "seq_reused")
                              ).scalar_one()
    assert reused >= 1  # what happened is on record (with the payload)


def test_payloads_that_crashed_ingest_are_refused_and_ingest_goes_on(broker: MosquittoBroker, engine: Engine,
                                                                     db_url: str, tmp_path: Path) -> None:
    register(engine, ["dev-b"])
    good = reading("dev-b", 1)
    doc = json.loads(good.to_json_bytes())
    poison = [
        {**doc, "seq": 2**63},                              # OverflowError in the SQLite driver
        {**doc, "seq": 2**64 + 5},
        {**doc, "taken_at": "0001-01-01T00:00:00+14:00"},   # OverflowError inside parse_reading
        {**doc, "taken_at": "9999-12-31T00:00:00Z"},        # broke that payer's history page
        {**doc, "seq": True},                                 # was stored as seq 1
    ]
    dev = Device(broker.port)
    with InProcessBridge(engine, config(db_url, broker.port, tmp_path)) as bridge:
        for p in poison:
            dev.publish("meters/dev-b/reading", json.dumps(p).encode())
        dev.publish_reading(reading("dev-b", 2, "00013.000"))
        assert wait_until(lambda: len(dev.acks) >= len(poison) + 1, timeout=20), dev.acks
        assert bridge.alive and bridge.error is None
    assert dev.acks_by_state() == {"rejected": len(poison), "stored": 1}
    with engine.connect() as conn:
        assert conn.execute(select(readings.c.seq, readings.c.value)).all() == [(2, "00013.000")]
        reasons = [r for (r,) in conn.execute(select(refusals.c.reason).order_by(refusals.c.id))]
    assert reasons == ["bad_field", "bad_field", "bad_time", "bad_time", "bad_field"]
    with engine.connect() as conn:  # item 7: the payer's history (CLI and web page) still works
        history = payer_history(conn, "1000000000")
    assert [(r["seq"], r["value"]) for r in history["readings"]] == [(2, "00013.000")]
    assert wait_until(lambda: len(dev.on_topic("bridge/deadletter")) == len(poison))
    dev.close()
