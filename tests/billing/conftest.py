"""Fixtures for the billing tests: a real sandbox over HTTP (uvicorn in a thread, free port) and engines
on a fresh store (`db_url`, tests/conftest.py: SQLite and PostgreSQL). Helpers: billing_helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.store import open_store


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    """An open sandbox (no auth, every well-formed account known)."""
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bridge.db'}"


@pytest.fixture
def engine_for() -> Iterator[Any]:
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        e = open_store(url)
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.dispose()
