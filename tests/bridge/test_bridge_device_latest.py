"""device_latest (each device's newest reading, kept as readings are stored) always equals a full
recomputation from the readings: after a mix of out-of-order readings, ties, duplicates, refused readings
(seq reused, future, unknown and unbound devices), new epochs and rebinding; with several workers storing
the same devices at once; and as the migration backfills it from existing readings. On SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from bridge_helpers import register
from sqlalchemy import Engine, select

from cloud_bridge import registry
from cloud_bridge.config import BridgeConfig
from cloud_bridge.device_health import device_rows
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle_batch
from cloud_bridge.store.device_latest import COLUMNS, latest_from_readings, rebuild
from cloud_bridge.store.engine import _alembic_config, make_engine
from cloud_bridge.store.tables import device_latest, readings
from contract.payloads import Reading

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
DEVICES = ["d-a", "d-b", "d-c", "d-d"]


def _msg(device_id: str, seq: int, at: datetime, status: str, *, epoch: int | None = None,
         value: str = "00010.000") -> Message:
    r = Reading(device_id=device_id, seq=seq, epoch=epoch, taken_at=at, value=None if status == "error" else value,
                status=status, reason=None if status == "ok" else "low_confidence",  # type: ignore[arg-type]
                confidence=0.9, model=f"m-{seq}")
    return Message(f"meters/{device_id}/reading", r.to_json_bytes())


def _stored(conn: Any) -> dict[str, dict[str, Any]]:
    return {r["device_id"]: dict(r) for r in conn.execute(select(device_latest)).mappings()}


def _recomputed(conn: Any) -> dict[str, dict[str, Any]]:
    src = latest_from_readings()
    return {r["device_id"]: dict(r) for r in conn.execute(select(*(src.c[c] for c in COLUMNS))).mappings()}


def _assert_same(conn: Any) -> None:
    stored, recomputed = _stored(conn), _recomputed(conn)
    assert stored == recomputed
    cfg = BridgeConfig()
    fast = conn.execute(device_rows(NOW, cfg.fleet)).mappings().all()
    scanned = conn.execute(device_rows(NOW, cfg.fleet, latest=latest_from_readings())).mappings().all()
    assert [dict(r) for r in fast] == [dict(r) for r in scanned]


def test_summary_equals_recomputation_after_a_mix(engine: Engine) -> None:
    register(engine, DEVICES)
    register(engine, ["d-unbound"], bind=False)
    rnd = random.Random(19)
    seqs = {d: 0 for d in DEVICES} | {"d-a": 4, "d-b": 2}  # after the readings stored first
    sent: list[Message] = []
    hour = timedelta(hours=1)
    with engine.begin() as conn:
        # d-a: an ok reading, then readings taken after it that are not ok, then an ok one taken in between
        # arrives late (out of order: the not-ok run after it is counted from the readings).
        handle_batch(conn, [_msg("d-a", 1, NOW - 10 * hour, "ok"), _msg("d-a", 2, NOW - 5 * hour, "suspect"),
                            _msg("d-a", 3, NOW - 3 * hour, "error")], NOW)
        handle_batch(conn, [_msg("d-a", 4, NOW - 4 * hour, "ok")], NOW)
        # d-b: only not-ok readings, two taken at the same instant (the later stored is the newer).
        handle_batch(conn, [_msg("d-b", 1, NOW - 2 * hour, "suspect"), _msg("d-b", 2, NOW - 2 * hour, "error")], NOW)
        _assert_same(conn)
        assert _stored(conn)["d-a"]["not_ok_n"] == 1 and _stored(conn)["d-b"]["last_seq"] == 2
    for round_ in range(12):
        batch: list[Message] = []
        for _ in range(rnd.randint(1, 25)):
            d = rnd.choice(DEVICES)
            kind = rnd.random()
            if kind < 0.15 and sent:  # a duplicate (same bytes again)
                batch.append(rnd.choice(sent))
                continue
            if kind < 0.2 and sent:  # a reused seq with other content: refused
                old = rnd.choice(sent)
                r = Reading.model_validate_json(old.payload)
                batch.append(_msg(r.device_id, r.seq, r.taken_at, "ok", epoch=r.epoch, value="00099.999"))
                continue
            if kind < 0.25:  # from the future, an unknown and an unbound device: refused
                batch.append(_msg(d, 10_000 + round_, NOW + timedelta(days=1), "ok"))
                batch.append(_msg("nobody", 1, NOW, "ok"))
                batch.append(_msg("d-unbound", round_ + 1, NOW, "ok"))
                continue
            seqs[d] += 1
            at = NOW - timedelta(minutes=rnd.choice([0, 30, 60, 90, 600, 6000]) + rnd.randint(0, 3) * 15)
            status = rnd.choices(["ok", "suspect", "error"], [0.6, 0.25, 0.15])[0]
            epoch = 2 if seqs[d] > 20 else None  # a new outbox starts at seq 1 again under epoch 2
            m = _msg(d, seqs[d] - 20 if epoch else seqs[d], at, status, epoch=epoch)
            batch.append(m)
            sent.append(m)
        with engine.begin() as conn:
            outcomes = handle_batch(conn, batch, NOW)
            assert {o.kind for o in outcomes} <= {"stored", "duplicate", "refused"}
            if round_ == 5:  # rebinding changes whose reading it is, not which is the device's newest
                registry.rebind(conn, "d-c", meter_serial="SN-new", payer_code="1000000009", kind="cold",
                                address="New street 9", now=NOW - hour)
            _assert_same(conn)
    with engine.connect() as conn:
        stored = _stored(conn)
        n = conn.execute(select(readings.c.device_id, readings.c.id)).all()
    assert sum(r["n"] for r in stored.values()) == len(n) > 100
    assert set(stored) == set(DEVICES)
    assert any(r["not_ok_n"] > 0 for r in stored.values()) and any(r["ok_id"] is not None for r in stored.values())


def test_workers_storing_the_same_devices_at_once(engine: Engine, db_url: str) -> None:
    """Four connections store batches for the same three devices at the same time, each reading's
    taken_at out of order: the rows are locked, so none of their updates is lost."""
    register(engine, ["w-1", "w-2", "w-3"])
    errors: list[BaseException] = []

    def work(k: int) -> None:
        rnd = random.Random(k)
        e = make_engine(db_url)
        try:
            for b in range(15):
                batch = [_msg(f"w-{rnd.randint(1, 3)}", 1000 * k + 10 * b + i,
                              NOW - timedelta(minutes=rnd.randint(0, 300)),
                              rnd.choices(["ok", "suspect", "error"], [0.5, 0.3, 0.2])[0]) for i in range(8)]
                with e.begin() as conn:
                    handle_batch(conn, batch, NOW)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
        finally:
            e.dispose()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with engine.connect() as conn:
        _assert_same(conn)
        assert sum(r["n"] for r in _stored(conn).values()) == 4 * 15 * 8


def test_migration_backfills_and_rebuild_repairs(engine: Engine) -> None:
    register(engine, DEVICES)
    hour = timedelta(hours=1)
    with engine.begin() as conn:
        handle_batch(conn, [_msg("d-a", 1, NOW - 3 * hour, "ok"), _msg("d-a", 2, NOW - hour, "suspect"),
                            _msg("d-b", 1, NOW - hour, "error"), _msg("d-b", 2, NOW - 2 * hour, "ok"),
                            _msg("d-c", 1, NOW - hour, "ok"), _msg("d-c", 2, NOW - hour, "ok")], NOW)
        before = _stored(conn)
    assert set(before) == {"d-a", "d-b", "d-c"}
    cfg = _alembic_config(engine)
    command.downgrade(cfg, "0007_photo_readings")
    with engine.begin() as conn:  # readings stored by a worker that knows nothing of device_latest
        conn.execute(readings.insert().values(device_id="d-d", epoch=0, seq=1, taken_at=NOW - hour, stored_at=NOW,
                                              status="suspect", value=None, confidence=0.5, raw="{}"))
    command.upgrade(cfg, "head")
    with engine.begin() as conn:
        after = _stored(conn)
        _assert_same(conn)
        assert {k: v for k, v in after.items() if k != "d-d"} == before
        assert after["d-d"]["n"] == 1 and after["d-d"]["not_ok_n"] == 1
        # Another reading written behind the store's back; `rebuild` (meter-bridge db rebuild-latest) repairs it.
        conn.execute(readings.insert().values(device_id="d-a", epoch=0, seq=9, taken_at=NOW, stored_at=NOW,
                                              status="ok", value="00011.000", confidence=0.9, raw="{}"))
        assert _stored(conn) != _recomputed(conn)
        assert rebuild(conn, DEVICES) == 4
        _assert_same(conn)
        assert _stored(conn)["d-a"]["not_ok_n"] == 0 and _stored(conn)["d-a"]["last_seq"] == 9


def test_rebuild_latest_command(engine: Engine, db_url: str, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cloud_bridge.cli import main

    register(engine, DEVICES)
    with engine.begin() as conn:
        handle_batch(conn, [_msg(d, 1, NOW - timedelta(hours=2), "ok") for d in DEVICES], NOW)
        for d in DEVICES[:3]:  # written behind the store's back
            conn.execute(readings.insert().values(device_id=d, epoch=0, seq=2, taken_at=NOW, stored_at=NOW,
                                                  status="error", value=None, confidence=0.1, raw="{}"))
        assert _stored(conn) != _recomputed(conn)
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'database_url = "{db_url}"\n')
    out = CliRunner().invoke(main, ["--config", str(cfg), "db", "rebuild-latest", "--chunk", "3"])
    assert out.exit_code == 0, out.output
    assert "4 devices, 4 with readings" in out.output
    with engine.connect() as conn:
        _assert_same(conn)
        assert [_stored(conn)[d]["not_ok_n"] for d in DEVICES] == [1, 1, 1, 0]
