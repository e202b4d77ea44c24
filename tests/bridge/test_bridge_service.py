"""The composition root (cloud_bridge/service.py): what one worker is built from, and that all of it is
closed again on every way out."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bridge_helpers import config
from sqlalchemy import Engine

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.ingest.source import SourceError
from cloud_bridge.service import SOURCES, bridge_worker
from cloud_bridge.store.engine import StoreError

pytestmark = [pytest.mark.mosquitto]


def _boom(now: datetime) -> None:
    raise RuntimeError("settlement broke")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_zero_is_built_whole_and_closed_on_an_error(engine: Engine, db_url: str, broker: MosquittoBroker,
                                                            tmp_path: Path) -> None:
    cfg = config(db_url, broker.port, tmp_path)
    with pytest.raises(RuntimeError, match="boom"), bridge_worker(cfg, index=0) as w:
        assert w.name == "bridge-0" and w.source.connected
        assert [j.job.name for j in w.jobs] == ["submission", "settlement"]
        assert [t.name for t in w.ingest.tasks] == ["submission", "settlement"]
        gateways = w.jobs[0].job.work.args[2]  # type: ignore[attr-defined]  # partial(logged_pass, e, c, gw)
        # a job that raises is counted in this worker's metrics (the ingest loop never sees it: own thread)
        w.jobs[1].job.work = _boom
        assert w.jobs[1].job.start(datetime.now(UTC)) and w.jobs[1].job.join(10)
        assert w.ingest.metrics is not None
        failures = {s.labels["task"]: s.value for m in w.ingest.metrics.task_failures.collect() for s in m.samples
                    if s.name.endswith("_total")}
        assert failures == {"submission": 0, "settlement": 1}
        assert w.jobs[1].job.failures == 1 and "settlement broke" in (w.jobs[1].job.last_error or "")
        assert w.ingest.fleet is not None and w.ingest.source is w.source
        raise RuntimeError("boom")
    assert not w.source.connected
    assert gateways.billing._client.is_closed and gateways.loyalty._client.is_closed


def test_other_workers_run_no_timers(engine: Engine, db_url: str, broker: MosquittoBroker, tmp_path: Path) -> None:
    cfg = config(db_url, broker.port, tmp_path)
    with bridge_worker(cfg, index=1) as w:
        assert w.name == "bridge-1" and w.jobs == [] and w.ingest.tasks == []
    assert not w.source.connected
    with bridge_worker(cfg, index=0, timers=False) as w:  # an ingest-only worker 0 (tests run passes by hand)
        assert w.jobs == [] and w.ingest.tasks == [] and w.ingest.fleet is not None


def test_a_source_that_cannot_start_is_a_clear_error(engine: Engine, db_url: str, tmp_path: Path) -> None:
    cfg = config(db_url, _free_port(), tmp_path)
    with pytest.raises(SourceError, match="cannot reach the broker"), bridge_worker(cfg):
        pytest.fail("started without a broker")


def test_a_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config(f"sqlite:///{tmp_path / 'nothing.db'}", _free_port(), tmp_path)
    with pytest.raises(StoreError, match="no database at"), bridge_worker(cfg):
        pytest.fail("started without a database")


def test_every_configured_source_has_a_factory() -> None:
    from cloud_bridge.config import SOURCE_NAMES

    assert set(SOURCES) == set(SOURCE_NAMES) == {"mqtt", "amqp"}
