"""Fixtures shared by the whole suite: the shared data folder, a private Mosquitto, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.broker import MosquittoBroker

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """../shared beside the repo (CI puts it there); METER_SHARED_DIR overrides."""
    return Path(os.environ.get("METER_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = shared_dir() / "data"
    if not (data / "digits" / "labels.csv").is_file():
        pytest.skip(f"shared data not found at {data} (set METER_SHARED_DIR)")
    return data


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private anonymous Mosquitto on a free loopback port, with the project's config."""
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto with the project's password file and ACL switched on."""
    with MosquittoBroker(tmp_path / "broker", auth=True) as b:
        yield b


PG_ADMIN_URL = os.environ.get("METER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"meter_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty bridge database: a SQLite file, or a PostgreSQL schema of its own in the session's
    database. Tests that take it run on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
        return
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pg: str = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{pg}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


# Pages are tested in a real browser: Debian's chromium driven by Playwright (its own download is
# not reachable here). One per test module.
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make install-system installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()
