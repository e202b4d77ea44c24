"""Billing fails for a while (503, then 429 with Retry-After, a slow answer past our timeout), then
recovers: every submission ends accepted exactly once in the sandbox's own records, no duplicate credit."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from billing_helpers import Fleet, make_config, run_pass

from cloud_bridge.sandbox import Fault, SandboxServer
from cloud_bridge.store.tables import points_ledger, submissions
from cloud_bridge.submission.periods import parse_instant

AT = parse_instant("2026-10-20T09:00:00Z")


def _fleet(engine: Any, n: int) -> None:
    fleet = Fleet(engine)
    for i in range(n):
        fleet.add(f"dev-{i}", f"M-{i}", f"{2000000000 + i // 2:010d}", datetime(2026, 9, 1, tzinfo=UTC))
        fleet.settled(f"dev-{i}", datetime(2026, 10, 18, 6, tzinfo=UTC) + timedelta(minutes=i), f"{10 + i:05d}.500")


def test_outage_then_rate_limit_then_recovery(db_url: str, engine_for: Any, sandbox: SandboxServer) -> None:
    engine = engine_for(db_url)
    _fleet(engine, 6)
    api = httpx.Client(base_url=sandbox.url)
    api.post("/admin/faults", json={"faults": [
        {"mode": "503", "count": 7}, {"mode": "429", "count": 3, "retry_after": 1}]})
    config = make_config(db_url, sandbox.url, max_attempts_per_pass=3, max_wait_in_pass_s=0.2)
    passes = 0
    deadline = time.monotonic() + 30
    while True:
        passes += 1
        report = run_pass(engine, config, AT)
        if report.counts() == {"accepted": 6} and all(c.state == "credited" for c in report.credits):
            with engine.begin() as conn:
                pending_credits = conn.execute(points_ledger.select().where(
                    points_ledger.c.credit_state != "credited")).all()
            if not pending_credits:
                break
        assert time.monotonic() < deadline, report.to_json()
        # Nothing is retried before its time: the pass leaves rows pending with next_attempt_at.
        with engine.begin() as conn:
            waiting = conn.execute(submissions.select().where(submissions.c.state == "pending")).all()
        assert all(w.next_attempt_at is not None and w.reason.startswith("retrying: ") for w in waiting)
        time.sleep(0.3)
    assert passes >= 2  # the first pass could not finish: 3 attempts each, waits above 0.2 s left for later
    log = sandbox.store.requests()
    statuses = [r["status"] for r in log]
    assert statuses.count(503) == 7 and statuses.count(429) == 3
    got = api.get("/v1/readings").json()["readings"]
    assert len(got) == 6 and len({(r["payer_code"], r["meter_serial"], r["period"]) for r in got}) == 6
    credits = api.get("/v1/credits").json()
    assert len(credits["credits"]) == 3 and credits["balance"] == 30  # 3 payers, 2 meters each: once per payer
    # Every key reached billing's records once; retries reused the key.
    accepted_keys = [r["idempotency_key"] for r in log if r["status"] == 201]
    assert len(accepted_keys) == len(set(accepted_keys)) == 9
    # A pass later changes nothing.
    run_pass(engine, config, AT + timedelta(days=1))
    assert len(api.get("/v1/readings").json()["readings"]) == 6
    assert api.get("/v1/credits").json()["balance"] == 30
    api.close()


def test_timeout_while_billing_records_is_resent_with_the_same_key(
        sqlite_url: str, engine_for: Any, sandbox: SandboxServer) -> None:
    engine = engine_for(sqlite_url)
    _fleet(engine, 1)
    sandbox.faults.push(Fault(mode="delay", delay_s=0.8, target="readings"))
    config = make_config(sqlite_url, sandbox.url, timeout_s=0.3, backoff_base_s=1.0, max_wait_in_pass_s=2.0)
    report = run_pass(engine, config, AT)
    assert [(m.state, m.attempts) for m in report.meters] == [("accepted", 2)]
    time.sleep(1.0)  # the first answer is logged once its delay is over
    log = [r for r in sandbox.store.requests() if r["path"] == "/v1/readings"]
    assert sorted((r["status"], r["replayed"]) for r in log) == [(201, False), (201, True)]
    assert {r["idempotency_key"] for r in log} == {"2000000000:M-0:2026-10"}
    assert len(sandbox.store.readings()) == 1
