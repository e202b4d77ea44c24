"""Issue 20 item 10: files holding payer codes, addresses or secrets are readable by their owner only,
whatever the umask, also when they existed with 0644 before."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloud_bridge.cli import main
from cloud_bridge.sandbox.store import SandboxStore


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what a shell usually has: new files 0644
    try:
        yield
    finally:
        os.umask(old)


def _bridge(db: Path, *args: str) -> None:
    r = CliRunner().invoke(main, list(args), env={"BRIDGE_DATABASE_URL": f"sqlite:///{db}"})
    assert r.exit_code == 0, r.output


def test_bridge_database_and_its_wal_are_0600(tmp_path: Path) -> None:
    db = tmp_path / "state" / "bridge.db"
    _bridge(db, "db", "upgrade")
    from sqlalchemy import text

    from cloud_bridge.store.engine import open_store

    engine = open_store(f"sqlite:///{db}", create=False)
    with engine.begin() as conn:  # a write keeps -wal and -shm open
        conn.execute(text("INSERT INTO devices (device_id, created_at) VALUES ('d', CURRENT_TIMESTAMP)"))
        side = [p for p in (db.with_name("bridge.db-wal"), db.with_name("bridge.db-shm")) if p.exists()]
        assert side, "no WAL files to check"
        assert {p.name: mode(p) for p in [db, *side]} == {p.name: 0o600 for p in [db, *side]}
    engine.dispose()
    assert mode(db.parent) == 0o700


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"
    _bridge(db, "db", "upgrade")
    db.chmod(0o644)
    _bridge(db, "devices", "list", "--json")
    assert mode(db) == 0o600


def test_sandbox_store_is_0600(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "sandbox.sqlite")
    store.close()
    assert mode(tmp_path / "sandbox.sqlite") == 0o600


def test_password_out_into_an_existing_0644_file_ends_0600(tmp_path: Path) -> None:
    """The same writer serves devices add, accounts add|rotate and broker init (tested with a broker in
    test_bridge_registry_cli.py and test_bridge_accounts.py)."""
    from cloud_bridge.broker import write_secret

    out = tmp_path / "pw"
    out.write_text("old secret that was world readable\n")
    out.chmod(0o644)
    write_secret(out, "new\n")
    assert mode(out) == 0o600 and out.read_text() == "new\n"
    fresh = tmp_path / "sub" / "fresh"
    write_secret(fresh, json.dumps({"x": 1}))
    assert mode(fresh) == 0o600
