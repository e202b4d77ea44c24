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


def bridge_env(db_url: str, broker: MosquittoBroker) -> dict[str, str]:
    """A `meter-bridge` that manages accounts on this broker through its admin account."""
    return {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_MQTT__PORT": str(broker.port),
            "BRIDGE_BROKER__ADMIN_PASSWORD_FILE": str(broker.admin_password_file)}


@pytest.fixture
def cli(db_url: str, tmp_path: Path, auth_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for k in [k for k in __import__("os").environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(k, raising=False)
    env = bridge_env(db_url, auth_broker)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    assert run("db", "upgrade").exit_code == 0  # only `db upgrade` creates a database
    run.tmp = tmp_path  # type: ignore[attr-defined]
    run.broker = auth_broker  # type: ignore[attr-defined]
    return run


def test_add_bind_rebind_list(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("devices", "add", "kitchen-1", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["username"] == out["client_id"] == "kitchen-1" and len(out["password"]) >= 20
    with cli.broker.admin() as admin:
        assert admin.get_client("kitchen-1")["clientid"] == "kitchen-1"

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
    (("devices", "add", "bridge-0"), "reserved"),
    (("devices", "add", "operator"), "reserved"),
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
def test_device_account_works_on_the_broker_at_once(cli) -> None:  # type: ignore[no-untyped-def]
    """`devices add` makes the account on the running broker: the device logs in with its one-time
    password, no reload, and may publish only under its own topics."""
    password = json.loads(cli("devices", "add", "pi-7", "--json").output)["password"]
    port = cli.broker.port

    def connect(pw: str, client_id: str = "pi-7") -> tuple[mqtt.Client, int]:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set("pi-7", pw)
        rc: list[int] = []
        c.on_connect = lambda _c, _u, _f, code, _p: rc.append(code.value)
        c.connect("127.0.0.1", port)
        for _ in range(100):
            c.loop(0.05)
            if rc:
                break
        return c, rc[0]

    for pw, client_id in (("wrong", "pi-7"), (password, "pi-8")):
        bad, rc = connect(pw, client_id)
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

    # --new-password: the old one stops working, the new one works; --password-out ends mode 600
    out = cli.tmp / "pi-7.pw"
    out.write_text("old\n")
    out.chmod(0o644)
    r = cli("devices", "add", "pi-7", "--new-password", "--password-out", str(out), "--json")
    assert r.exit_code == 0, r.output
    new = json.loads(r.output)["password"]
    assert out.read_text().strip() == new and (out.stat().st_mode & 0o777) == 0o600
    old, rc = connect(password)
    assert rc != 0
    old.disconnect()
    fresh, rc = connect(new)
    assert rc == 0
    fresh.disconnect()


def test_devices_add_without_a_broker_adds_nothing(db_url: str, tmp_path: Path) -> None:
    from cloud_bridge.broker import free_port

    env = {"BRIDGE_DATABASE_URL": db_url, "BRIDGE_MQTT__PORT": str(free_port()),
           "BRIDGE_BROKER__ADMIN_PASSWORD_FILE": str(tmp_path / "nope")}
    (tmp_path / "nope").write_text("x\n")
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    r = CliRunner().invoke(main, ["devices", "add", "d1"], env=env)
    assert r.exit_code == 1 and "cannot reach the broker" in r.output and "start it" in r.output, r.output
    r = CliRunner().invoke(main, ["devices", "list", "--json"], env=env)
    assert json.loads(r.output)["devices"] == []
