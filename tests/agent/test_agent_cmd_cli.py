"""Issue 17 item 3: `meter-bridge cmd` against a running agent on a real Mosquitto with accounts on: the
command goes out with the operator account, the device answers on meters/{id}/cmd/{name}/result, and
every command (sent, answered, refused, blocked, unanswered) is in the audit log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentThread
from click.testing import CliRunner, Result

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.cli import main
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle
from cloud_bridge.store.engine import open_store
from cloud_bridge.store.tables import utcnow
from contract.payloads import Reading
from edge.config import load_edge_config

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def bridge(auth_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for k in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(k, raising=False)
    db_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    env = {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_MQTT__PORT": str(auth_broker.port),
           "BRIDGE_BROKER__ADMIN_PASSWORD_FILE": str(auth_broker.admin_password_file),
           "BRIDGE_COMMANDS__USERNAME": "ops", "BRIDGE_COMMANDS__PASSWORD_FILE": str(tmp_path / "ops.pw")}

    def run(*args: str, extra: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env={**env, **(extra or {})})

    assert run("db", "upgrade").exit_code == 0
    made = run("accounts", "add", "ops", "--role", "operator", "--password-out", str(tmp_path / "ops.pw"))
    assert made.exit_code == 0, made.output
    run.db_url = db_url  # type: ignore[attr-defined]
    return run


def _store_ok_readings(db_url: str, device_id: str, values: list[str]) -> None:
    """Readings the bridge stored, one an hour from 2026-11-20T10:00Z, that corroborate each other."""
    engine = open_store(db_url, create=False)
    with engine.begin() as conn:
        for i, value in enumerate(values):
            r = Reading.model_validate({"device_id": device_id, "seq": 1000 + i,
                                        "taken_at": f"2026-11-20T{10 + i:02d}:00:00Z", "value": value, "status": "ok",
                                        "reason": None, "confidence": 0.99, "model": "m",
                                        "digits": [{"v": int(c), "f": float(c), "p": 0.99} for c in value if c != "."]})
            handle(conn, Message(f"meters/{device_id}/reading", r.to_json_bytes()), utcnow())
    engine.dispose()


def _cmd(bridge: Any, *args: str) -> tuple[int, dict[str, Any]]:
    r = bridge("cmd", *args, "--json", "--by", "installer-1")
    assert r.output.strip(), r.output
    return r.exit_code, json.loads(r.output.strip().splitlines()[-1])


def test_cmd_is_answered_checked_and_audit_logged(bridge: Any, auth_broker: MosquittoBroker, tmp_path: Path) -> None:
    added = json.loads(bridge("devices", "add", "dev-a", "--json").output)
    (tmp_path / "dev.pw").write_text(added["password"] + "\n")
    assert bridge("bind", "dev-a", "--meter", "SN-1", "--kind", "cold", "--payer", "0123456789",
                  "--address", "Flat 1").exit_code == 0
    conf = tmp_path / "edge.toml"
    body = (f'device_id = "dev-a"\nstate_dir = "{tmp_path / "state"}"\ninterval_s = 3600\n'
            f'[mqtt]\nport = {auth_broker.port}\npassword_file = "{tmp_path / "dev.pw"}"\n'
            "reconnect_min_s = 1\nreconnect_max_s = 1\n")
    conf.write_text(body)
    at = AgentThread(load_edge_config(conf), config_path=conf).start()
    agent = at.agent
    try:
        deadline = time.monotonic() + 10
        while (agent.outbox.last_seq() or 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # subscribed to its commands

        code, out = _cmd(bridge, "dev-a", "capture")
        assert (code, out["state"]) == (0, "accepted"), out
        deadline = time.monotonic() + 10
        while (agent.outbox.last_seq() or 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.outbox.last_seq() == 2, "capture did not take a reading"

        # the bridge holds no reading of the meter: nothing to check it against, so only with --confirm
        code, out = _cmd(bridge, "dev-a", "set-value", "00200.000", "--at", "2026-11-21T09:00:00+03:00")
        assert (code, out["state"]) == (5, "blocked") and "--confirm" in out["reason"], out
        code, out = _cmd(bridge, "dev-a", "set-value", "00200.000", "--at", "2026-11-21T09:00:00+03:00", "--confirm")
        assert (code, out["state"]) == (0, "done"), out
        assert out["args"] == {"value": "00200.000", "at": "2026-11-21T06:00:00Z", "confirmed": True}
        assert (agent.outbox.reading_state() or {}).get("previous") == "00200.000"

        # the settlement checks (check_correction): not below what the meter showed before; and the basics
        _store_ok_readings(bridge.db_url, "dev-a", ["00300.000", "00300.010", "00300.020", "00300.030"])
        for args, reason in ((("00250.000", "--at", "2026-11-20T15:00:00Z", "--confirm"), "below"),
                             (("abc",), "decimal string"),
                             (("00400.000", "--at", "1999-12-31T00:00:00Z"), "outside 2000-01-01"),
                             (("00300.040", "--at", "2026-11-20T14:00:00Z", "--confirm"), "")):
            code, out = _cmd(bridge, "dev-a", "set-value", *args)
            if not reason:  # what the meter's readings allow goes through
                assert (code, out["state"]) == (0, "done"), out
                continue
            assert (code, out["state"]) == (5, "blocked") and reason in out["reason"], out
            assert (agent.outbox.reading_state() or {}).get("previous") == "00200.000", "a blocked value reached it"
        assert (agent.outbox.reading_state() or {}).get("previous") == "00300.040"

        conf.write_text(body.replace("interval_s = 3600", "interval_s = -1"))
        code, out = _cmd(bridge, "dev-a", "reload")
        assert (code, out["state"]) == (3, "refused") and "interval_s" in out["reason"], out
    finally:
        at.stop()

    code, out = _cmd(bridge, "dev-a", "capture", "--timeout", "1")
    assert (code, out["state"]) == (4, "no_answer") and "online" in out["reason"], out

    log = json.loads(bridge("cmd-log", "dev-a", "--json").output)["commands"]
    assert [(c["name"], c["state"]) for c in log] == [
        ("capture", "no_answer"), ("reload", "refused"), ("set-value", "done"), ("set-value", "blocked"),
        ("set-value", "blocked"), ("set-value", "blocked"), ("set-value", "done"), ("set-value", "blocked"),
        ("capture", "accepted")]
    assert all(c["requested_by"] == "installer-1 (via ops)" for c in log)
    assert all(c["answered_at"] for c in log if c["state"] in ("done", "accepted", "refused"))
    assert "9 command(s)" in bridge("cmd-log").output


def test_cmd_refuses_what_it_cannot_send(bridge: Any) -> None:
    r = bridge("cmd", "ghost", "capture")
    assert r.exit_code == 1 and "unknown device ghost" in r.output, r.output
    assert bridge("devices", "add", "dev-b").exit_code == 0
    r = bridge("cmd", "dev-b", "set-value")
    assert r.exit_code == 1 and "needs a VALUE" in r.output, r.output
    r = bridge("cmd", "dev-b", "capture", "--at", "2026-11-21T09:00:00Z")
    assert r.exit_code == 1 and "--at goes with set-value" in r.output, r.output
    r = bridge("cmd", "dev-b", "set-value", "1.0", "--at", "yesterday")
    assert r.exit_code == 1 and "not a time with a zone" in r.output, r.output
    r = bridge("cmd", "dev-b", "capture", extra={"BRIDGE_COMMANDS__USERNAME": "", "BRIDGE_COMMANDS__PASSWORD_FILE": ""})
    assert r.exit_code == 1 and "commands.username" in r.output, r.output
    assert bridge("devices", "retire", "dev-b").exit_code == 0
    r = bridge("cmd", "dev-b", "capture")
    assert r.exit_code == 1 and "retired" in r.output, r.output


@pytest.mark.parametrize(("payload", "expect_id", "refused"), [
    (b'{"id": "abc-1"}', "abc-1", None),
    (b"", None, None),
    (b'{"id": "bad id!"}', None, "id must match"),
    (b'{"id": 7}', None, "id must match"),
])
def test_a_command_carries_an_id_for_its_answer(payload: bytes, expect_id: str | None, refused: str | None) -> None:
    from edge.transport.commands import Command, Refused, parse_command

    got = parse_command("dev-a", "meters/dev-a/cmd/capture", payload)
    if refused:
        assert isinstance(got, Refused) and refused in got.reason
    else:
        assert isinstance(got, Command) and got.id == expect_id
    sv = parse_command("dev-a", "meters/dev-a/cmd/set-value", b'{"value": "00012.500", "id": "x1"}')
    assert isinstance(sv, Command) and sv.id == "x1" and sv.set_value is not None
