"""Engine factory and migrations for the bridge's store.

SQLite (one box): WAL, synchronous=NORMAL, foreign keys on, and every transaction begins IMMEDIATE so
that concurrent writers (several workers, the CLI) wait for the lock instead of failing with
"database is locked" halfway through a transaction. PostgreSQL (a fleet): psycopg 3.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
READ_ONLY = "meter_read_only"


class StoreError(RuntimeError):
    """The database cannot be used as it is; the message says what to do."""


def upsert_insert(conn: Connection, table: Table) -> Any:
    """An INSERT into `table` for `conn`'s database that takes ON CONFLICT … (PostgreSQL or SQLite)."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def private_file(path: Path) -> None:
    """Make `path` a file only its owner can read (it holds payer codes and addresses): created 0600,
    an existing one readable by others tightened (SQLite gives its -wal and -shm files the same mode)."""
    path = path.expanduser()
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & 0o077:
            try:
                os.fchmod(fd, mode & 0o700)
                log.warning("%s was readable by others (mode %o): now %o", path, mode, mode & 0o700)
            except OSError as exc:
                log.warning("%s is readable by others (mode %o) and cannot be changed: %s", path, mode, exc)
    finally:
        os.close(fd)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url` with the pragmas and transaction mode this project relies on."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            private_file(Path(db))
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # A reader (see `read_only`) begins DEFERRED: in WAL mode it never blocks the writers.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, **kwargs)
    raise StoreError(f"unsupported database URL {parsed.render_as_string()!r}: "
                     "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")


def read_only(engine: Engine) -> Connection:
    """A connection for reading only (dashboards, status): on SQLite it does not take the write lock."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
        return rev


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to `revision`; returns (before, after). Safe to run while nothing else migrates:
    on PostgreSQL an advisory lock serialises concurrent upgrades."""
    from alembic import command

    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("alembic").setLevel(logging.WARNING)
    before = current_revision(engine)
    command.upgrade(_alembic_config(engine), revision)
    after = current_revision(engine)
    assert after is not None
    return before, after


def check_schema(engine: Engine) -> None:
    """Raise StoreError unless the database is at the newest revision."""
    have, want = current_revision(engine), head_revision()
    if have != want:
        where = engine.url.render_as_string(hide_password=True)
        if have is None and inspect(engine).get_table_names():
            raise StoreError(f"database {where} has tables but no migration history: not a bridge database?")
        raise StoreError(
            f"database {where} is at revision {have or '(empty)'}, this bridge needs {want}: "
            "run `meter-bridge db upgrade`")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and for :memory:)."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).expanduser()


def require_existing(url: str) -> None:
    """Refuse a SQLite file that does not exist, before anything creates it (a typo'd path would
    otherwise become a new, empty database and an empty fleet)."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise StoreError(f"no database at {path}: check database_url (BRIDGE_DATABASE_URL), "
                         "or create it with `meter-bridge db upgrade`")


def open_store(url: str, *, migrate: bool = True, create: bool = True) -> Engine:
    """The engine every command uses: migrated to the newest revision first (or checked only).

    create=False (every command but `db upgrade`): the database must already hold the bridge's schema;
    a missing SQLite file or an empty database is refused with what to run, never created."""
    if not create:
        require_existing(url)
    engine = make_engine(url)
    try:
        if not create and current_revision(engine) is None:
            where = engine.url.render_as_string(hide_password=True)
            if inspect(engine).get_table_names():
                raise StoreError(f"database {where} has tables but no migration history: not a bridge database?")
            raise StoreError(f"database {where} is empty (no bridge schema): check database_url "
                             "(BRIDGE_DATABASE_URL), or create it with `meter-bridge db upgrade`")
        if migrate:
            before, after = upgrade(engine)
            if before != after:
                log.warning("database migrated from %s to %s", before or "(empty)", after)
        else:
            check_schema(engine)
    except Exception:
        engine.dispose()
        raise
    return engine


def open_existing_store(url: str, *, migrate: bool = True) -> Engine:
    """`open_store(create=False)` for the bridge's commands and workers: any failure is a StoreError that
    says what to check (a server that is down, a wrong URL)."""
    try:
        return open_store(url, migrate=migrate, create=False)
    except StoreError:
        raise
    except Exception as exc:
        where = make_url(normalise_url(url)).render_as_string(hide_password=True)
        raise StoreError(f"cannot open the database ({where}): {exc}. Check database_url (BRIDGE_DATABASE_URL) "
                         "and that the server is running.") from exc
