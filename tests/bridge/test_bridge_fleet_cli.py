"""Operators' command line: no silent empty database, honest `status` counters, `devices list` health
columns from what the devices publish on a real Mosquitto."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bridge_helpers import Device, InProcessBridge, config, reading, register, wait_until
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.cli import main
from cloud_bridge.store.tables import device_telemetry, submissions
from contract.payloads import Telemetry


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


@pytest.mark.parametrize("args", [("devices", "list"), ("status",), ("history", "--payer", "0123456789"),
                                  ("submit", "--period", "2026-11", "--dry-run"), ("run",), ("db", "current")])
def test_a_missing_database_is_refused_not_created(tmp_path: Path, args: tuple[str, ...]) -> None:
    db = tmp_path / "typo" / "brdige.db"
    env = {"BRIDGE_DATABASE_URL": f"sqlite:///{db}"}
    r = invoke(env, *args)
    assert r.exit_code == 1, r.output
    assert "meter-bridge db upgrade" in r.output and str(db) in r.output
    assert not db.exists() and not db.parent.exists()
    # `db upgrade` is the one command that creates it; then the same command works.
    assert invoke(env, "db", "upgrade").exit_code == 0 and db.is_file()
    if args[0] in ("devices", "status", "db"):
        assert invoke(env, *args).exit_code == 0


def test_an_empty_database_is_refused(db_url: str) -> None:
    """An empty SQLite file or an empty PostgreSQL schema: no bridge schema, so no empty fleet either."""
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).touch()
    r = invoke({"BRIDGE_DATABASE_URL": db_url}, "status", "--json")
    assert r.exit_code == 1 and "is empty" in r.output and "meter-bridge db upgrade" in r.output, r.output


def _submission(conn, key: str, payer: str, meter: str, state: str, now: datetime) -> None:  # type: ignore[no-untyped-def]
    conn.execute(submissions.insert().values(idempotency_key=key, payer_code=payer, meter_serial=meter,
                                             period="2026-11", value="00012.345", state=state, created_at=now,
                                             updated_at=now))


@pytest.mark.mosquitto
def test_status_counts_error_readings_apart_and_a_correction_is_not_a_second_submission(
        broker: MosquittoBroker, engine: Engine, db_url: str, tmp_path: Path) -> None:
    register(engine, ["e-1", "s-1", "ok-1"])
    cfg = config(db_url, broker.port, tmp_path)
    now = datetime.now(UTC)
    taken = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    dev = Device(broker.port)
    with InProcessBridge(engine, cfg):
        dev.publish_reading(reading("e-1", 1, status="error", reason="align_failed", taken_at=taken))
        dev.publish_reading(reading("e-1", 2, status="error", reason="align_failed", taken_at=taken))
        dev.publish_reading(reading("s-1", 1, status="suspect", taken_at=taken))
        dev.publish_reading(reading("ok-1", 1, taken_at=taken))
        assert wait_until(lambda: len(dev.acks) == 4)
    dev.close()
    with engine.begin() as conn:
        # One meter accepted, then the resident's correction accepted too (a second row, key …:c<id>);
        # another meter accepted; a third waits for a person.
        _submission(conn, "1000000000:SN-e-1:2026-11", "1000000000", "SN-e-1", "accepted", now)
        _submission(conn, "1000000000:SN-e-1:2026-11:c7", "1000000000", "SN-e-1", "accepted", now)
        _submission(conn, "1000000001:SN-s-1:2026-11", "1000000001", "SN-s-1", "accepted", now)
        _submission(conn, "1000000002:SN-ok-1:2026-11", "1000000002", "SN-ok-1", "needs_attention", now)
        _submission(conn, "1000000002:SN-ok-1:2026-11:c8", "1000000002", "SN-ok-1", "needs_attention", now)
    env = {"BRIDGE_DATABASE_URL": db_url}
    from cloud_bridge.fleet import fleet_counts

    with engine.connect() as conn:
        period = fleet_counts(conn, now, cfg.fleet, cfg.window).period
        conn.execute(submissions.update().values(period=period))
        conn.commit()
    r = invoke(env, "status", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["readings_by_status"] == {"error": 2, "ok": 1, "suspect": 1}
    f = s["fleet"]
    assert (f["suspect_last_day"], f["errors_last_day"]) == (1, 1)
    assert (f["submitted_this_period"], f["corrections_this_period"], f["needs_attention"]) == (2, 1, 1)
    text = invoke(env, "status").output
    assert "devices with error readings, last day" in text and "corrections accepted" in text


@pytest.mark.mosquitto
def test_devices_list_shows_health_from_mqtt(broker: MosquittoBroker, engine: Engine, db_url: str,
                                             tmp_path: Path) -> None:
    register(engine, ["kit-1", "bath-2", "new-3"])
    register(engine, ["loose-4"], bind=False)
    cfg = config(db_url, broker.port, tmp_path)
    now = datetime.now(UTC)
    fresh = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (now - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    dev = Device(broker.port)
    tel = Telemetry(uptime_s=3600, outbox_depth=3, last_error="camera: timeout", cpu_temp_c=51.5,
                    free_disk_bytes=2_000_000_000, model="digits-int8-v3", version="0.4.1", at=now)
    dev.publish("meters/kit-1/status", b"online", retain=True)
    dev.publish("meters/kit-1/telemetry", tel.to_json_bytes(), qos=0, retain=True)
    dev.publish("meters/bath-2/status", b"offline", retain=True)
    dev.publish("meters/bath-2/telemetry", b'{"uptime_s": "not a number"}', qos=0, retain=True)  # ignored
    dev.publish("meters/ghost/telemetry", tel.to_json_bytes(), qos=0, retain=True)  # unknown device: ignored
    with InProcessBridge(engine, cfg):
        dev.publish_reading(reading("kit-1", 1, "00100.000", taken_at=fresh))
        dev.publish_reading(reading("kit-1", 2, status="suspect", reason="decrease", taken_at=fresh))
        dev.publish_reading(reading("kit-1", 3, status="error", reason="align_failed", taken_at=fresh))
        dev.publish_reading(reading("bath-2", 1, "00007.250", taken_at=old))
        assert wait_until(lambda: len(dev.acks) == 4)
        assert wait_until(lambda: _count(engine) == 1)
        # A newer telemetry replaces the row; an older one arriving late does not.
        newer = tel.model_copy(update={"outbox_depth": 0, "at": now + timedelta(seconds=10)})
        dev.publish("meters/kit-1/telemetry", newer.to_json_bytes(), qos=0, retain=True)
        assert wait_until(lambda: _depth(engine) == 0)
        dev.publish("meters/kit-1/telemetry", tel.to_json_bytes(), qos=0)
        dev.publish_reading(reading("kit-1", 4, status="error", reason="align_failed", taken_at=fresh))
        assert wait_until(lambda: len(dev.acks) == 5)
    dev.close()
    assert _depth(engine) == 0
    env = {"BRIDGE_DATABASE_URL": db_url}
    r = invoke(env, "devices", "list", "--json")
    assert r.exit_code == 0, r.output
    by_id = {d["device_id"]: d for d in json.loads(r.output)["devices"]}
    kit = by_id["kit-1"]
    assert kit["online"] is True and kit["stale"] is False
    assert kit["last_reading"]["seq"] == 4 and kit["last_reading"]["status"] == "error"
    assert kit["last_reading"]["reason"] == "align_failed" and kit["not_ok_in_row"] == 3
    assert kit["telemetry"]["outbox_depth"] == 0 and kit["telemetry"]["last_error"] == "camera: timeout"
    assert kit["telemetry"]["cpu_temp_c"] == 51.5 and kit["model"] == "digits-int8-v3" and kit["version"] == "0.4.1"
    assert kit["binding"]["meter_serial"] == "SN-kit-1" and kit["binding"]["payer_code"] == "******0000"
    bath = by_id["bath-2"]
    assert bath["online"] is False and bath["stale"] is True and bath["telemetry"] is None
    assert bath["last_reading"]["value"] == "00007.250" and bath["not_ok_in_row"] == 0
    assert bath["model"] == "test-model"  # from its readings when it sent no telemetry
    assert by_id["new-3"]["online"] is None and by_id["new-3"]["last_reading"] is None
    assert by_id["new-3"]["stale"] is False  # added just now: not stale before it had time to read
    assert by_id["loose-4"]["binding"] is None
    table = invoke(env, "devices", "list").output
    for text in ("kit-1", "online", "offline", "align_failed", "stale", "camera: timeout", "0.4.1", "00007.250"):
        assert text in table, text
    assert "1000000000" not in table


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(device_telemetry)).scalar_one())


def _depth(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(device_telemetry.c.outbox_depth)).scalar()
