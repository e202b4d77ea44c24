"""The sandbox over real HTTP: contracts, refusals, idempotency, faults on demand, auth."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloud_bridge.sandbox import SandboxServer, load_accounts

PAYER = "0123456789"


def reading(value: str = "00100.000", period: str = "2026-11", payer: str = PAYER, serial: str = "M-1") -> dict:
    return {"payer_code": payer, "meter_serial": serial, "period": period, "value": value,
            "taken_at": "2026-11-20T10:00:00Z"}


def post(client: httpx.Client, body: dict, key: str, path: str = "/v1/readings") -> httpx.Response:
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_accept_replay_and_list(sandbox: SandboxServer) -> None:
    with httpx.Client(base_url=sandbox.url) as c:
        first = post(c, reading(), "k1")
        again = post(c, reading(), "k1")
        assert first.status_code == 201 and again.status_code == 201
        assert first.json() == again.json()
        assert again.headers["idempotent-replayed"] == "true"
        conflict = post(c, reading("00101.000"), "k1")
        assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_key_reused"
        listed = c.get("/v1/readings", params={"payer": PAYER}).json()["readings"]
        assert [r["submission_id"] for r in listed] == [first.json()["submission_id"]]
        assert set(listed[0]) == {"submission_id", "payer_code", "meter_serial", "period", "value", "taken_at"}
        assert c.get("/v1/readings", params={"payer": "9999999999"}).json() == {"readings": []}


def test_decreasing_value_refused_and_cached(sandbox: SandboxServer) -> None:
    with httpx.Client(base_url=sandbox.url) as c:
        assert post(c, reading("00100.000", "2026-10"), "a").status_code == 201
        low = post(c, reading("00099.999", "2026-11"), "b")
        assert low.status_code == 422 and low.json() == {"code": "decreasing_value"}
        # Same key again: the same refusal, even though a later state of the world might differ.
        assert post(c, reading("00099.999", "2026-11"), "b").json() == {"code": "decreasing_value"}
        assert post(c, reading("00100.000", "2026-11"), "c").status_code == 201  # equal is not decreasing
        # Another meter of the same payer is compared with its own history only.
        assert post(c, reading("00001.000", serial="M-2"), "d").status_code == 201


def test_accounts_unknown_payer_and_meter(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("payer_code,meter_serial\n0123456789,M-1\n")
    with SandboxServer(tmp_path / "s.sqlite", accounts=load_accounts(accounts)) as s, \
            httpx.Client(base_url=s.url) as c:
        assert post(c, reading(payer="1111111111"), "x").json() == {"code": "unknown_payer"}
        assert post(c, reading(serial="M-9"), "y").json() == {"code": "unknown_meter"}
        assert post(c, reading(), "z").status_code == 201
        credit = {"payer_code": "1111111111", "period": "2026-11", "points": 10, "reason": "reading"}
        assert post(c, credit, "cr", "/v1/credits").json() == {"code": "unknown_payer"}


def test_malformed_body_and_missing_key(sandbox: SandboxServer) -> None:
    with httpx.Client(base_url=sandbox.url) as c:
        assert c.post("/v1/readings", json=reading()).json()["code"] == "missing_idempotency_key"
        bad = post(c, reading(payer="12345"), "k")
        assert bad.status_code == 400 and "payer_code" in bad.json()["detail"]
        assert post(c, {**reading(), "taken_at": "2026-11-20T10:00:00"}, "k2").status_code == 400
        junk = c.post("/v1/readings", content=b"\xff not json", headers={"Idempotency-Key": "k3"})
        assert junk.status_code == 400
        assert c.get("/v1/readings").json() == {"readings": []}


def test_faults_queue_outside_window_and_credits(sandbox: SandboxServer) -> None:
    with httpx.Client(base_url=sandbox.url) as c:
        c.post("/admin/faults", json={"faults": [{"mode": "503", "count": 2},
                                                 {"mode": "429", "count": 1, "retry_after": 7}]})
        assert post(c, reading(), "k").status_code == 503
        assert post(c, reading(), "k").status_code == 503
        limited = post(c, reading(), "k")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
        assert post(c, reading(), "k").status_code == 201
        c.post("/admin/faults", json={"outside_window": True})
        assert post(c, reading("00200.000"), "k-late").json() == {"code": "outside_window"}
        c.post("/admin/faults", json={"outside_window": False})
        assert post(c, reading("00200.000"), "k-late2").status_code == 201
        credit = {"payer_code": PAYER, "period": "2026-11", "points": 10, "reason": "reading submitted"}
        one = post(c, credit, "credit:a", "/v1/credits").json()
        assert post(c, credit, "credit:a", "/v1/credits").json() == one
        two = post(c, {**credit, "period": "2026-12"}, "credit:b", "/v1/credits").json()
        assert one["balance"] == 10 and two["balance"] == 20
        listed = c.get("/v1/credits", params={"payer": PAYER}).json()
        assert listed["balance"] == 20 and [x["period"] for x in listed["credits"]] == ["2026-11", "2026-12"]
        log = c.get("/admin/requests", params={"key": "k"}).json()["requests"]
        assert [r["status"] for r in log] == [503, 503, 429, 201]


def test_bearer_token(tmp_path: Path) -> None:
    with SandboxServer(tmp_path / "s.sqlite", token="s3cret") as s, httpx.Client(base_url=s.url) as c:
        assert post(c, reading(), "k").status_code == 401
        assert c.get("/v1/readings").status_code == 401
        assert c.get("/healthz").status_code == 200
        ok = c.post("/v1/readings", json=reading(), headers={"Idempotency-Key": "k", "Authorization": "Bearer s3cret"})
        assert ok.status_code == 201


def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  tok-123\n")
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'[billing]\ntoken_file = "{token}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_bridge.cli", "--config", str(cfg), "sandbox", "--port", "0",
         "--db", str(tmp_path / "s.sqlite"), "--fail-503", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "sandbox listening on http://127.0.0.1:" in line, line + proc.stderr.read() if proc.stderr else ""
        url = line.split()[3]
        headers = {"Authorization": "Bearer tok-123", "Idempotency-Key": "k"}
        with httpx.Client(base_url=url, headers=headers) as c:
            assert c.post("/v1/readings", json=reading()).status_code == 503
            assert c.post("/v1/readings", json=reading()).status_code == 201
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how it ended.
        assert proc.wait(timeout=10) in (0, -15)


@pytest.mark.parametrize("text", ["payer,serial,extra\n", "12,M-1\n"])
def test_bad_accounts_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)):
        load_accounts(path)


def test_delay_fault_still_records(sandbox: SandboxServer) -> None:
    with httpx.Client(base_url=sandbox.url) as c:
        c.post("/admin/faults", json={"mode": "delay", "delay_s": 0.5})
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            post(c.__class__(base_url=sandbox.url, timeout=0.1), reading(), "slow")
        time.sleep(0.6)
        assert post(c, reading(), "slow").headers.get("idempotent-replayed") == "true"
        assert time.monotonic() - t0 < 5
