"""The store: migrations equal the tables, UTC round trips, the rules the schema enforces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from bridge_helpers import register
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from cloud_bridge.store.engine import StoreError, check_schema, head_revision, make_engine, upgrade
from cloud_bridge.store.tables import bindings, corrections, metadata, readings


def test_migrations_create_exactly_the_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_an_empty_database_says_what_to_do(db_url: str) -> None:
    e = make_engine(db_url)
    with pytest.raises(StoreError, match="run `meter-bridge db upgrade`"):
        check_schema(e)
    before, after = upgrade(e)
    assert before is None and after == head_revision()
    assert upgrade(e) == (after, after)
    check_schema(e)
    e.dispose()


def test_the_epoch_migration_keeps_v1_readings_under_epoch_0(db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from cloud_bridge.store.engine import _alembic_config

    before = ScriptDirectory.from_config(_alembic_config(None)).get_revision("0006_readings_epoch").down_revision
    e = make_engine(db_url)
    upgrade(e, str(before))  # the schema just before the epoch, with a v1 reading in it
    register(e, ["m1"])
    with e.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO readings (device_id, seq, taken_at, stored_at, status, value, unit, confidence, model, raw) "
            "VALUES ('m1', 1, '2026-11-24 10:00:00', '2026-11-24 10:00:00', 'ok', '00001.000', 'm3', 0.9, '', '{}')")
    upgrade(e)
    with e.begin() as conn:
        assert conn.execute(select(readings.c.epoch, readings.c.seq)).all() == [(0, 1)]
        conn.execute(readings.insert().values(device_id="m1", epoch=7, seq=1, taken_at=datetime.now(UTC),
                                              stored_at=datetime.now(UTC), status="ok", value="2", confidence=1,
                                              raw="{}"))  # seq 1 again, new epoch: allowed
    with pytest.raises(IntegrityError), e.begin() as conn:
        conn.execute(readings.insert().values(device_id="m1", epoch=7, seq=1, taken_at=datetime.now(UTC),
                                              stored_at=datetime.now(UTC), status="ok", value="3", confidence=1,
                                              raw="{}"))
    e.dispose()


def test_times_come_back_as_utc_and_values_exact(engine: Engine) -> None:
    register(engine, ["t1"])
    taken = datetime(2026, 11, 24, 20, 0, 0, 123456, tzinfo=UTC).astimezone()  # any zone in, UTC out
    with engine.begin() as conn:
        conn.execute(readings.insert().values(device_id="t1", seq=1, taken_at=taken, stored_at=taken,
                                              status="ok", value="00123.450", confidence=0.5, raw="{}"))
    with engine.connect() as conn:
        row = conn.execute(select(readings.c.taken_at, readings.c.value)).one()
    assert row.taken_at == taken and row.taken_at.utcoffset() == timedelta(0)
    assert row.value == "00123.450"


def test_schema_rules(engine: Engine) -> None:
    register(engine, ["r1"])
    now = datetime.now(UTC)
    with engine.begin() as conn:
        b = conn.execute(select(bindings)).one()
    with pytest.raises(IntegrityError), engine.begin() as conn:  # a second open binding for the device
        conn.execute(bindings.insert().values(device_id="r1", meter_serial=b.meter_serial,
                                              payer_code=b.payer_code, valid_from=now))
    row = {"device_id": "r1", "seq": 5, "taken_at": now, "stored_at": now, "status": "ok", "value": "1",
           "confidence": 1.0, "raw": "{}"}
    with engine.begin() as conn:
        rid = conn.execute(readings.insert().values(**row).returning(readings.c.id)).scalar_one()
    with pytest.raises(IntegrityError), engine.begin() as conn:  # (device_id, seq) is unique
        conn.execute(readings.insert().values(**row))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # a correction must point at a reading
        conn.execute(corrections.insert().values(reading_id=rid + 1000, value="2", by="resident", created_at=now))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(corrections.insert().values(reading_id=rid, value="2", by="someone", created_at=now))


def test_a_reader_does_not_wait_for_a_writer(engine: Engine) -> None:
    """Dashboards and `status` read while ingest holds its write transaction (SQLite: deferred BEGIN)."""
    import time

    from cloud_bridge.store.engine import read_only
    from cloud_bridge.store.tables import devices

    with engine.begin() as writer:
        writer.execute(devices.insert().values(device_id="w", created_at=datetime.now(UTC)))
        t0 = time.monotonic()
        with read_only(engine) as reader:
            n = reader.execute(select(devices.c.device_id)).all()
        assert time.monotonic() - t0 < 2.0
        assert n == []  # not committed yet
