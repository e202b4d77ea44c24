"""`meter-bridge accounts …` against a real Mosquitto (dynamic security): each role can do what it is for
and nothing else; list, rotate and remove act on the running broker at once."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner, Result
from paho.mqtt.reasoncodes import ReasonCode

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.cli import main

pytestmark = pytest.mark.mosquitto
NOT_AUTHORISED = 0x87


class Probe:
    """One MQTT 5 login; subscribe()/publish() return the broker's reason code."""

    def __init__(self, port: int, user: str, password: str, client_id: str | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or user, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        self.c.reconnect_delay_set(0.1, 0.2)  # type: ignore[arg-type]
        self.acks: dict[int, Any] = {}
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self._ready = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.acks.__setitem__(mid, rcs[0])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self._ready.wait(5)

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        self.connack = rc
        self._ready.set()
        if rc.is_failure:
            c.disconnect()

    @property
    def ok(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def _wait(self, mid: int | None) -> int:
        deadline = time.monotonic() + 5
        while mid is not None and mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mid is not None and mid in self.acks, "no answer from the broker"
        return int(self.acks[mid].value)

    def subscribe(self, topic: str) -> int:
        deadline = time.monotonic() + 5
        while not self.c.is_connected() and time.monotonic() < deadline:  # after a refused publish
            time.sleep(0.02)
        return self._wait(self.c.subscribe(topic, qos=1)[1])

    def publish(self, topic: str) -> int:
        return self._wait(self.c.publish(topic, b"x", qos=1).mid)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def cli(auth_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for k in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(k, raising=False)
    env = {"BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}", "BRIDGE_MQTT__PORT": str(auth_broker.port),
           "BRIDGE_BROKER__ADMIN_PASSWORD_FILE": str(auth_broker.admin_password_file)}

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env)

    run.broker = auth_broker  # type: ignore[attr-defined]
    run.tmp = tmp_path  # type: ignore[attr-defined]
    return run


def _add(cli: Any, name: str, role: str) -> str:
    r = cli("accounts", "add", name, "--role", role, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["username"] == name and len(out["password"]) >= 20
    return str(out["password"])


# (role, topics it may subscribe to, topics it may not, topics it may publish, topics it may not)
RIGHTS = {
    "operator": (
        ["meters/#", "meters/+/cmd/+/result", "bridge/#", "homeassistant/#"],
        ["$share/bridge/meters/+/reading", "$CONTROL/dynamic-security/#", "#"],
        ["meters/dev-a/cmd/capture", "meters/dev-a/cmd/set-value"],
        ["meters/dev-a/reading", "meters/dev-a/ack", "meters/dev-a/status", "meters/dev-a/cmd/capture/result",
         "bridge/fleet", "homeassistant/status", "homeassistant/sensor/dev-a/water/config"]),
    "homeassistant": (
        ["homeassistant/#", "homeassistant/status", "meters/+/state", "meters/+/status", "meters/dev-a/telemetry"],
        ["meters/+/reading", "meters/+/ack", "meters/#", "bridge/#", "$share/bridge/meters/+/reading"],
        ["homeassistant/status", "meters/dev-a/cmd/capture", "meters/dev-a/cmd/reload"],
        ["meters/dev-a/cmd/set-value", "meters/dev-a/state", "homeassistant/sensor/dev-a/water/config",
         "meters/dev-a/reading"]),
    "bridge": (
        ["$share/bridge/meters/+/reading", "meters/+/status", "meters/+/telemetry", "bridge/#"],
        ["meters/+/cmd/+", "meters/+/ack", "homeassistant/#", "$share/other/meters/+/reading"],
        ["meters/dev-a/ack", "bridge/fleet", "bridge/devices/dev-a/state"],
        ["meters/dev-a/reading", "meters/dev-a/cmd/capture", "homeassistant/status", "meters/dev-a/state"]),
}


@pytest.mark.parametrize("role", list(RIGHTS))
def test_each_role_can_do_its_job_and_nothing_else(cli: Any, role: str) -> None:
    name = "bridge" if role == "bridge" else f"{role[:2]}-1"
    password = _add(cli, name, role)
    sub_ok, sub_no, pub_ok, pub_no = RIGHTS[role]
    p = Probe(cli.broker.port, name, password, client_id="bridge-0" if role == "bridge" else None)
    try:
        assert p.ok, p.connack
        for t in sub_ok:
            assert p.subscribe(t) < 0x80, f"{role} could not subscribe to {t}"
        for t in sub_no:
            assert p.subscribe(t) == NOT_AUTHORISED, f"{role} could subscribe to {t}"
        for t in pub_ok:
            assert p.publish(t) < 0x80, f"{role} could not publish on {t}"
        for t in pub_no:
            assert p.publish(t) == NOT_AUTHORISED, f"{role} could publish on {t}"
    finally:
        p.close()
    if role != "bridge":  # tied to its own client id
        other = Probe(cli.broker.port, name, password, client_id=f"{name}-2")
        assert not other.ok
        other.close()


def test_list_rotate_remove(cli: Any) -> None:
    op_pw = _add(cli, "alice", "operator")
    ha_pw = _add(cli, "homeassistant", "homeassistant")
    listed = json.loads(cli("accounts", "list", "--json").output)["accounts"]
    assert {(a["username"], a["role"], a["client_id"]) for a in listed} >= {
        ("alice", "operator", "alice"), ("homeassistant", "homeassistant", "homeassistant")}
    assert "alice" in cli("accounts", "list").output

    pw_file = cli.tmp / "alice.pw"
    pw_file.write_text("old\n")
    pw_file.chmod(0o644)
    r = cli("accounts", "rotate", "alice", "--json", "--password-out", str(pw_file))
    assert r.exit_code == 0, r.output
    new_pw = json.loads(r.output)["password"]
    assert new_pw != op_pw and pw_file.read_text().strip() == new_pw and pw_file.stat().st_mode & 0o777 == 0o600
    old = Probe(cli.broker.port, "alice", op_pw)
    assert not old.ok
    old.close()
    live = Probe(cli.broker.port, "alice", new_pw)
    assert live.ok

    r = cli("accounts", "remove", "alice")
    assert r.exit_code == 0, r.output
    assert live.disconnected.wait(5), "a removed account stays connected"
    live.close()
    gone = Probe(cli.broker.port, "alice", new_pw)
    assert not gone.ok
    gone.close()
    ha = Probe(cli.broker.port, "homeassistant", ha_pw)
    assert ha.ok
    ha.close()
    assert "alice" not in [a["username"] for a in json.loads(cli("accounts", "list", "--json").output)["accounts"]]


@pytest.mark.parametrize(("args", "message"), [
    (("accounts", "add", "bridge-1", "--role", "operator"), "reserved"),
    (("accounts", "add", "broker-admin", "--role", "operator"), "reserved"),
    (("accounts", "add", "bad name", "--role", "operator"), "not valid"),
    (("accounts", "add", "x", "--role", "root"), "Invalid value for '--role'"),
    (("accounts", "remove", "nobody"), "no broker account"),
    (("accounts", "rotate", "nobody"), "no broker account"),
])
def test_clear_errors(cli: Any, args: tuple[str, ...], message: str) -> None:
    r = cli(*args)
    assert r.exit_code != 0 and message in r.output, r.output


def test_existing_account_and_missing_admin_file_are_refused(cli: Any, tmp_path: Path) -> None:
    _add(cli, "alice", "operator")
    r = cli("accounts", "add", "alice", "--role", "homeassistant")
    assert r.exit_code == 1 and "exists already" in r.output and "rotate" in r.output
    r = CliRunner().invoke(main, ["accounts", "list"], env={
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}", "BRIDGE_MQTT__PORT": str(cli.broker.port)})
    assert r.exit_code == 1 and "broker.admin_password_file is not set" in r.output


def test_broker_init_writes_secret_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    dynsec, pw = tmp_path / "dynsec.json", tmp_path / "admin.pw"
    pw.write_text("")
    pw.chmod(0o644)
    r = CliRunner().invoke(main, ["broker", "init", "--dynsec-file", str(dynsec), "--admin-password-out", str(pw)])
    assert r.exit_code == 0, r.output
    assert dynsec.stat().st_mode & 0o777 == 0o600 and pw.stat().st_mode & 0o777 == 0o600
    assert json.loads(dynsec.read_text())["clients"][0]["username"] == "broker-admin"
    r = CliRunner().invoke(main, ["broker", "init", "--dynsec-file", str(dynsec), "--admin-password-out", str(pw)])
    assert r.exit_code == 1 and "exists already" in r.output


def _old_passwd_line(user: str, password: str) -> str:
    """An entry as `devices add` wrote it before dynamic security (Mosquitto 2's `$7$` format)."""
    import base64
    import hashlib

    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_upgrade_imports_the_old_password_file(tmp_path: Path) -> None:
    """An installation on password_file + acl_file keeps every password: no device needs a visit."""
    old = tmp_path / "passwd"
    old.write_text("\n".join([_old_passwd_line("pi-1", "pi-1-pw"), _old_passwd_line("bridge", "br-pw"),
                              _old_passwd_line("operator", "op-pw"), _old_passwd_line("bridge-7", "x"),
                              "broken:plaintext"]) + "\n")
    work = tmp_path / "broker"
    work.mkdir()
    r = CliRunner().invoke(main, ["broker", "init", "--dynsec-file", str(work / "dynamic-security.json"),
                                  "--admin-password-out", str(work / "admin-password"), "--import-passwd", str(old)])
    assert r.exit_code == 0, r.output
    assert "not imported: line 4" in r.output and "reserved" in r.output and "line 5 (broken)" in r.output
    with MosquittoBroker(work, auth=True) as broker:
        dev = Probe(broker.port, "pi-1", "pi-1-pw")
        bridge = Probe(broker.port, "bridge", "br-pw", client_id="bridge-0")
        op = Probe(broker.port, "operator", "op-pw")
        try:
            assert dev.ok and bridge.ok and op.ok
            assert dev.subscribe("$share/bridge/meters/+/reading") == NOT_AUTHORISED
            assert bridge.subscribe("$share/bridge/meters/+/reading") < 0x80
            assert op.publish("meters/pi-1/cmd/capture") < 0x80
            assert dev.publish("meters/pi-1/reading") < 0x80
            assert dev.publish("meters/pi-2/reading") == NOT_AUTHORISED
        finally:
            for p in (dev, bridge, op):
                p.close()
        thief = Probe(broker.port, "pi-1", "pi-1-pw", client_id="bridge-0")
        assert not thief.ok
        thief.close()
        with broker.admin() as admin:  # and the admin account manages them as any other
            assert {a["username"] for a in admin.list_clients()} == {"broker-admin", "pi-1", "bridge", "operator"}
