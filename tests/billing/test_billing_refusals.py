"""What billing must never accept (a suspect reading, a decreasing value, an unknown payer) and
residents' corrections: the reasons are visible in `history` and in the device's submission state."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from billing_helpers import Fleet, correct, make_config, run_pass
from click.testing import CliRunner

from cloud_bridge.cli import main
from cloud_bridge.fleet import device_states
from cloud_bridge.residents import ResidentError
from cloud_bridge.sandbox import SandboxServer, load_accounts
from cloud_bridge.submission.periods import parse_instant

A, B, C = "0000000001", "0000000002", "0000000003"
AT = parse_instant("2026-10-20T09:00:00Z")
SINCE = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture
def billing(tmp_path: Path) -> Iterator[SandboxServer]:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(f"payer_code,meter_serial\n{A},M-A1\n{A},M-A2\n{B},M-B\n")
    with SandboxServer(tmp_path / "sandbox.sqlite", accounts=load_accounts(accounts)) as server:
        yield server


def _world(engine: Any, billing: SandboxServer) -> dict[str, int]:
    fleet = Fleet(engine)
    fleet.add("dev-a1", "M-A1", A, SINCE)
    fleet.add("dev-a2", "M-A2", A, SINCE, kind="hot")
    fleet.add("dev-b", "M-B", B, SINCE)
    fleet.add("dev-c", "M-C", C, SINCE)
    ids = {
        "a1_suspect": fleet.readings("dev-a1", [
            *[(datetime(2026, 9, 25, h, tzinfo=UTC), "00070.000", "ok", None) for h in range(4)],
            (datetime(2026, 10, 16, 8, tzinfo=UTC), None, "error", "frame could not be aligned"),
            (datetime(2026, 10, 18, 8, tzinfo=UTC), "00077.100", "suspect", "digit 3 below confidence")])[5],
        "a2": fleet.settled("dev-a2", datetime(2026, 10, 18, 8, tzinfo=UTC), "00050.000"),
        "b": fleet.settled("dev-b", datetime(2026, 10, 18, 8, tzinfo=UTC), "00010.000", after=4),
        "c": fleet.settled("dev-c", datetime(2026, 10, 18, 8, tzinfo=UTC), "00020.000"),
    }
    ids["b_last"] = ids["b"] + 2  # the one two hours after b (10:00), the newest settled (billed) one
    # Billing already holds a higher value for M-A2 (from September): 50 is a decrease for it.
    r = httpx.post(f"{billing.url}/v1/readings", headers={"Idempotency-Key": "earlier"}, json={
        "payer_code": A, "meter_serial": "M-A2", "period": "2026-09", "value": "00060.000",
        "taken_at": "2026-09-30T08:00:00Z"})
    assert r.status_code == 201
    return ids


def _history(cfg: Path, payer: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["--config", str(cfg), "history", "--payer", payer, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _cfg_file(tmp_path: Path, db_url: str, url: str) -> Path:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'database_url = "{db_url}"\n[billing]\nurl = "{url}"\n[loyalty]\nurl = "{url}"\n')
    return cfg


def test_never_accepted_and_why(tmp_path: Path, db_url: str, engine_for: Any, billing: SandboxServer) -> None:
    engine = engine_for(db_url)
    _world(engine, billing)
    config = make_config(db_url, billing.url)
    report = run_pass(engine, config, AT)
    states = {m.meter_serial: (m.state, m.reason) for m in report.meters}
    assert states["M-A1"][0] == "needs_attention" and "only_suspect_readings" in states["M-A1"][1]
    assert "digit 3 below confidence" in states["M-A1"][1]
    assert states["M-A2"] == ("refused", "decreasing_value")
    assert states["M-B"] == ("accepted", None)
    assert states["M-C"] == ("refused", "unknown_payer")
    accepted = httpx.get(f"{billing.url}/v1/readings").json()["readings"]
    assert sorted((r["meter_serial"], r["period"]) for r in accepted) == [("M-A2", "2026-09"), ("M-B", "2026-10")]
    assert [c["payer_code"] for c in billing.store.credits()] == [B]  # points only for what billing accepted

    cfg = _cfg_file(tmp_path, db_url, billing.url)
    hist_a = _history(cfg, A)
    assert {(s["meter_serial"], s["state"], s["reason"].split(" ")[0]) for s in hist_a["submissions"]} == {
        ("M-A1", "needs_attention", "only_suspect_readings"), ("M-A2", "refused", "decreasing_value")}
    assert {r["status"] for r in hist_a["readings"]} == {"ok", "suspect", "error"}
    assert set(hist_a["readings"][0]) >= {"id", "device_id", "seq", "taken_at", "value", "status"}
    assert hist_a["points"] == [] and _history(cfg, C)["submissions"][0]["reason"] == "unknown_payer"
    table = CliRunner().invoke(main, ["--config", str(cfg), "history", "--payer", A])
    assert table.exit_code == 0 and "decreasing_value" in table.output and "needs_attention" in table.output

    with engine.begin() as conn:  # what the device state topic shows operators
        states = {d.device_id: d for d in device_states(conn, ["dev-a1", "dev-a2", "dev-b", "no-such-device"],
                                                          AT, config.fleet)}
    assert set(states) == {"dev-a1", "dev-a2", "dev-b"}
    view = states["dev-a2"].submission
    assert view is not None and (view.state, view.reason) == ("refused", "decreasing_value")
    a1 = states["dev-a1"].submission
    assert a1 is not None and a1.state == "needs_attention"
    loyalty = states["dev-b"].loyalty
    assert loyalty is not None and (loyalty.period, loyalty.points, loyalty.state) == ("2026-10", 10, "credited")


def test_corrections(db_url: str, engine_for: Any, billing: SandboxServer) -> None:
    engine = engine_for(db_url)
    ids = _world(engine, billing)
    config = make_config(db_url, billing.url)
    run_pass(engine, config, AT)

    # A suspect-only meter: the resident reads the meter; the correction makes it submittable.
    fixed = correct(engine, config, ids["a1_suspect"], "00077.000", note="read it myself", at=AT)
    assert fixed.action == "submitted" and fixed.submission is not None
    assert (fixed.submission.key, fixed.submission.state, fixed.submission.value) == (
        f"{A}:M-A1:2026-10", "accepted", "00077.000")
    assert [c["payer_code"] for c in billing.store.credits()] == [B, A]

    # M-B's billed reading is followed by two showing the same: a higher value for it is ruled out.
    ruled_out = correct(engine, config, ids["b"], "00010.500", at=AT)
    assert ruled_out.action == "refused" and ruled_out.submission is None
    assert "plausible is 00006.999 – 00010.001 m3" in ruled_out.message  # not above the 10.000 an hour later
    # M-B's billed reading was misread low: the correction goes with its own key.
    up = correct(engine, config, ids["b_last"], "00010.500", at=AT)
    assert up.submission is not None and up.submission.key == f"{B}:M-B:2026-10:c{up.correction_id}"
    assert up.submission.state == "accepted"
    # ... and lower again: billing refuses a decrease; the reason is kept.
    down = correct(engine, config, ids["b_last"], "00010.200", at=AT)
    assert down.submission is not None and (down.submission.state, down.submission.reason) == (
        "refused", "decreasing_value")
    same = correct(engine, config, ids["b_last"], "00010.500", at=AT)
    assert same.action == "recorded" and "already has" in same.message
    late = correct(engine, config, ids["b_last"], "00011.000", at=parse_instant("2026-11-10T00:00:00Z"))
    assert late.action == "recorded" and "closed" in late.message

    got = [(r["meter_serial"], r["value"]) for r in billing.store.readings() if r["meter_serial"] == "M-B"]
    assert got == [("M-B", "00010.000"), ("M-B", "00010.500")]
    assert len(billing.store.credits()) == 2  # corrections earn no second credit
    with engine.begin() as conn:
        from cloud_bridge.residents import payer_history

        hist = payer_history(conn, B)
    by_id = {r["id"]: r for r in hist["readings"]}
    assert by_id[ids["b_last"]]["corrected_value"] == "00011.000"  # the newest accepted correction wins
    assert [c["value"] for c in hist["corrections"]] == ["00010.500", "00010.500", "00010.200", "00010.500",
                                                          "00011.000"]
    assert [c["state"] for c in hist["corrections"]] == ["refused"] + ["accepted"] * 4
    assert "plausible is" in hist["corrections"][0]["reason"]
    assert [s["state"] for s in hist["submissions"]] == ["accepted", "accepted", "refused"]
    with pytest.raises(ResidentError, match="no reading"):
        correct(engine, config, 999999, "1", at=AT)
    with pytest.raises(ResidentError, match="not a meter value"):
        correct(engine, config, ids["b"], "12,5", at=AT)


def test_correct_cli(tmp_path: Path, sqlite_url: str, engine_for: Any, billing: SandboxServer) -> None:
    engine = engine_for(sqlite_url)
    ids = _world(engine, billing)
    cfg = _cfg_file(tmp_path, sqlite_url, billing.url)
    runner = CliRunner()
    sub = runner.invoke(main, ["--config", str(cfg), "submit", "--period", "2026-10", "--at", "2026-10-20T09:00:00Z"])
    assert sub.exit_code == 0, sub.output
    assert "needs_attention" in sub.output and "******0002" in sub.output and B not in sub.output
    out = runner.invoke(main, ["--config", str(cfg), "correct", str(ids["b_last"]), "--value", "00010.750",
                               "--by", "resident", "--at", "2026-10-21T00:00:00Z", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["action"] == "submitted" and data["submission"]["state"] == "accepted"
    absurd = runner.invoke(main, ["--config", str(cfg), "correct", str(ids["b_last"]), "--value", "99999999"])
    assert absurd.exit_code == 1 and "refused" in absurd.output and "plausible" in absurd.output
    # The range comes from the meter's settled readings (10.000 an hour before; at most 3 m3/h since),
    # not from the correction being replaced, even though billing accepted it.
    assert "plausible is 00009.999 – 00013.001 m3" in absurd.output
    bad = runner.invoke(main, ["--config", str(cfg), "correct", "424242", "--value", "1"])
    assert bad.exit_code == 1 and "no reading with id 424242" in bad.output
    bad_at = runner.invoke(main, ["--config", str(cfg), "submit", "--at", "yesterday"])
    assert bad_at.exit_code == 1 and "ISO 8601" in bad_at.output


def test_timer_runs_passes_in_the_background(sqlite_url: str, engine_for: Any, billing: SandboxServer) -> None:
    from cloud_bridge.gateways.http import http_gateways
    from cloud_bridge.service import timed_jobs

    engine = engine_for(sqlite_url)
    _world(engine, billing)
    config = make_config(sqlite_url, billing.url)
    with http_gateways(config) as gateways:
        submission, settlement = timed_jobs(engine, config, gateways)
        assert submission.task().name == "submission" and submission.every_s == config.submission.pass_every_s
        assert settlement.task().name == "settlement" and settlement.every_s == config.settlement.every_s
        assert submission.job.start(AT) is True
        assert submission.job.join(30)
    assert submission.job.runs == 1 and submission.job.last_error is None
    assert [r["meter_serial"] for r in billing.store.readings() if r["period"] == "2026-10"] == ["M-B"]


@pytest.mark.mosquitto
def test_reasons_on_the_device_state_topic(sqlite_url: str, engine_for: Any, billing: SandboxServer,
                                           broker: Any) -> None:
    """The fleet publisher's retained `bridge/devices/{id}/state` carries the refusal and attention reasons."""
    import queue

    import paho.mqtt.client as mqtt

    from cloud_bridge.fleet import FleetPublisher
    from contract import topics

    engine = engine_for(sqlite_url)
    _world(engine, billing)
    config = make_config(sqlite_url, billing.url)
    run_pass(engine, config, AT)

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="billing-test-pub")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
            pub.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

        assert FleetPublisher(engine, publish, config.fleet, config.window, sweep=True).tick(force=True) >= 4
    finally:
        pub.loop_stop()
        pub.disconnect()

    got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="billing-test-sub")
    sub.on_message = lambda c, u, m: got.put((m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(topics.device_state("dev-a1").replace("dev-a1", "+"), qos=1)
    sub.loop_start()
    states: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 10
        while len(states) < 4 and time.monotonic() < deadline:
            try:
                topic, payload = got.get(timeout=0.5)
            except queue.Empty:
                continue
            states[topic.split("/")[2]] = payload
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert states["dev-a2"]["submission"]["state"] == "refused"
    assert states["dev-a2"]["submission"]["reason"] == "decreasing_value"
    assert states["dev-c"]["submission"]["reason"] == "unknown_payer"
    assert states["dev-a1"]["submission"]["state"] == "needs_attention"
    assert "only_suspect_readings" in states["dev-a1"]["submission"]["reason"]
    assert states["dev-b"]["loyalty"] == {"period": "2026-10", "points": 10, "state": "credited"}
    assert all(A not in json.dumps(s) and C not in json.dumps(s) for s in states.values())  # payer codes masked
