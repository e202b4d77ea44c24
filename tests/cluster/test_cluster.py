"""The fleet broker for real: a 3-node RabbitMQ cluster (deploy/rabbitmq/), devices on MQTT 3.1.1 with
their own accounts made by `meter-bridge devices add`, bridge workers consuming the quorum queue over
AMQP (`meter-bridge run --source amqp`), a node and a worker killed with SIGKILL mid-stream. Every
reading is stored exactly once and every device gets its acks, also those a bridge publishes on a channel
opened just after the node died (RabbitMQ 3.10.8 lost those for devices whose session was a quorum queue
led from that node: docs/operate-city-scale.md, "A broker node dies").

Needs rabbitmq-server (`make install` as root, or `sudo apt-get install rabbitmq-server`); skipped without.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
from click.testing import CliRunner
from cluster_helpers import SimDevice, add_devices, reading, start_worker, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, func, select

from cloud_bridge.accounts.rabbitmq import RabbitMqAdmin
from cloud_bridge.cli import main
from cloud_bridge.rabbit_cluster import Node, RabbitCluster
from cloud_bridge.store.engine import open_store
from cloud_bridge.store.tables import counters, readings
from contract import topics
from contract.payloads import Ack

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def consumers(cluster: RabbitCluster, queue: str) -> int:
    r = cluster.api("GET", f"/api/queues/%2F/{queue}")
    return int(r.json().get("consumers") or 0) if r.status_code == 200 else 0


def queue_state(cluster: RabbitCluster, queue: str) -> str:
    r = cluster.api("GET", f"/api/queues/%2F/{queue}")
    if r.status_code == 404:
        return f"{queue}: none"
    q = r.json()
    keys = ("type", "durable", "node", "consumers", "messages", "messages_ready", "messages_unacknowledged",
            "leader", "members", "online")
    return f"{queue}: {({k: q.get(k) for k in keys if k in q})}"


def session_queues(cluster: RabbitCluster, device_id: str) -> dict[str, dict[str, Any] | None]:
    """The MQTT plugin's queues for a device's subscriptions (qos0: per connection; qos1: a kept session)."""
    out: dict[str, dict[str, Any] | None] = {}
    for kind in ("qos0", "qos1"):
        r = cluster.api("GET", f"/api/queues/%2F/mqtt-subscription-{device_id}{kind}")
        out[kind] = r.json() if r.status_code == 200 else None
    return out


PROBE_SEQ = 100_000  # an ack no reading asked for: only the probe below sends it


def ack_from_a_new_channel(cluster: RabbitCluster, node: Node, device_ids: list[str]) -> None:
    """Acks published on an AMQP channel opened just after a node died, as a bridge worker that lost its node
    opens one. RabbitMQ 3.10.8 drops, for the life of such a channel, every message it routes to a quorum
    queue whose leader was on the dead node (the channel's first enqueue asks the dead node for the queue's
    version and gives up): with a quorum queue per device session, those devices never got these acks."""
    user, password = cluster.admin_credentials
    params = pika.URLParameters(node.amqp_url)
    params.credentials = pika.PlainCredentials(user, password)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        for d in device_ids:
            ch.basic_publish("amq.topic", f"meters.{d}.ack", Ack(seq=PROBE_SEQ, state="duplicate").to_json_bytes(),
                             pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(readings)).scalar_one())


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    open_store(url).dispose()
    yield url


@pytest.fixture
def pg_store_url(postgres_url: str) -> Iterator[str]:
    open_store(postgres_url).dispose()
    yield postgres_url


def test_device_accounts_reach_only_their_own_topics(cluster: RabbitCluster, bridge_env: dict[str, str],
                                                     store_url: str) -> None:
    """`devices add` on RabbitMQ: the device publishes its readings and gets its acks; another device's
    topics are closed to it; `devices retire` takes the account away."""
    pw = add_devices(bridge_env, store_url, ["acct-a", "acct-b"])
    got: list[str] = []
    closed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acct-a", protocol=mqtt.MQTTv311, clean_session=False)
    c.username_pw_set("acct-a", pw["acct-a"])
    c.on_message = lambda _c, _u, m: got.append(m.topic)
    c.on_disconnect = lambda *_a: closed.set()
    c.connect("127.0.0.1", cluster.nodes[1].mqtt_port, keepalive=60)
    c.loop_start()
    try:
        assert c.subscribe(topics.ack("acct-a"), qos=1)[0] == 0
        # Its own reading topic is open: the broker answers the QoS 1 publish.
        info = c.publish(topics.reading("acct-a"), reading("acct-a", 1).to_json_bytes(), qos=1)
        info.wait_for_publish(30)
        assert info.is_published() and not closed.is_set()
        # Another device's topic is not: RabbitMQ (MQTT 3.1.1) closes the connection.
        c.publish(topics.reading("acct-b"), reading("acct-b", 1).to_json_bytes(), qos=1)
        assert closed.wait(30), "a device published on another device's topic"
    finally:
        c.disconnect()
        c.loop_stop()
    # A wrong password is refused at CONNECT.
    bad = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acct-b", protocol=mqtt.MQTTv311)
    bad.username_pw_set("acct-b", "not-the-password")
    codes: list[Any] = []
    bad.on_connect = lambda _c, _u, _f, rc, _p=None: codes.append(rc)
    bad.connect("127.0.0.1", cluster.nodes[2].mqtt_port)
    bad.loop_start()
    assert wait_until(lambda: bool(codes), 30)
    bad.loop_stop()
    assert codes[0].is_failure and codes[0].value in (0x86, 0x87), codes
    # Retire: the account goes and its connections are closed.
    r = CliRunner().invoke(main, ["devices", "retire", "acct-b", "--json"],
                           env={**bridge_env, "BRIDGE_DATABASE_URL": store_url})
    assert r.exit_code == 0, r.output
    user, password = cluster.admin_credentials
    with RabbitMqAdmin(cluster.mgmt_url(), user, password) as admin:
        assert admin.get_user("acct-b") is None
        assert admin.get_user("acct-a") is not None


def test_permissions_are_the_mqtt_acls_as_routing_key_patterns() -> None:
    """No cluster needed: the regular expressions a device account gets match its own topics only."""
    import re

    from cloud_bridge.accounts.rabbitmq import filter_regex, topic_permissions
    from cloud_bridge.accounts.roles import device_acls

    assert re.fullmatch(filter_regex("meters/+/reading"), "meters.d-1.reading")
    assert re.fullmatch(filter_regex("meters/+/reading"), "meters.*.reading")  # a subscription's own wildcard
    assert not re.fullmatch(filter_regex("meters/+/reading"), "meters.a.b.reading")
    assert re.fullmatch(filter_regex("bridge/#"), "bridge") and re.fullmatch(filter_regex("bridge/#"), "bridge.x.y")
    perms = topic_permissions(device_acls("dev-7"))
    write, read = re.compile(perms["write"]), re.compile(perms["read"])
    assert write.fullmatch("meters.dev-7.reading") and write.fullmatch("meters.dev-7.cmd.capture.result")
    assert write.fullmatch("homeassistant.sensor.dev-7.value.config")
    assert not write.fullmatch("meters.dev-8.reading") and not write.fullmatch("meters.dev-7.ack")
    assert not write.fullmatch("bridge.fleet") and not write.fullmatch("meters.dev-7x.reading")
    assert read.fullmatch("meters.dev-7.ack") and read.fullmatch("meters.dev-7.cmd.*")
    assert not read.fullmatch("meters.dev-8.ack") and not read.fullmatch("meters.*.ack") and not read.fullmatch("#")


def test_the_edge_link_speaks_mqtt_3_1_1_to_the_fleet_broker(cluster: RabbitCluster, bridge_env: dict[str, str],
                                                               store_url: str, tmp_path: Path) -> None:
    """The device's own MQTT link with `mqtt.protocol = "3.1.1"` (RabbitMQ 3.10 has no MQTT 5): it logs in
    with its account, its QoS 1 publish is answered, and a wrong password is reported as not authorised."""
    import queue as queue_mod

    from edge.config import MqttConfig
    from edge.transport.mqtt import Connected, ConnectFailed, MqttLink, PubAck, subscription_qos

    pw = add_devices(bridge_env, store_url, ["edge-311"])
    (tmp_path / "pw").write_text(pw["edge-311"] + "\n")
    (tmp_path / "bad").write_text("not-the-password\n")

    def first(events: queue_mod.Queue[Any], kind: type, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e = events.get(timeout=0.5)
            except queue_mod.Empty:
                continue
            if isinstance(e, kind):
                return e
            if isinstance(e, ConnectFailed) and kind is not ConnectFailed:
                raise AssertionError(f"refused: {e}")
        raise AssertionError(f"no {kind.__name__} within {timeout}s")

    port = cluster.nodes[2].mqtt_port
    events: queue_mod.Queue[Any] = queue_mod.Queue()
    link = MqttLink(MqttConfig(port=port, password_file=str(tmp_path / "pw"), protocol="3.1.1"), "edge-311", events)
    link.start()
    try:
        first(events, Connected)
        mid = link.publish(topics.reading("edge-311"), reading("edge-311", 1).to_json_bytes(), qos=1)
        assert mid is not None
        ack = first(events, PubAck)
        assert ack.mid == mid and ack.refused is None
        # Its subscriptions live in a transient queue on the node it is connected to and go with the
        # connection: no quorum queue per device (docs/operate-city-scale.md, "A broker node dies").
        link.subscribe([(topics.ack("edge-311"), subscription_qos(link.cfg))])
        assert wait_until(lambda: session_queues(cluster, "edge-311")["qos0"] is not None, 30)
        q = session_queues(cluster, "edge-311")
        assert q["qos1"] is None and q["qos0"] is not None
        assert not q["qos0"]["durable"] and q["qos0"]["type"] == "classic"
        assert q["qos0"]["node"] == cluster.nodes[2].name
    finally:
        link.stop()
    assert wait_until(lambda: session_queues(cluster, "edge-311")["qos0"] is None, 30)  # gone with it
    events = queue_mod.Queue()
    bad = MqttLink(MqttConfig(port=port, password_file=str(tmp_path / "bad"), protocol="3.1.1"), "edge-311", events)
    bad.start()
    try:
        failed = first(events, ConnectFailed)
        assert failed.not_authorized, failed
    finally:
        bad.stop()


@pytest.mark.postgres
def test_node_and_worker_killed_mid_stream_every_reading_stored_once_every_device_acked(
        cluster: RabbitCluster, bridge_env: dict[str, str], pg_store_url: str, tmp_path: Path) -> None:
    n_devices, per_device = 12, 60
    total = n_devices * per_device
    ids = [f"city-{i:02d}" for i in range(n_devices)]
    passwords = add_devices(bridge_env, pg_store_url, ids)
    engine = open_store(pg_store_url)
    ports = [n.mqtt_port for n in cluster.nodes]
    # Device i starts on node i % 3; workers start on different nodes too.
    devices = [SimDevice(d, passwords[d], ports[i % 3:] + ports[:i % 3]) for i, d in enumerate(ids)]
    urls = cluster.amqp_urls
    log = tmp_path / "workers.log"
    workers = [start_worker(bridge_env, pg_store_url, i, urls[i % 3:] + urls[:i % 3], log) for i in range(3)]
    victim_node = cluster.nodes[1]
    try:
        for dev in devices:
            dev.start()
        assert wait_until(lambda: all(d.subscribed.is_set() for d in devices), 30), "devices did not subscribe"
        assert wait_until(lambda: consumers(cluster, "bridge.readings") == 3, 30), log.read_text()[-3000:]
        killed_node = killed_worker = False
        seq = 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if seq < per_device:
                seq += 1
                for dev in devices:
                    dev.send(seq)
                time.sleep(0.1)
            n = stored(engine)
            if not killed_node and n >= total * 0.25:
                cluster.kill_node(victim_node)  # kill -9: a power cut on one broker
                killed_node = True
                ack_from_a_new_channel(cluster, cluster.nodes[0], ids)
            if killed_node and not killed_worker and n >= total * 0.5:
                os.killpg(workers[0].pid, signal.SIGKILL)  # kill -9 of a bridge worker holding deliveries
                workers[0].wait(10)
                killed_worker = True
            for dev in devices:
                dev.resend_unacked(older_than_s=5.0)
            if seq >= per_device and n == total and all(d.all_acked(per_device) for d in devices):
                break
            if seq >= per_device:
                time.sleep(0.3)
        assert killed_node and killed_worker, f"the stream ended before the kills ({stored(engine)} stored)"
        assert stored(engine) == total, (stored(engine), log.read_text()[-3000:])
        missing = {d.device_id: sorted(set(range(1, per_device + 1)) - set(d.acked)) for d in devices
                   if not d.all_acked(per_device)}
        with engine.connect() as conn:
            rows = conn.execute(select(readings.c.device_id, readings.c.seq, readings.c.value)).all()
            received = conn.execute(select(func.sum(counters.c.value)).where(counters.c.name == "received")
                                    ).scalar_one()
        assert sorted(rows) == sorted((d, s, f"{s:05d}.125") for d in ids for s in range(1, per_device + 1))
        assert received >= total  # redeliveries and resends came through as duplicates, never as new rows
        moved = [d.device_id for d in devices if d.connects > 1]
        assert moved, "no device was on the killed node: the test proved nothing about node loss"
        for w in workers[1:]:
            assert w.poll() is None, log.read_text()[-3000:]
        reconnects = {d.device_id: d.reconnects for d in devices if d.reconnects}
        assert not missing, (
            f"devices not acked within the deadline: {missing}; session queues: "
            + "; ".join(queue_state(cluster, f"mqtt-subscription-{d}{k}") for d in missing for k in ("qos0", "qos1"))
            + f"; reconnects after silent rounds: {reconnects}")
        # The probe's acks reached every device that stayed connected through the failure (one that was moving
        # to another node then had no session to keep them: it gets its answers by sending again).
        stayed = [d for d in devices if d.connects == 1]
        assert stayed, "every device moved: the probe proved nothing"
        assert all(PROBE_SEQ in d.acked for d in stayed), [
            queue_state(cluster, f"mqtt-subscription-{d.device_id}{k}") for d in stayed if PROBE_SEQ not in d.acked
            for k in ("qos0", "qos1")]
        # Every device's session is per connection (docs/operate-city-scale.md): a transient queue on the node
        # it is connected to now, none of them on the killed node, and no quorum queue per device.
        for d in devices:
            q = session_queues(cluster, d.device_id)
            assert q["qos1"] is None, (d.device_id, q["qos1"])
            assert q["qos0"] is not None and not q["qos0"]["durable"], (d.device_id, q["qos0"])
            assert q["qos0"]["node"] != victim_node.name, (d.device_id, q["qos0"]["node"])
        print(f"node and worker killed: {total} readings stored once, every device acked; devices moved: "
              f"{len(moved)}; readings received {received} times; resends {sum(d.sends for d in devices) - total}; "
              f"reconnects after silent rounds: {reconnects or 'none'}")
    finally:
        for dev in devices:
            dev.stop()
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        engine.dispose()
        # No restart of the killed node: this is the module's last test, and the cluster fixture stops
        # every node after it (a restart under load could time out and hide this test's own result).
    assert all(w.returncode in (0, -signal.SIGKILL) for w in workers), log.read_text()[-3000:]
