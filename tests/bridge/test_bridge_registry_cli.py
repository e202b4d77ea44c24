"""Installer commands through the real CLI (CliRunner), and a device account on a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner, Result
from paho.mqtt.enums import CallbackAPIVersion

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.cli import main
from cloud_bridge.registry.broker_accounts import DEVICE_PATTERNS, read_users, verify_password


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for k in ("DATABASE_URL", "BROKER__PASSWORD_FILE", "BROKER__ACL_FILE"):
        monkeypatch.delenv(f"BRIDGE_{k}", raising=False)
    env = {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_BROKER__PASSWORD_FILE": str(tmp_path / "broker" / "passwd"),
           "BRIDGE_BROKER__ACL_FILE": str(tmp_path / "broker" / "acl")}
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    assert run("db", "upgrade").exit_code == 0  # only `db upgrade` creates a database
    run.tmp = tmp_path  # type: ignore[attr-defined]
    return run


def test_add_bind_rebind_list(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("devices", "add", "kitchen-1", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    users = read_users(cli.tmp / "broker" / "passwd")
    assert verify_password(out["password"], users["kitchen-1"])
    acl = (cli.tmp / "broker" / "acl").read_text()
    assert all(p in acl for p in DEVICE_PATTERNS)

    r = cli("bind", "kitchen-1", "--meter", "SN-1", "--kind", "cold", "--payer", "0123456789", "--address", "Flat 1")
    assert r.exit_code == 0 and "******6789" in r.output, r.output
    r = cli("rebind", "kitchen-1", "--meter", "SN-2", "--kind", "hot", "--payer", "0123456789")
    assert r.exit_code == 0 and "closed binding" in r.output, r.output

    listed = json.loads(cli("devices", "list", "--json").output)["devices"]
    assert [d["device_id"] for d in listed] == ["kitchen-1"]
    assert listed[0]["binding"]["meter_serial"] == "SN-2" and listed[0]["binding"]["payer_code"] == "******6789"
    history = json.loads(cli("devices", "show", "kitchen-1", "--json", "--show-payer").output)["bindings"]
    assert [(b["meter_serial"], b["valid_to"] is None) for b in history] == [("SN-1", False), ("SN-2", True)]
    assert history[0]["payer_code"] == "0123456789"
    table = cli("devices", "list").output
    assert "kitchen-1" in table and "0123456789" not in table


@pytest.mark.parametrize(("args", "message"), [
    (("devices", "add", "bad id"), "is not valid"),
    (("devices", "add", "bridge"), "reserved"),
    (("bind", "ghost", "--meter", "S", "--kind", "cold", "--payer", "0123456789", "--address", "A"), "unknown device"),
    (("bind", "dev-1", "--meter", "S", "--kind", "cold", "--payer", "012345678", "--address", "A"), "10 digits"),
    (("bind", "dev-1", "--meter", "S", "--payer", "0123456789", "--address", "A"), "--kind"),
    (("bind", "dev-1", "--meter", "S", "--kind", "cold", "--payer", "0123456789"), "--address"),
    (("rebind", "dev-1", "--meter", "S", "--payer", "0123456789"), "not bound"),
])
def test_clear_errors(cli, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("devices", "add", "dev-1").exit_code == 0
    r = cli(*args)
    assert r.exit_code != 0
    assert message in r.output, r.output


def test_double_add_and_double_bind_refused(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("devices", "add", "d").exit_code == 0
    r = cli("devices", "add", "d")
    assert r.exit_code == 1 and "already exists" in r.output
    assert cli("bind", "d", "--meter", "M", "--kind", "cold", "--payer", "1111111111", "--address", "A").exit_code == 0
    r = cli("bind", "d", "--meter", "M2", "--kind", "cold", "--payer", "1111111111")
    assert r.exit_code == 1 and "already bound" in r.output and "rebind" in r.output
    assert cli("devices", "add", "e").exit_code == 0
    r = cli("bind", "e", "--meter", "M", "--payer", "1111111111")
    assert r.exit_code == 1 and "bound to device d" in r.output


@pytest.mark.mosquitto
def test_device_account_works_on_the_broker_after_reload(tmp_path: Path) -> None:
    """`devices add` writes what Mosquitto reads: the device logs in with its one-time password and may
    publish only under its own topics (the project's ACL)."""
    from click.testing import CliRunner

    broker_dir = tmp_path / "b"
    broker = MosquittoBroker(broker_dir, auth=True).start()
    try:
        env = {"BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
               "BRIDGE_BROKER__PASSWORD_FILE": str(broker.password_file),
               "BRIDGE_BROKER__ACL_FILE": str(broker.acl_file)}
        assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
        r = CliRunner().invoke(main, ["devices", "add", "pi-7", "--json"], env=env, catch_exceptions=False)
        password = json.loads(r.output)["password"]
        broker.reload()

        def connect(pw: str) -> tuple[mqtt.Client, int]:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pi-7", protocol=mqtt.MQTTv5)
            c.username_pw_set("pi-7", pw)
            rc: list[int] = []
            c.on_connect = lambda _c, _u, _f, code, _p: rc.append(code.value)
            c.connect("127.0.0.1", broker.port)
            for _ in range(100):
                c.loop(0.05)
                if rc:
                    break
            return c, rc[0]

        bad, rc = connect("wrong")
        assert rc != 0
        bad.disconnect()
        good, rc = connect(password)
        assert rc == 0
        acks: list[int] = []
        good.on_publish = lambda _c, _u, _mid, code, _p: acks.append(code.value)
        good.publish("meters/pi-7/reading", b"{}", qos=1)
        good.publish("meters/other/reading", b"{}", qos=1)
        for _ in range(100):
            good.loop(0.05)
            if len(acks) == 2:
                break
        assert acks[0] in (0, 0x10) and acks[1] == 0x87  # own topic: ok (0x10: no subscriber); other: refused
        good.disconnect()
    finally:
        broker.stop()
