"""A real 3-node RabbitMQ cluster for the module (cloud_bridge.rabbit_cluster), stopped by pid."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_bridge.rabbit_cluster import ClusterError, RabbitCluster, find_rabbitmq_server

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    try:
        find_rabbitmq_server()
    except ClusterError as exc:
        if os.environ.get("CI"):  # CI installs it (make install as root): missing there is a failure
            raise
        pytest.skip(f"{exc}; the cluster tests then run")
    with RabbitCluster(tmp_path_factory.mktemp("rabbit"), 3) as c:
        yield c
