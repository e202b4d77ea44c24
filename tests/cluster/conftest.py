"""A real 3-node RabbitMQ cluster for the module (cloud_bridge.rabbit_cluster), stopped by pid."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloud_bridge.broker import write_secret
from cloud_bridge.cli import main
from cloud_bridge.rabbit_cluster import ClusterError, RabbitCluster, find_rabbitmq_server

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """The module's cluster: 3 nodes, or the module's CLUSTER_NODES (fewer start sooner on a busy machine)."""
    try:
        find_rabbitmq_server()
    except ClusterError as exc:
        if os.environ.get("CI"):  # CI installs it (make install as root): missing there is a failure
            raise
        pytest.skip(f"{exc}; the cluster tests then run")
    with RabbitCluster(tmp_path_factory.mktemp("rabbit"), getattr(request.module, "CLUSTER_NODES", 3)) as c:
        yield c


@pytest.fixture(scope="module")
def bridge_env(cluster: RabbitCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """BRIDGE_* for `meter-bridge` against the cluster: the admin for accounts, a bridge account for ingest."""
    d = tmp_path_factory.mktemp("bridge-secrets")
    user, password = cluster.admin_credentials
    write_secret(d / "admin-password", password + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({
        "BRIDGE_BROKER__KIND": "rabbitmq",
        "BRIDGE_BROKER__MANAGEMENT_URL": cluster.mgmt_url(),
        "BRIDGE_BROKER__ADMIN_USERNAME": user,
        "BRIDGE_BROKER__ADMIN_PASSWORD_FILE": str(d / "admin-password"),
        "C19_SOURCE": "amqp",
        "BRIDGE_AMQP__USERNAME": "bridge",
        "BRIDGE_AMQP__PASSWORD_FILE": str(d / "bridge-password"),
        "BRIDGE_AMQP__HEARTBEAT_S": "5",
        "BRIDGE_AMQP__RECONNECT_MAX_S": "2",
        "BRIDGE_FLEET__PUBLISH_EVERY_S": "0.5",
        "BRIDGE_METRICS__PORT": "0",
    })
    # The bridge's own account, as an operator makes it: rights on bridge.* queues, acks and fleet topics.
    r = CliRunner().invoke(main, ["accounts", "add", "bridge", "--role", "bridge", "--password-out",
                                  str(d / "bridge-password")], env=env)
    assert r.exit_code == 0, r.output
    return env
