"""Run a private RabbitMQ cluster with the project's fleet-broker config (tests, benchmarks).

`deploy/rabbitmq/` is what a city's nodes run; a private cluster gets that same config with its own
listeners (free loopback ports for AMQP, MQTT, management and Erlang distribution), its own data
and log directories, its own Erlang cookie (`HOME`) and its own epmd on a free port, so it never
touches the machine's RabbitMQ (5672, epmd 4369). Each node runs in the foreground
(`RABBITMQ_ALLOW_INPUT`: the start script `exec`s the VM), so its pid is the node's and it is stopped,
or killed with SIGKILL, by that pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from cloud_bridge.broker import write_secret

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DIR = REPO_ROOT / "deploy" / "rabbitmq"
SERVER_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
ADMIN_USER = "cluster-admin"
# Keys of deploy/rabbitmq/rabbitmq.conf a private node sets itself (ports, TLS, peers, paths).
_OWN_KEYS = ("listeners.", "mqtt.listeners.", "ssl_options.", "management.tcp.", "cluster_formation.classic_config.",
             "load_definitions", "default_user", "default_pass", "default_permissions.", "mqtt.num_acceptors.ssl",
             "prometheus.tcp.")
INSTALL_HINT = ("rabbitmq-server is not installed: run `make install` (as root it runs apt-get install "
                "rabbitmq-server), or `sudo apt-get install rabbitmq-server`")


class ClusterError(RuntimeError):
    pass


def listen_port(taken: set[int] | None = None) -> int:
    """A free loopback port below the kernel's ephemeral range: a node makes many outgoing connections
    while the others start, and a listener port picked from that range can be taken by one of them."""
    taken = taken if taken is not None else set()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise ClusterError("no free loopback port between 20000 and 32000")


def find_rabbitmq_server() -> str:
    """The start script that runs a node in the foreground (Debian's /usr/sbin one switches user)."""
    if not os.access(SERVER_SCRIPT, os.X_OK) or shutil.which("epmd") is None:
        raise ClusterError(INSTALL_HINT)
    return SERVER_SCRIPT


def render_node_config(template: Path, *, peers: list[str], amqp_port: int, mqtt_port: int, mgmt_port: int,
                       prometheus_port: int, admin_password: str) -> str:
    """deploy/rabbitmq/rabbitmq.conf with this node's listeners and the cluster's peers."""
    kept = [line for line in template.read_text(encoding="utf-8").splitlines()
            if not line.strip().startswith(_OWN_KEYS)]
    own = [f"listeners.tcp.1 = 127.0.0.1:{amqp_port}",
           f"mqtt.listeners.tcp.1 = 127.0.0.1:{mqtt_port}",
           "management.tcp.ip = 127.0.0.1",
           f"management.tcp.port = {mgmt_port}",
           "prometheus.tcp.ip = 127.0.0.1",
           f"prometheus.tcp.port = {prometheus_port}",
           *(f"cluster_formation.classic_config.nodes.{i} = {p}" for i, p in enumerate(peers, start=1)),
           f"default_user = {ADMIN_USER}",
           f"default_pass = {admin_password}",
           "default_user_tags.administrator = true",
           "default_permissions.configure = .*",
           "default_permissions.read = .*",
           "default_permissions.write = .*",
           # Small: a test machine, not a city.
           "vm_memory_high_watermark.relative = 0.4",
           "disk_free_limit.absolute = 50MB",
           "log.console = false",
           "log.file.level = info"]
    return "\n".join([*kept, "", "# --- this private node ---", *own]) + "\n"


@dataclass
class Node:
    index: int
    name: str
    amqp_port: int
    mqtt_port: int
    mgmt_port: int
    dist_port: int
    prometheus_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def amqp_url(self) -> str:
        return f"amqp://127.0.0.1:{self.amqp_port}/"


class RabbitCluster:
    """N private nodes forming one cluster; a context manager that stops every node by pid."""

    def __init__(self, work_dir: Path, nodes: int = 3, *, deploy_dir: Path = DEPLOY_DIR) -> None:
        self.work_dir = Path(work_dir)
        self.deploy_dir = deploy_dir
        self.token = secrets.token_hex(3)
        taken: set[int] = set()
        self.epmd_port = listen_port(taken)
        self.admin_password = secrets.token_urlsafe(18)
        self.home = self.work_dir / "home"
        self.nodes = []
        for i in range(nodes):
            amqp, mqtt, mgmt, dist, prom = (listen_port(taken) for _ in range(5))
            self.nodes.append(Node(i, f"mb{i}-{self.token}@localhost", amqp, mqtt, mgmt, dist, prom,
                                   self.work_dir / f"node{i}"))
        self.epmd: subprocess.Popen[bytes] | None = None

    # -- what clients need ------------------------------------------------------------------------
    @property
    def amqp_urls(self) -> list[str]:
        return [n.amqp_url for n in self.nodes]

    @property
    def admin_credentials(self) -> tuple[str, str]:
        return ADMIN_USER, self.admin_password

    def mgmt_url(self, node: Node | None = None) -> str:
        n = node or next((n for n in self.nodes if n.running), self.nodes[0])
        return f"http://127.0.0.1:{n.mgmt_port}"

    def api(self, method: str, path: str, *, node: Node | None = None, **kw: Any) -> httpx.Response:
        """One management API call as the cluster's admin."""
        with httpx.Client(base_url=self.mgmt_url(node), auth=self.admin_credentials, timeout=10) as c:
            return c.request(method, path, **kw)

    # -- lifecycle --------------------------------------------------------------------------------
    def _env(self, node: Node) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.work_dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.deploy_dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.deploy_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.dir / "log"),
            "RABBITMQ_PID_FILE": str(node.dir / "node.pid"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_ALLOW_INPUT": "true",  # the script execs the VM: its pid is the node's
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return env

    def _write(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o700)
        self.home.mkdir(exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            write_secret(cookie, secrets.token_hex(16).upper())
            os.chmod(cookie, 0o400)
        (self.work_dir / "rabbitmq-env.conf").write_text("# private cluster: everything is in the environment\n")
        peers = [n.name for n in self.nodes]
        for n in self.nodes:
            (n.dir / "log").mkdir(parents=True, exist_ok=True)
            write_secret(n.dir / "rabbitmq.conf", render_node_config(
                self.deploy_dir / "rabbitmq.conf", peers=peers, amqp_port=n.amqp_port, mqtt_port=n.mqtt_port,
                mgmt_port=n.mgmt_port, prometheus_port=n.prometheus_port, admin_password=self.admin_password,
))

    def start(self, timeout: float = 120.0) -> RabbitCluster:
        script = find_rabbitmq_server()
        self._write()
        epmd = shutil.which("epmd")
        assert epmd is not None
        self.epmd = subprocess.Popen([epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            for n in self.nodes:
                self.start_node(n, script=script, wait=False)
            self.wait_ready(timeout, queues=False)
            self.import_definitions()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: Node, *, script: str | None = None, wait: bool = True, timeout: float = 90.0) -> None:
        """Start (or restart) one node; with `wait`, until the cluster sees every node running."""
        script = script or find_rabbitmq_server()
        with (node.dir / "console.log").open("ab") as out:
            # stdin is a pipe nobody writes to: the VM's shell waits on it instead of reading EOF.
            node.proc = subprocess.Popen([script], env=self._env(node), stdin=subprocess.PIPE, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, cwd=node.dir)
        if wait:
            self.wait_ready(timeout)

    def running_nodes(self) -> set[str]:
        """Node names the cluster reports running (asked of the first live node that answers)."""
        for n in self.nodes:
            if not n.running:
                continue
            try:
                r = self.api("GET", "/api/nodes", node=n)
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                return {x["name"] for x in r.json() if x.get("running")}
        return set()

    def import_definitions(self, path: Path | None = None) -> None:
        """deploy/rabbitmq/definitions.json (the bridge's queues, bindings, policy), imported once the
        cluster has formed, as on a real cluster: a quorum queue gets its replicas on the nodes that are
        members when it is declared, so one declared at the first node's boot would live on that node only."""
        defs = json.loads((path or self.deploy_dir / "definitions.json").read_text(encoding="utf-8"))
        r = self.api("POST", "/api/definitions", json=defs)
        if r.status_code not in (200, 201, 204):
            raise ClusterError(f"importing the definitions failed: {r.status_code} {r.text[:300]}")

    def wait_ready(self, timeout: float = 120.0, *, queues: bool = True) -> None:
        want = {n.name for n in self.nodes if n.running}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None and n.name in want:
                    raise ClusterError(f"node {n.name} exited with {n.proc.returncode}: {self.tail_log(n)}")
            if want <= self.running_nodes() and (not queues or self._queues_ready()) and self._listening():
                return
            time.sleep(0.5)
        raise ClusterError(f"the cluster did not report {sorted(want)} running within {timeout:.0f}s "
                           f"(running: {sorted(self.running_nodes())}); logs under {self.work_dir}")

    def _listening(self) -> bool:
        """Every running node takes AMQP and MQTT connections (plugins start after the node reports running)."""
        for n in self.nodes:
            if not n.running:
                continue
            for port in (n.amqp_port, n.mqtt_port):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        pass
                except OSError:
                    return False
        return True

    def _queues_ready(self) -> bool:
        """The bridge's queue exists with a replica on every node, all of them online under a leader (a first
        publish to a quorum queue still electing its leader waits for it: on a busy machine, longer than a
        client's timeout)."""
        try:
            r = self.api("GET", "/api/queues/%2F/bridge.readings")
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        q = r.json()
        running = sum(1 for nd in self.nodes if nd.running)
        return (len(q.get("members") or []) == len(self.nodes) and len(q.get("online") or []) >= running
                and bool(q.get("leader")))

    def tail_log(self, node: Node, lines: int = 15) -> str:
        texts = []
        for p in [node.dir / "console.log", *sorted((node.dir / "log").glob("*.log"))]:
            with contextlib.suppress(OSError):
                texts += p.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(texts[-2 * lines:])

    def kill_node(self, node: Node) -> None:
        """SIGKILL one node (a power cut); what it acknowledged lives on in its quorum queues' replicas."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)

    def stop_node(self, node: Node, timeout: float = 30.0) -> None:
        if node.proc is None or node.proc.poll() is not None:
            return
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(10)

    def stop(self) -> None:
        for n in reversed(self.nodes):
            self.stop_node(n)
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            try:
                self.epmd.wait(5)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
        self._kill_stray_epmd()

    def _kill_stray_epmd(self) -> None:
        """A node that found no epmd on its port (ours not listening yet, or gone) starts `epmd -daemon`
        itself, outside our process group: ask whatever still answers on our port to quit (it holds no
        names once every node is down), so no daemon outlives the cluster."""
        epmd = shutil.which("epmd")
        if epmd is None:
            return
        for _ in range(3):
            try:
                r = subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                return
            if r.returncode != 0:  # nothing listens on the port any more
                return

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
