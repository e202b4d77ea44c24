"""A month of readings for 20 meters with a controlled clock: each meter submitted once with its latest
ok value, points once per payer, nothing outside the window (SQLite and PostgreSQL, real sandbox)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from billing_helpers import Fleet, make_config, run_pass

from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.submission.periods import Period, WindowRule, parse_instant

MSK = WindowRule().tz
START = datetime(2026, 9, 28, tzinfo=UTC)


def _month_of_readings(fleet: Fleet, n_meters: int) -> list[dict[str, Any]]:
    """Every 8 h from 28 Sep to 25 Nov; meters 0, 5, 10, 15 turn suspect in their last readings."""
    made = []
    for i in range(n_meters):
        device, payer = f"dev-{i:02d}", f"{1000000000 + i // 2:010d}"
        fleet.add(device, f"M-{i:02d}", payer, START - timedelta(days=1), kind="cold" if i % 2 == 0 else "hot")
        t, value = START + timedelta(minutes=7 * i), Decimal(100 * i)
        items = []
        while t < datetime(2026, 11, 25, tzinfo=UTC):
            value += Decimal("0.125")
            suspect = i % 5 == 0 and t.day in (19, 20) and t.month == 10
            status = "suspect" if suspect else "ok"
            text = f"{value:09.3f}"
            items.append((t, text, status, "rate above max" if suspect else None))
            made.append({"device": device, "payer": payer, "meter": f"M-{i:02d}", "taken_at": t, "value": text,
                         "status": status})
            t += timedelta(hours=8)
        fleet.readings(device, items)
    return made


def _expected(made: list[dict[str, Any]], period: str, at: datetime) -> dict[str, dict[str, Any]]:
    p = Period.parse(period)
    out: dict[str, dict[str, Any]] = {}
    for r in made:
        if r["status"] == "ok" and Period.of(r["taken_at"], MSK) == p and r["taken_at"] <= at:
            best = out.get(r["meter"])
            if best is None or r["taken_at"] > best["taken_at"]:
                out[r["meter"]] = r
    return out


def test_month_of_readings_for_20_meters(db_url: str, engine_for: Any, sandbox: SandboxServer) -> None:
    engine = engine_for(db_url)
    config = make_config(db_url, sandbox.url)
    made = _month_of_readings(Fleet(engine), 20)
    api = httpx.Client(base_url=sandbox.url)

    before = run_pass(engine, config, parse_instant("2026-10-10T12:00:00Z"))
    assert before.period is None and before.meters == []
    assert api.get("/v1/readings").json()["readings"] == []

    at = parse_instant("2026-10-20T09:00:00Z")
    report = run_pass(engine, config, at)
    assert report.period == "2026-10" and report.window_open
    assert report.counts() == {"accepted": 20}
    expected = _expected(made, "2026-10", at)
    got = api.get("/v1/readings").json()["readings"]
    assert len(got) == 20
    by_meter = {g["meter_serial"]: g for g in got}
    for meter, exp in expected.items():
        assert by_meter[meter]["value"] == exp["value"], meter
        assert by_meter[meter]["payer_code"] == exp["payer"] and by_meter[meter]["period"] == "2026-10"
        taken = parse_instant(by_meter[meter]["taken_at"])
        assert Period.of(taken, MSK) == Period(2026, 10) and taken <= at  # nothing outside the month or after T
    # The suspect meters got their latest *ok* value, older than the suspect ones.
    assert parse_instant(by_meter["M-05"]["taken_at"]) < datetime(2026, 10, 18, 21, tzinfo=UTC)
    credits = api.get("/v1/credits").json()
    assert len(credits["credits"]) == 10 and credits["balance"] == 100
    assert {c["period"] for c in credits["credits"]} == {"2026-10"}

    # Later passes in the same window: newer readings are stored but nothing is sent again.
    for later in ("2026-10-25T09:00:00Z", "2026-11-02T09:00:00Z"):
        again = run_pass(engine, config, parse_instant(later))
        assert again.period == "2026-10" and again.counts() == {"accepted": 20}
        assert {m.action for m in again.meters} == {"unchanged"}
    closed = run_pass(engine, config, parse_instant("2026-11-10T09:00:00Z"))
    assert closed.period is None and closed.meters == []
    assert len(api.get("/v1/readings").json()["readings"]) == 20
    assert len(api.get("/v1/credits").json()["credits"]) == 10

    # The next month: one more submission per meter, points once more per payer.
    nov = run_pass(engine, config, parse_instant("2026-11-16T00:00:00Z"))
    assert nov.period == "2026-11" and nov.counts() == {"accepted": 20}
    assert len(api.get("/v1/readings", params={"period": "x"}).json()["readings"]) == 40
    payer = api.get("/v1/credits", params={"payer": "1000000003"}).json()
    assert payer["balance"] == 20 and [c["period"] for c in payer["credits"]] == ["2026-10", "2026-11"]
    keys = [r["idempotency_key"] for r in sandbox.store.readings()]
    assert len(keys) == len(set(keys)) == 40 and "1000000003:M-06:2026-10" in keys
    api.close()


def test_month_boundary_in_moscow_time(sqlite_url: str, engine_for: Any, sandbox: SandboxServer) -> None:
    engine = engine_for(sqlite_url)
    fleet = Fleet(engine)
    fleet.add("dev-a", "M-A", "0123456789", START)
    fleet.reading("dev-a", parse_instant("2026-10-30T20:00:00Z"), "00099.000")  # a reading before it to agree with
    fleet.reading("dev-a", parse_instant("2026-10-31T20:00:00Z"), "00100.000")  # 23:00 on 31 Oct in Moscow
    fleet.reading("dev-a", parse_instant("2026-10-31T22:00:00Z"), "00101.000")  # 01:00 on 1 Nov in Moscow
    fleet.reading("dev-a", parse_instant("2026-10-31T23:00:00Z"), "00101.500")  # November readings settle October's
    config = make_config(sqlite_url, sandbox.url)
    report = run_pass(engine, config, parse_instant("2026-11-02T00:00:00Z"), period="2026-10")
    assert [(m.value, m.state) for m in report.meters] == [("00100.000", "accepted")]


def test_dry_run_changes_nothing(sqlite_url: str, engine_for: Any, sandbox: SandboxServer) -> None:
    engine = engine_for(sqlite_url)
    fleet = Fleet(engine)
    fleet.add("dev-a", "M-A", "0123456789", START)
    fleet.add("dev-b", "M-B", "0123456780", START)
    fleet.settled("dev-a", parse_instant("2026-10-16T10:00:00Z"), "00100.000")
    fleet.reading("dev-b", parse_instant("2026-10-16T10:00:00Z"), None, "error", "no alignment")
    config = make_config(sqlite_url, sandbox.url)
    report = run_pass(engine, config, parse_instant("2026-10-20T00:00:00Z"), dry_run=True)
    assert sorted((m.meter_serial, m.state) for m in report.meters) == [("M-A", "would_send"),
                                                                          ("M-B", "needs_attention")]
    assert sandbox.store.readings() == [] and sandbox.store.requests() == []
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM submissions").scalar() == 0
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM settlements").scalar() == 0


def test_backlog_taken_before_its_binding_opened_is_submitted(db_url: str, engine_for: Any,
                                                             sandbox: SandboxServer) -> None:
    """A device read the meter for days while unbound (or offline), then was bound; the bridge attributes
    the backlog to the binding in force when it stored it, so a pass as of the readings' time submits it."""
    engine = engine_for(db_url)
    config = make_config(db_url, sandbox.url)
    fleet = Fleet(engine)
    fleet.add("late-dev", "M-LATE", "2000000001", datetime(2026, 10, 25, tzinfo=UTC))
    fleet.readings("late-dev", [(datetime(2026, 10, 20, h, tzinfo=UTC), f"00042.{h:03d}", "ok", None)
                                for h in range(1, 6)])
    report = run_pass(engine, config, parse_instant("2026-10-20T09:00:00Z"))
    assert report.counts() == {"accepted": 1}
    got = httpx.Client(base_url=sandbox.url).get("/v1/readings").json()["readings"]
    # The latest *settled* one: 00042.004 and .005 wait for later readings to agree with them.
    assert [(g["meter_serial"], g["value"]) for g in got] == [("M-LATE", "00042.003")]
