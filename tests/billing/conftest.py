"""Fixtures for the billing tests: a real sandbox over HTTP (uvicorn in a thread, free port), a fresh
store on SQLite or PostgreSQL, and a small fleet whose readings go in through the bridge's ingest code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from cloud_bridge.config import BridgeConfig
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle
from cloud_bridge.registry import add_device, bind
from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.store import open_store
from contract import topics
from contract.payloads import Reading


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    """An open sandbox (no auth, every well-formed account known)."""
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server


def _pg_database(postgres_url: str) -> Iterator[str]:
    """A database of our own on the session's PostgreSQL server, dropped afterwards."""
    base, _ = postgres_url.rsplit("/", 1)
    name = f"billing_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty bridge database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
    else:
        yield from _pg_database(request.getfixturevalue("postgres_url"))


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


def make_config(db_url: str, sandbox_url: str, **submission: Any) -> BridgeConfig:
    """A config for tests: small, fast backoff unless told otherwise."""
    sub = {"timeout_s": 2.0, "max_attempts_per_pass": 4, "backoff_base_s": 0.05, "backoff_max_s": 0.5,
           "max_wait_in_pass_s": 2.0, "lease_s": 1.0, **submission}
    return BridgeConfig(database_url=db_url, billing={"url": sandbox_url}, loyalty={"url": sandbox_url, "points": 10},
                        submission=sub)


class Fleet:
    """Devices bound to meters and payers, and readings stored the way ingest stores them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seq: dict[str, int] = {}

    def add(self, device_id: str, meter: str, payer: str, since: datetime, kind: str = "cold") -> None:
        with self.engine.begin() as conn:
            add_device(conn, device_id, now=since)
            bind(conn, device_id, meter_serial=meter, kind=kind, payer_code=payer,  # type: ignore[arg-type]
                 address=f"Flat of {payer}", now=since)

    def reading(self, device_id: str, taken_at: datetime, value: str | None, status: str = "ok",
                reason: str | None = None) -> int:
        return self.readings(device_id, [(taken_at, value, status, reason)])[0]

    def readings(self, device_id: str, items: list[tuple[datetime, str | None, str, str | None]]) -> list[int]:
        """Store (taken_at, value, status, reason) readings in one transaction; returns their ids."""
        ids = []
        with self.engine.begin() as conn:
            for taken_at, value, status, reason in items:
                seq = self.seq.get(device_id, 0) + 1
                self.seq[device_id] = seq
                r = Reading(device_id=device_id, seq=seq, taken_at=taken_at, value=value,
                            status=status, reason=reason,  # type: ignore[arg-type]
                            confidence=0.99 if status == "ok" else 0.4)
                out = handle(conn, Message(topics.reading(device_id), r.to_json_bytes()), taken_at)
                assert out.kind == "stored", out
                assert out.reading_id is not None
                ids.append(out.reading_id)
        return ids
