"""Bridge fixtures: every bridge test runs on SQLite and on PostgreSQL (`db_url`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from cloud_bridge.store.engine import open_store


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_store(db_url)
    yield e
    e.dispose()
