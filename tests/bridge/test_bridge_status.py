"""`meter-bridge status` reports what the store knows, for any number of workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bridge_helpers import Device, InProcessBridge, config, reading, register, wait_until
from click.testing import CliRunner
from sqlalchemy import Engine

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.cli import main


@pytest.mark.mosquitto
def test_status_counts_received_stored_duplicate_refused_and_lag(broker: MosquittoBroker, engine: Engine,
                                                                 db_url: str, tmp_path: Path) -> None:
    register(engine, ["st-1", "st-2"])
    cfg = config(db_url, broker.port, tmp_path)
    dev = Device(broker.port)
    with InProcessBridge(engine, cfg):
        for seq in range(6):
            dev.publish_reading(reading("st-1", seq, taken_at="2026-11-20T10:00:00Z"))
        dev.publish_reading(reading("st-1", 0))  # duplicate
        dev.publish_reading(reading("st-2", 0, status="suspect"))
        dev.publish("meters/st-2/reading", b"nope")
        dev.publish_reading(reading("ghost", 0))
        assert wait_until(lambda: len(dev.acks) == 10)
    env = {"BRIDGE_DATABASE_URL": db_url}
    r = CliRunner().invoke(main, ["status", "--json"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert (s["received"], s["stored"], s["duplicate"], s["refused"]) == (10, 7, 1, 2)
    assert s["refused_by_reason"] == {"bad_json": 1, "unknown_device": 1}
    assert s["readings_by_status"] == {"ok": 6, "suspect": 1}
    assert s["lag"]["since_last_stored_s"] < 60 and s["lag"]["delay_p50_s"] > 0 and s["lag"]["sample"] == 7
    assert s["fleet"]["devices"] == 2
    text = CliRunner().invoke(main, ["status"], env=env, catch_exceptions=False).output
    assert "received" in text and "unknown_device" in text and "duplicate" in text
    dev.close()
