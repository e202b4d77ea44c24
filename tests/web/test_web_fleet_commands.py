"""The device page's command buttons, in a real browser, against a running agent on a real Mosquitto with
accounts on: the button sends through `send_command` (the operator broker account), the device
answers, the page shows the answer, and the audit log names the operator who pressed it. A resident
cannot send one; without an operator broker account there are no buttons."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fleet_helpers import shot, sign_in
from web_helpers import PASSWORD, make_config, serve

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.cli import main
from cloud_bridge.commands import command_history
from cloud_bridge.config import BridgeConfig
from cloud_bridge.store import open_store
from cloud_bridge.web.users import create_user
from edge.config import load_edge_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from agent_helpers import AgentThread

pytestmark = pytest.mark.mosquitto
OPERATOR, RESIDENT = "ops@example.org", "alice@example.org"




def test_command_buttons_reach_the_device_and_are_audit_logged(auth_broker: MosquittoBroker, tmp_path: Path,
                                                               page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(k, raising=False)
    db_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    env = {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_MQTT__PORT": str(auth_broker.port),
           "BRIDGE_BROKER__ADMIN_PASSWORD_FILE": str(auth_broker.admin_password_file)}

    def cli(*args: str) -> Any:
        r = CliRunner().invoke(main, list(args), env=env)
        assert r.exit_code == 0, r.output
        return r

    cli("db", "upgrade")
    cli("accounts", "add", "ops", "--role", "operator", "--password-out", str(tmp_path / "ops.pw"))
    import json

    added = json.loads(cli("devices", "add", "dev-a", "--json").output)
    (tmp_path / "dev.pw").write_text(added["password"] + "\n")
    cli("bind", "dev-a", "--meter", "SN-1", "--kind", "cold", "--payer", "0123456789", "--address", "Flat 1")
    engine = open_store(db_url, create=False)
    create_user(engine, OPERATOR, "operator", PASSWORD)
    create_user(engine, RESIDENT, "resident", PASSWORD)
    base = make_config(db_url, tmp_path)
    config = BridgeConfig(**{**base.model_dump(), "mqtt": {"port": auth_broker.port},
                             "commands": {"username": "ops", "password_file": str(tmp_path / "ops.pw"),
                                          "timeout_s": 15}})
    conf = tmp_path / "edge.toml"
    conf.write_text(f'device_id = "dev-a"\nstate_dir = "{tmp_path / "state"}"\ninterval_s = 3600\n'
                    f'[mqtt]\nport = {auth_broker.port}\npassword_file = "{tmp_path / "dev.pw"}"\n'
                    "reconnect_min_s = 1\nreconnect_max_s = 1\n")
    at = AgentThread(load_edge_config(conf), config_path=conf).start()
    agent = at.agent
    try:
        deadline = time.monotonic() + 10
        while (agent.outbox.last_seq() or 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # subscribed to its commands
        with serve(engine, config) as url:
            sign_in(page, url, OPERATOR)
            page.goto(f"{url}/ops/devices/dev-a")
            with page.expect_navigation():
                page.click("form[action$='/cmd/capture'] button")
            assert "?cmd=" in page.url
            assert "принята" in page.locator("table.commands-log tr.highlight").inner_text()
            deadline = time.monotonic() + 10
            while (agent.outbox.last_seq() or 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert agent.outbox.last_seq() == 2, "the button did not make the device take a reading"

            # Nothing to check 00200.000 against yet: blocked until the operator vouches for it.
            page.fill("form[action$='/cmd/set-value'] input[name=value]", "00200.000")
            with page.expect_navigation():
                page.click("form[action$='/cmd/set-value'] button")
            assert "confirm" in page.locator("table.commands-log tr.highlight").inner_text()
            assert (agent.outbox.reading_state() or {}).get("previous") != "00200.000"
            page.fill("form[action$='/cmd/set-value'] input[name=value]", "00200.000")
            page.check("form[action$='/cmd/set-value'] input[name=confirm]")
            with page.expect_navigation():
                page.click("form[action$='/cmd/set-value'] button")
            assert "выполнена" in page.locator("table.commands-log tr.highlight").inner_text()
            assert (agent.outbox.reading_state() or {}).get("previous") == "00200.000"
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            shot(page.locator("#commands"), "ops-commands-phone.png", tmp_path)

            # An empty value never leaves the page; the form's token is required.
            token = page.get_attribute("form[action$='/cmd/set-value'] input[name=csrf_token]", "value")
            r = page.request.post(f"{url}/ops/devices/dev-a/cmd/set-value", form={"csrf_token": token, "value": " "})
            assert r.status == 400 and "Введите значение" in r.text()
            r = page.request.post(f"{url}/ops/devices/dev-a/cmd/capture", form={})
            assert r.status == 403
            for path in ("/ops/devices/ghost/cmd/capture", "/ops/devices/dev-a/cmd/reboot"):
                assert page.request.post(url + path, form={"csrf_token": token}).status == 404

            # A resident, signed in with a valid token of their own, cannot send one.
            page.context.clear_cookies()
            sign_in(page, url, RESIDENT)
            token = page.get_attribute("input[name=csrf_token]", "value")
            r = page.request.post(f"{url}/ops/devices/dev-a/cmd/capture", form={"csrf_token": token})
            assert r.status == 404
    finally:
        at.stop()
    log = command_history(engine, "dev-a")
    assert [(c.name, c.state) for c in log] == [("set-value", "done"), ("set-value", "blocked"),
                                                ("capture", "accepted")]
    assert all(c.requested_by == f"{OPERATOR} (web, via ops)" for c in log)

    # Without an operator broker account the page says what to set, and shows no buttons.
    with serve(engine, make_config(db_url, tmp_path / "plain")) as url:
        page.context.clear_cookies()
        sign_in(page, url, OPERATOR)
        page.goto(f"{url}/ops/devices/dev-a")
        assert page.locator("#commands button").count() == 0
        assert "commands.username" in page.locator("#commands").inner_text()
        assert page.locator("table.commands-log tbody tr").count() == 3  # the log is still shown
    engine.dispose()
