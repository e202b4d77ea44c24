"""Billing bills only what later readings corroborate (SQLite and PostgreSQL, the real sandbox over HTTP):
an absurd `ok` value is never billed and the next month bills normally, a lone misread is not billed
(its settled neighbour is), a meter with nothing settled waits with the reason, and a correction goes
through the same checks (refused with the plausible range, or repairing a month that nothing settled)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from billing_helpers import Fleet, correct, make_config, run_pass
from click.testing import CliRunner

from cloud_bridge.cli import main
from cloud_bridge.fleet import device_state
from cloud_bridge.residents import payer_history
from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.store.tables import settlements
from cloud_bridge.submission.periods import parse_instant

PAYER = "0000000042"
T0 = datetime(2026, 8, 1, tzinfo=UTC)
EVERY = timedelta(hours=6)
RATE = Decimal("0.025")  # m3 per reading interval: a household's ordinary use


def truth(t: datetime) -> Decimal:
    """What the virtual meter shows at `t` (the test's ground truth)."""
    return Decimal("123.693") + RATE * int((t - T0) / EVERY)


def fmt(v: Decimal) -> str:
    return f"{v:09.3f}"


def _meter(fleet: Fleet, until: datetime, misreads: dict[datetime, str | None] | None = None,
           device: str = "dev-1", meter: str = "M-1") -> dict[int, datetime]:
    """Readings every 6 h from T0 to `until`: the truth, except at the times in `misreads` (a value the
    device got wrong but sent as ok; None: a frame it could not read). Returns {reading id: taken_at}."""
    fleet.add(device, meter, PAYER, T0 - timedelta(days=1))
    items: list[tuple[datetime, str | None, str, str | None]] = []
    t = T0
    misreads = misreads or {}
    while t < until:
        if t in misreads and misreads[t] is None:
            items.append((t, None, "error", "frame could not be aligned"))
        else:
            items.append((t, misreads.get(t) or fmt(truth(t)), "ok", None))
        t += EVERY
    ids = fleet.readings(device, items)
    return dict(zip(ids, [i[0] for i in items], strict=True))


def _billed(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return httpx.get(f"{sandbox.url}/v1/readings").json()["readings"]


def _settlement(engine: Any) -> dict[int, tuple[str, str | None]]:
    with engine.begin() as conn:
        return {r.reading_id: (r.state, r.reason) for r in conn.execute(settlements.select()).all()}


def test_an_absurd_ok_value_is_never_billed_and_the_next_month_bills_normally(
        db_url: str, engine_for: Any, sandbox: SandboxServer) -> None:
    engine = engine_for(db_url)
    config = make_config(db_url, sandbox.url)
    absurd_at = datetime(2026, 8, 25, 6, tzinfo=UTC)
    ids = _meter(Fleet(engine), datetime(2026, 10, 1, tzinfo=UTC), {absurd_at: "999999999999.000000"})
    absurd_id = next(i for i, t in ids.items() if t == absurd_at)

    # The pass runs just after the absurd reading: it is the newest `ok` of August, and is not billed.
    aug = run_pass(engine, config, absurd_at + timedelta(minutes=5))
    assert [(m.period, m.state) for m in aug.meters] == [("2026-08", "accepted")]
    [billed] = _billed(sandbox)
    taken = parse_instant(billed["taken_at"])
    assert billed["value"] == fmt(truth(taken)) and taken < absurd_at
    assert absurd_at - taken <= timedelta(hours=48)
    state, reason = _settlement(engine)[absurd_id]
    assert state == "outlier" and reason is not None and "more digits than a meter has" in reason

    # September bills normally: no decreasing_value, the value is the truth at its time.
    sep = run_pass(engine, config, parse_instant("2026-09-20T12:00:00Z"))
    assert [(m.period, m.state, m.reason) for m in sep.meters] == [("2026-09", "accepted", None)]
    got = _billed(sandbox)
    assert [g["period"] for g in got] == ["2026-08", "2026-09"]
    assert all(g["value"] == fmt(truth(parse_instant(g["taken_at"]))) for g in got)
    assert len(sandbox.store.credits()) == 2  # points once per period

    # What the resident sees: the absurd reading is an outlier with the reason; others settled.
    with engine.begin() as conn:
        hist = payer_history(conn, PAYER)
    by_id = {r["id"]: r for r in hist["readings"]}
    assert by_id[absurd_id]["settlement"]["state"] == "outlier"
    assert "max_integer_digits" in by_id[absurd_id]["settlement"]["reason"]
    assert {r["settlement"]["state"] for r in hist["readings"]} == {"settled", "outlier", "pending"}


def test_a_lone_misread_is_not_billed_its_settled_neighbour_is(db_url: str, engine_for: Any,
                                                               sandbox: SandboxServer) -> None:
    """The issue's misread: the tenths wheel read 3 as 8 (00160.37 -> 00160.87), sent `ok`."""
    engine = engine_for(db_url)
    config = make_config(db_url, sandbox.url)
    t = datetime(2026, 10, 19, 12, tzinfo=UTC)
    ids = _meter(Fleet(engine), datetime(2026, 10, 25, tzinfo=UTC), {t: fmt(truth(t) + Decimal("0.5"))})
    report = run_pass(engine, config, t + timedelta(minutes=1))
    assert report.counts() == {"accepted": 1}
    [billed] = _billed(sandbox)
    assert parse_instant(billed["taken_at"]) == t - EVERY and billed["value"] == fmt(truth(t - EVERY))
    misread = next(i for i, at in ids.items() if at == t)
    assert _settlement(engine)[misread][0] == "outlier"


def test_nothing_settled_waits_with_the_reason_then_bills(db_url: str, engine_for: Any,
                                                          sandbox: SandboxServer) -> None:
    engine = engine_for(db_url)
    config = make_config(db_url, sandbox.url)
    fleet = Fleet(engine)
    fleet.add("dev-1", "M-1", PAYER, T0)
    first = datetime(2026, 10, 18, 6, tzinfo=UTC)
    fleet.reading("dev-1", first - timedelta(days=1), "00199.000")
    fleet.reading("dev-1", first, "00200.000")
    at = first + timedelta(hours=1)
    report = run_pass(engine, config, at)
    [m] = report.meters
    assert m.state == "needs_attention" and m.reason is not None
    assert m.reason.startswith("nothing_settled") and "pending (waiting for later readings to agree)" in m.reason
    with engine.begin() as conn:
        state = device_state(conn, "dev-1", at, config.fleet)  # what the device state topic shows operators
        hist = payer_history(conn, PAYER)
    view = state.submission if state is not None else None
    assert view is not None and view.state == "needs_attention" and "pending" in (view.reason or "")
    assert hist["submissions"][0]["reason"] == m.reason  # ... and the resident's history
    assert _billed(sandbox) == []

    fleet.readings("dev-1", [(first + timedelta(hours=h), "00200.010", "ok", None) for h in (2, 4)])
    later = run_pass(engine, config, first + timedelta(hours=5))
    # Two later readings agree with the first one: it is settled and billed (they wait for their own).
    assert [(x.state, x.value, x.taken_at) for x in later.meters] == [("accepted", "00200.000", first)]
    assert [g["value"] for g in _billed(sandbox)] == ["00200.000"]


def test_below_what_billing_holds_is_an_outlier_not_a_refusal(db_url: str, engine_for: Any,
                                                              sandbox: SandboxServer) -> None:
    engine = engine_for(db_url)
    config = make_config(db_url, sandbox.url)
    fleet = Fleet(engine)
    fleet.add("dev-1", "M-1", PAYER, T0)
    fleet.settled("dev-1", datetime(2026, 10, 18, 6, tzinfo=UTC), "00300.000")
    assert run_pass(engine, config, parse_instant("2026-10-20T00:00:00Z")).counts() == {"accepted": 1}
    # November: the device reads lower than what billing holds (a swapped meter, a stuck wheel), all `ok`.
    fleet.readings("dev-1", [(datetime(2026, 11, 16, h, tzinfo=UTC), "00290.000", "ok", None) for h in range(6)])
    nov = run_pass(engine, config, parse_instant("2026-11-17T00:00:00Z"))
    [m] = nov.meters
    assert m.state == "needs_attention" and m.reason is not None and "below what billing holds" in m.reason
    assert [g["period"] for g in _billed(sandbox)] == ["2026-10"]  # never sent: no decreasing_value to explain
    assert not [r for r in sandbox.store.requests() if r["status"] == 422]


def test_corrections_are_checked_and_can_repair_a_blocked_month(tmp_path: Path, db_url: str, engine_for: Any,
                                                                sandbox: SandboxServer) -> None:
    """September's frames all came out `ok` with an absurd value: nothing settles, the month waits; the
    resident's 99999999 is refused with the plausible range; the true value repairs the month."""
    engine = engine_for(db_url)
    config = make_config(db_url, sandbox.url)
    sep = {datetime(2026, 9, 16, tzinfo=UTC) + k * EVERY: "999999999999.000000" for k in range(8)}
    ids = _meter(Fleet(engine), datetime(2026, 9, 18, tzinfo=UTC),
                 {**{t: None for t in (datetime(2026, 9, 1, tzinfo=UTC) + k * EVERY for k in range(60))}, **sep})
    at = parse_instant("2026-09-18T00:00:00Z")
    blocked = run_pass(engine, config, at)
    [m] = blocked.meters
    assert m.state == "needs_attention" and m.reason is not None and "outlier" in m.reason
    assert "more digits than a meter has" in m.reason
    last_absurd = max(i for i, t in ids.items() if t in sep)
    taken = ids[last_absurd]

    refused = correct(engine, config, last_absurd, "99999999", at=at)
    assert refused.action == "refused" and refused.verdict is not None
    low = refused.verdict.plausible_low
    # The last settled reading before (two more after it were needed; errors and outliers do not count),
    # less one step of the lowest wheel's jitter.
    assert low is not None and low == truth(datetime(2026, 8, 31, 6, tzinfo=UTC)) - Decimal("0.001")
    assert f"plausible is {fmt(low)} – " in refused.message
    assert _billed(sandbox) == []

    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'database_url = "{db_url}"\n[billing]\nurl = "{sandbox.url}"\n'
                   f'[loyalty]\nurl = "{sandbox.url}"\n')
    out = CliRunner().invoke(main, ["--config", str(cfg), "correct", str(last_absurd), "--value",
                                    fmt(truth(taken)), "--at", "2026-09-18T00:00:00Z", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["verdict"]["state"] == "accepted" and data["action"] == "submitted"
    assert data["submission"]["state"] == "accepted"
    [billed] = _billed(sandbox)
    assert (billed["period"], billed["value"]) == ("2026-09", fmt(truth(taken)))

    hist = json.loads(CliRunner().invoke(main, ["--config", str(cfg), "history", "--payer", PAYER, "--json"]).stdout)
    by_id = {r["id"]: r for r in hist["readings"]}
    assert by_id[last_absurd]["settlement"]["state"] == "settled"
    assert by_id[last_absurd]["corrected_value"] == fmt(truth(taken))
    assert [c["state"] for c in hist["corrections"]] == ["refused", "accepted"]


def test_settle_command_is_idempotent(tmp_path: Path, sqlite_url: str, engine_for: Any,
                                      sandbox: SandboxServer) -> None:
    engine = engine_for(sqlite_url)
    t = datetime(2026, 8, 10, tzinfo=UTC)
    _meter(Fleet(engine), datetime(2026, 8, 12, tzinfo=UTC), {t: fmt(truth(t) + 1)})
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'database_url = "{sqlite_url}"\n')
    first = CliRunner().invoke(main, ["--config", str(cfg), "settle", "--json"])
    assert first.exit_code == 0, first.output
    counts = json.loads(first.stdout)["meters"]["M-1"]
    # 44 readings (11 days, 6 h apart): the first waits (nothing before it), the last two wait for later ones.
    assert counts == {"settled": 40, "outlier": 1, "pending": 3, "changed": 44}
    again = json.loads(CliRunner().invoke(main, ["--config", str(cfg), "settle", "--json"]).stdout)["meters"]["M-1"]
    assert again == {**counts, "changed": 0}
    missing = CliRunner().invoke(main, ["--config", str(cfg), "settle", "--meter", "NOPE"])
    assert missing.exit_code == 1 and "no bound meter NOPE" in missing.output


def test_a_value_with_nothing_to_check_against_waits_for_an_operator(tmp_path: Path, sqlite_url: str,
                                                                    engine_for: Any, sandbox: SandboxServer) -> None:
    engine = engine_for(sqlite_url)
    fleet = Fleet(engine)
    fleet.add("dev-1", "M-1", PAYER, T0)
    rid = fleet.reading("dev-1", datetime(2026, 10, 18, 6, tzinfo=UTC), None, "error", "frame could not be aligned")
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'database_url = "{sqlite_url}"\n[billing]\nurl = "{sandbox.url}"\n'
                   f'[loyalty]\nurl = "{sandbox.url}"\n')
    base = ["--config", str(cfg), "correct", str(rid), "--value", "00200.000", "--at", "2026-10-20T00:00:00Z"]
    held = CliRunner().invoke(main, base)
    assert held.exit_code == 3 and "held for an operator to confirm" in held.output
    assert _billed(sandbox) == []
    resident = CliRunner().invoke(main, [*base, "--confirm"])
    assert resident.exit_code == 1 and "only an operator or an installer" in resident.output
    confirmed = CliRunner().invoke(main, [*base, "--confirm", "--by", "operator", "--json"])
    assert confirmed.exit_code == 0, confirmed.output
    data = json.loads(confirmed.stdout)
    assert data["verdict"]["state"] == "accepted" and data["verdict"]["reason"].startswith("confirmed by operator")
    assert data["submission"]["state"] == "accepted"
    assert [g["value"] for g in _billed(sandbox)] == ["00200.000"]
