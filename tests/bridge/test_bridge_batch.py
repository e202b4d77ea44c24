"""handle_batch without a broker: order of outcomes, duplicates within and across batches, reused seq."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge_helpers import reading, register
from sqlalchemy import Engine, func, select

from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle_batch
from cloud_bridge.store.tables import readings


def msg(device: str, seq: int, value: str = "00001.000") -> Message:
    return Message(f"meters/{device}/reading", reading(device, seq, value).to_json_bytes())


def test_outcomes_in_order_with_duplicates_and_reused_seq(engine: Engine) -> None:
    register(engine, ["b1", "b2"])
    register(engine, ["b3"], bind=False)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        first = handle_batch(conn, [msg("b1", 1), msg("b1", 1), msg("b2", 1), Message("meters/b1/reading", b"x"),
                                    msg("b3", 1), msg("b1", 2)], now)
    assert [(o.kind, o.reason) for o in first] == [
        ("stored", None), ("duplicate", None), ("stored", None), ("refused", "bad_json"),
        ("refused", "unbound_device"), ("stored", None)]
    assert first[1].reading_id == first[0].reading_id
    with engine.begin() as conn:
        second = handle_batch(conn, [msg("b1", 2), msg("b1", 1, "00009.000"), msg("b1", 3)], now)
    assert [(o.kind, o.reason) for o in second] == [("duplicate", None), ("refused", "seq_reused"),
                                                    ("stored", None)]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(readings)).scalar_one() == 4
        assert conn.execute(select(readings.c.value).where(readings.c.seq == 1, readings.c.device_id == "b1")
                            ).scalar_one() == "00001.000"  # the first copy stays
