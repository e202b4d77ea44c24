"""A fuzzed stream is refused with reasons and never stops a worker."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bridge_helpers import Device, InProcessBridge, config, reading, register, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle
from cloud_bridge.store.tables import readings, refusals

VALID = json.loads(reading("fz", 1).to_json_bytes())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
mutated = st.builds(lambda key, value: {**VALID, key: value},
                    st.sampled_from([*VALID, "extra", "\x00", "\ud800"]), json_values)
dropped = st.builds(lambda key: {k: v for k, v in VALID.items() if k != key}, st.sampled_from(list(VALID)))


def _encode(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8", "surrogatepass")


payloads = (st.binary(max_size=300) | mutated.map(_encode) | dropped.map(_encode)
            | json_values.map(_encode) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
topics_ = st.sampled_from(["meters/fz/reading", "meters/other/reading", "meters/bad id!/reading",
                           "meters/" + "x" * 65 + "/reading", "meters/fz/status"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, topic=topics_)
def test_handle_never_raises_and_refuses_with_a_reason(engine: Engine, payload: bytes, topic: str) -> None:
    if not getattr(engine, "_fz_registered", False):
        register(engine, ["fz"])
        engine._fz_registered = True  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    with engine.connect() as conn, conn.begin() as tx:
        outcome = handle(conn, Message(topic, payload), now)
        if outcome.kind == "refused":
            assert outcome.reason
            row = conn.execute(select(refusals.c.reason, refusals.c.size).order_by(refusals.c.id.desc())).first()
            assert row == (outcome.reason, len(payload))
        else:
            assert outcome.kind in ("stored", "duplicate", "status", "ignored")
        tx.rollback()


@pytest.mark.mosquitto
def test_fuzzed_stream_over_mqtt_worker_stays_up(broker: MosquittoBroker, engine: Engine, db_url: str,
                                                 tmp_path: Path) -> None:
    register(engine, ["fz"])
    cfg = config(db_url, broker.port, tmp_path)
    rng = random.Random(7)
    bad: list[tuple[str, bytes]] = []
    for _ in range(150):
        bad.append(("meters/fz/reading", rng.randbytes(rng.randint(0, 400))))
    bad += [("meters/fz/reading", b"{" * 60_000),  # oversized (and a JSON bomb)
            ("meters/fz/reading", b"[" * 5000 + b"]" * 5000),  # deep nesting under the size limit
            ("meters/bad id!/reading", reading("fz", 2).to_json_bytes()),  # wrong topic
            ("meters/" + "y" * 65 + "/reading", reading("fz", 3).to_json_bytes()),
            ("meters/fz/reading", reading("zz", 4).to_json_bytes()),  # topic/payload mismatch
            ("meters/fz/reading", json.dumps({**VALID, "value": "12,5"}).encode()),
            ("meters/fz/reading", json.dumps({**VALID, "v": 99}).encode()),
            ("meters/fz/reading", "\ufeff{}".encode("utf-16"))]
    dev = Device(broker.port)
    with InProcessBridge(engine, cfg) as bridge:
        for topic, payload in bad:
            dev.publish(topic, payload)
        dev.publish_reading(reading("fz", 99, "00042.000"))
        assert wait_until(lambda: len(dev.on_topic("bridge/deadletter")) >= len(bad), timeout=30)
        assert wait_until(lambda: any(a["seq"] == 99 and a["state"] == "stored" for a in dev.acks))
        assert bridge.alive and bridge.error is None
    with engine.connect() as conn:
        reasons = dict(conn.execute(select(refusals.c.reason, func.count()).group_by(refusals.c.reason)).all())
        assert conn.execute(select(readings.c.seq, readings.c.value)).all() == [(99, "00042.000")]
    assert sum(reasons.values()) == len(bad)
    assert {"oversized", "bad_topic", "device_id_mismatch", "bad_value", "unknown_version", "bad_json"} <= set(reasons)
    dev.close()
