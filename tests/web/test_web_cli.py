"""The portal's commands: `web` (a real server process), `users add` (an operator's one-time password
that must be changed), `residents invite` (one code, or a CSV of many) and `residents link`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from test_web_access import sign_in
from web_helpers import ALICE, BOB, seed

from cloud_bridge.cli import main
from cloud_bridge.store import open_store


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    db = tmp_path / "bridge.db"
    path = tmp_path / "bridge.toml"
    path.write_text(f'database_url = "sqlite:///{db}"\n[web]\nsecret_file = "{tmp_path / "web" / "session.key"}"\n')
    engine = open_store(f"sqlite:///{db}")
    seed(engine)
    engine.dispose()
    return path


def run(cfg: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(cfg), *args])


def test_invite_one_payer_and_many_from_a_csv(cfg: Path, tmp_path: Path) -> None:
    one = run(cfg, "residents", "invite", "--payer", ALICE, "--json")
    assert one.exit_code == 0, one.output
    code = json.loads(one.stdout)["link_code"]
    assert re.fullmatch(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}", code)
    unknown = run(cfg, "residents", "invite", "--payer", "9999999999")
    assert unknown.exit_code == 1 and "no payer with code 9999999999" in unknown.stderr
    csv = tmp_path / "payers.csv"
    csv.write_text(f"payer_code,name\n{ALICE},A\n{BOB},B\n")
    many = run(cfg, "residents", "invite", "--csv", str(csv))
    assert many.exit_code == 0, many.output
    lines = many.stdout.strip().splitlines()
    assert lines[0] == "payer_code,link_code,expires_at" and [x.split(",")[0] for x in lines[1:]] == [ALICE, BOB]
    csv.write_text(f"payer_code\n{ALICE}\n12345\n")
    bad = run(cfg, "residents", "invite", "--csv", str(csv))
    assert bad.exit_code == 1 and "line 3: '12345'" in bad.stderr and "nothing was issued" in bad.stderr
    assert run(cfg, "residents", "invite").exit_code == 1


def test_an_operator_signs_in_with_the_one_time_password_and_must_change_it(cfg: Path, tmp_path: Path,
                                                                              page: Any) -> None:
    added = run(cfg, "users", "add", "Chief@Example.org", "--role", "operator", "--json")
    assert added.exit_code == 0, added.output
    account = json.loads(added.stdout)
    assert account["login"] == "chief@example.org" and len(account["password"]) >= 16
    again = run(cfg, "users", "add", "chief@example.org")
    assert again.exit_code == 1 and "already exists" in again.stderr
    listed = json.loads(run(cfg, "users", "list", "--json").stdout)
    assert {"chief@example.org": "operator", "alice@example.org": "resident"}.items() <= {
        u["login"]: u["role"] for u in listed}.items()
    with WebProcess(cfg) as base:
        sign_in(page, base, "chief@example.org", account["password"])
        assert page.url.endswith("/account/password")
        assert page.request.get(f"{base}/ops").url.endswith("/account/password")  # nothing else until changed
        page.fill("input[name=current]", account["password"])
        page.fill("input[name=password]", "a brand new secret")
        page.fill("input[name=password2]", "a brand new secret")
        with page.expect_navigation():
            page.click("form.stack button[type=submit]")
        assert page.url.endswith("/ops")
        assert run(cfg, "users", "disable", "chief@example.org").exit_code == 0
        page.reload()
        assert "/login" in page.url  # disabling signs out everywhere


class WebProcess:
    """`meter-bridge web --port 0` as its own process; stopped with SIGTERM."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_bridge.cli", "--config", str(self.cfg), "web", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, (line, self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else "")
        return f"http://127.0.0.1:{m.group(1)}"

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(15)


def test_web_serves_on_loopback_with_safe_cookies_and_headers(cfg: Path, tmp_path: Path) -> None:
    with WebProcess(cfg) as base:
        r = httpx.get(base + "/login")
        assert r.status_code == 200 and "Войти" in r.text
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert httpx.get(base + "/static/style.css").status_code == 200
        assert httpx.get(f"{base}/payer/{ALICE}").status_code == 303  # to the sign-in page
    key = tmp_path / "web" / "session.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    refused = subprocess.run([sys.executable, "-m", "cloud_bridge.cli", "--config", str(cfg), "web", "--port", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and f"chmod 600 {key}" in refused.stderr


def test_the_feed_for_the_utilitys_sender(cfg: Path) -> None:
    from sqlalchemy import update

    from cloud_bridge.store.device_latest import rebuild as rebuild_latest
    from cloud_bridge.store.tables import readings

    engine = open_store(f"sqlite:///{cfg.parent / 'bridge.db'}")
    with engine.begin() as conn:  # the seeded readings end at 20 Nov: every device has been silent since
        conn.execute(update(readings).where(readings.c.device_id == "dev-b").values(status="suspect"))
        rebuild_latest(conn, ["dev-b"])  # readings changed underneath the store: recompute its row
    engine.dispose()
    out = run(cfg, "residents", "feed", "--since", "2026-11-01T00:00:00Z", "--lang", "en")
    assert out.exit_code == 0, out.output
    events = [json.loads(line) for line in out.stdout.splitlines()]
    offline = {(e["to"], e["device_id"]) for e in events if e["kind"] == "offline"}
    assert offline == {("alice@example.org", "dev-a-cold"), ("alice@example.org", "dev-a-hot"),
                       ("+79161234567", "dev-b")}  # the unlinked payer's device goes to nobody
    assert all(e["text"].startswith("The device of meter") for e in events if e["kind"] == "offline")
    assert len({e["id"] for e in events}) == len(events)
    bad = run(cfg, "residents", "feed", "--since", "yesterday")
    assert bad.exit_code == 1
