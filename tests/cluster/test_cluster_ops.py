"""Operating the fleet broker (issue 19's gaps): `accounts list`, `cmd` and `devices retire` with
broker.kind = rabbitmq, and a reading dated ahead of the bridge's clock refused through the AMQP source
as through the MQTT one. A real 2-node RabbitMQ cluster (two nodes: retained messages are per node, and
two start sooner than three on a busy machine), a real edge agent speaking MQTT 3.1.1, a real
`meter-bridge run --source amqp` worker, SQLite.

Needs rabbitmq-server (`make install` as root, or `sudo apt-get install rabbitmq-server`); skipped without.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner, Result
from cluster_helpers import add_devices, start_worker, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cloud_bridge.accounts.rabbitmq import RabbitMqAdmin, retired_topics
from cloud_bridge.cli import main
from cloud_bridge.rabbit_cluster import RabbitCluster
from cloud_bridge.store.engine import open_store
from cloud_bridge.store.tables import readings, refusals
from contract import topics
from contract.payloads import Reading, format_utc

sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))
from agent_helpers import AgentThread, edge_config

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]
CLUSTER_NODES = 2


def mqtt_client(port: int, user: str, password: str, client_id: str) -> tuple[mqtt.Client, list[Any]]:
    """A connected MQTT 3.1.1 client (clean session) and the messages it gets."""
    got: list[Any] = []
    codes: list[Any] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.on_connect = lambda _c, _u, _f, rc, _p=None: codes.append(rc)
    c.on_message = lambda _c, _u, m: got.append(m)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    assert wait_until(lambda: bool(codes), 20) and not codes[0].is_failure, codes
    return c, got


def retained_on(cluster: RabbitCluster, port: int, names: list[str]) -> dict[str, bytes]:
    """The retained messages one node holds for these exact topics (RabbitMQ 3.10 gives none to a
    wildcard subscription), asked as the admin."""
    c, got = mqtt_client(port, *cluster.admin_credentials, client_id=f"peek-{time.monotonic_ns()}")
    try:
        c.subscribe([(t, 1) for t in names])
        time.sleep(1.5)
    finally:
        c.disconnect()
        c.loop_stop()
    return {m.topic: bytes(m.payload) for m in got if m.retain and m.payload}


def _reading(device_id: str, seq: int, taken_at: datetime) -> bytes:
    return Reading.model_validate({
        "device_id": device_id, "seq": seq, "taken_at": format_utc(taken_at), "value": f"{seq:05d}.500",
        "status": "ok", "confidence": 0.97, "digits": [{"v": 1, "f": 1.2, "p": 0.97}], "model": "m"}).to_json_bytes()


def test_accounts_cmd_retire_and_clock_skew_on_rabbitmq(cluster: RabbitCluster, bridge_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    open_store(db_url).dispose()
    n0, n1 = cluster.nodes[0].mqtt_port, cluster.nodes[1].mqtt_port
    env = {**bridge_env, "BRIDGE_DATABASE_URL": db_url, "BRIDGE_MQTT__PORT": str(n1),
           "BRIDGE_COMMANDS__USERNAME": "ops", "BRIDGE_COMMANDS__PASSWORD_FILE": str(tmp_path / "ops.pw")}

    def cli(*args: str, **extra: str) -> Result:
        return CliRunner().invoke(main, list(args), env={**env, **extra})

    # --- accounts: made and listed through the management API, roles read back from the permissions ---
    assert cli("accounts", "add", "ops", "--role", "operator", "--password-out", str(tmp_path / "ops.pw")
               ).exit_code == 0
    assert cli("accounts", "add", "ha", "--role", "homeassistant").exit_code == 0
    pw = add_devices(env, db_url, ["rb-dev", "rb-clock", "rb-other"])
    admin_user, admin_pw = cluster.admin_credentials
    with RabbitMqAdmin(cluster.mgmt_url(), admin_user, admin_pw) as admin:
        admin.put_user("by-hand", "x-password")  # a user made outside meter-bridge: no role of ours
        # read everything, may publish nothing: a command from it is refused by the broker
        admin.set_permissions("by-hand", {"configure": ".*", "write": ".*", "read": ".*"},
                              {"exchange": "amq.topic", "write": "^$", "read": ".*"})
    (tmp_path / "by-hand.pw").write_text("x-password\n")
    r = cli("accounts", "list", "--json")
    assert r.exit_code == 0, r.output
    listed = {a["username"]: (a["role"], a["client_id"]) for a in json.loads(r.output)["accounts"]}
    assert listed == {admin_user: ("broker-admin", None), "bridge": ("bridge", None), "ops": ("operator", "ops"),
                      "ha": ("homeassistant", "ha"), "rb-dev": ("device", "rb-dev"),
                      "rb-clock": ("device", "rb-clock"), "rb-other": ("device", "rb-other"), "by-hand": ("-", None)}
    assert "operator" in cli("accounts", "list").output
    r = cli("accounts", "rotate", "ha", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["role"] == "homeassistant", r.output

    (tmp_path / "dev.pw").write_text(pw["rb-dev"] + "\n")
    cfg = edge_config(tmp_path, n0, device_id="rb-dev", interval_s=3600, telemetry_interval_s=3600,
                      mqtt={"protocol": "3.1.1", "password_file": str(tmp_path / "dev.pw")})
    worker = start_worker(env, db_url, 0, cluster.amqp_urls, tmp_path / "worker.log")
    agent = AgentThread(cfg).start()
    watcher, letters = mqtt_client(n1, *cluster.admin_credentials, client_id="deadletter-watch")
    watcher.subscribe(topics.BRIDGE_DEADLETTER, qos=1)
    try:
        # --- the agent's first reading goes through the AMQP worker and is acked over the cluster ---
        assert wait_until(lambda: agent.agent.outbox.last_seq() == 1 and agent.agent.outbox.depth() == 0, 90), \
            (tmp_path / "worker.log").read_text()[-3000:]

        # --- a reading dated ahead of the bridge's clock: refused, kept, dead-lettered, answered rejected ---
        clock, acks = mqtt_client(n0, "rb-clock", pw["rb-clock"], "rb-clock")
        clock.subscribe(topics.ack("rb-clock"), qos=1)
        time.sleep(0.5)
        now = datetime.now(UTC)
        ahead = _reading("rb-clock", 1, now + timedelta(hours=1))
        clock.publish(topics.reading("rb-clock"), ahead, qos=1).wait_for_publish(10)
        clock.publish(topics.reading("rb-clock"), _reading("rb-clock", 2, now - timedelta(minutes=1)),
                      qos=1).wait_for_publish(10)
        assert wait_until(lambda: len(acks) >= 2, 60), (tmp_path / "worker.log").read_text()[-3000:]
        answers = {a["seq"]: a for a in (json.loads(m.payload) for m in acks)}
        assert (answers[1]["state"], answers[1]["reason"]) == ("rejected", "future_time"), answers
        assert answers[2]["state"] == "stored", answers
        assert wait_until(lambda: any(json.loads(m.payload)["reason"] == "future_time" for m in letters), 30)
        clock.disconnect()
        clock.loop_stop()
        engine = open_store(db_url, create=False)
        with engine.connect() as conn:
            refused = conn.execute(select(refusals).where(refusals.c.device_id == "rb-clock")).one()
            kept = {r.seq for r in conn.execute(select(readings.c.seq).where(readings.c.device_id == "rb-clock"))}
        engine.dispose()
        assert refused.reason == "future_time" and bytes(refused.payload) == ahead and kept == {2}

        # --- cmd: the operator on node 1 (MQTT 3.1.1), the device on node 0 ---
        r = cli("cmd", "rb-dev", "capture", "--json", "--timeout", "30")
        assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "accepted", (r.output, r.stderr)
        assert wait_until(lambda: agent.agent.outbox.last_seq() == 2, 30), "capture did not take a reading"
        # an account that may not publish commands: RabbitMQ closes its connection, said as such
        r = cli("cmd", "rb-dev", "capture", BRIDGE_COMMANDS__USERNAME="by-hand",
                BRIDGE_COMMANDS__PASSWORD_FILE=str(tmp_path / "by-hand.pw"))
        assert r.exit_code == 1 and "closed the connection" in r.output, r.output
        log = json.loads(cli("cmd-log", "rb-dev", "--json").output)["commands"]
        assert [(c["name"], c["state"]) for c in log] == [("capture", "failed"), ("capture", "accepted")]

        # --- retire: retained topics cleared on every node, also where the device had been before ---
        stale, _ = mqtt_client(n1, "rb-dev", pw["rb-dev"], "rb-dev-earlier")  # as if it had been on node 1
        for t, p in ((topics.status("rb-dev"), b"online"), (topics.state("rb-dev"), b'{"value": "00001.000"}')):
            stale.publish(t, p, qos=1, retain=True).wait_for_publish(10)
        stale.disconnect()
        stale.loop_stop()
        other, _ = mqtt_client(n0, "rb-other", pw["rb-other"], "rb-other")
        other.publish(topics.status("rb-other"), b"online", qos=1, retain=True).wait_for_publish(10)
        other.disconnect()
        other.loop_stop()
        names = retired_topics("rb-dev")
        before0, before1 = retained_on(cluster, n0, names), retained_on(cluster, n1, names)
        assert {topics.status("rb-dev"), topics.state("rb-dev"), topics.ha_config("sensor", "rb-dev", "value")} \
            <= set(before0), before0
        assert set(before1) == {topics.status("rb-dev"), topics.state("rb-dev")}, before1

        r = cli("devices", "retire", "rb-dev", "--json")
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["not_cleared_on"] == [] and set(names) == set(out["cleared"])
        time.sleep(1.0)  # anything the closed connection still sent (its last will) has landed
        assert retained_on(cluster, n0, names) == {}
        assert retained_on(cluster, n1, names) == {}
        assert retained_on(cluster, n0, [topics.status("rb-other")]) == {topics.status("rb-other"): b"online"}

        # a node that cannot be reached: the account is revoked all the same and the node is named
        r = cli("devices", "retire", "rb-other", "--json",
                BRIDGE_BROKER__MQTT_NODES=json.dumps(["127.0.0.1:1", f"127.0.0.1:{n0}", f"127.0.0.1:{n1}"]))
        assert r.exit_code == 0, (r.output, r.stderr)
        out = json.loads(r.stdout)
        assert [w.split(":")[:2] for w in out["not_cleared_on"]] == [["127.0.0.1", "1"]], out
        assert "not cleared on 127.0.0.1:1" in r.stderr
        assert retained_on(cluster, n0, [topics.status("rb-other")]) == {}
        with RabbitMqAdmin(cluster.mgmt_url(), admin_user, admin_pw) as admin:
            assert admin.get_user("rb-other") is None and admin.get_user("rb-dev") is None
    finally:
        agent.stop()
        watcher.disconnect()
        watcher.loop_stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def test_roles_are_read_back_from_topic_permissions() -> None:
    """No cluster needed: each role's permissions name that role, a device's its own id only."""
    from cloud_bridge.accounts.rabbitmq import role_of, topic_permissions
    from cloud_bridge.accounts.roles import ROLE_ACLS, device_acls

    assert role_of("d-1", [], topic_permissions(device_acls("d-1"))) == "device"
    assert role_of("d-2", [], topic_permissions(device_acls("d-1"))) == "-"  # another device's rights
    for role in ("operator", "homeassistant", "bridge"):
        assert role_of("someone", [], topic_permissions(ROLE_ACLS[role])) == role
    assert role_of("root", ["administrator"], None) == "broker-admin"
    assert role_of("nobody", [], None) == "-"
