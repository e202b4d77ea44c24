"""Alembic environment: runs on the engine the bridge passes in (cloud_bridge.store.engine.upgrade)."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import text

from cloud_bridge.store.engine import make_engine
from cloud_bridge.store.tables import UtcDateTime, metadata

config = context.config
target_metadata = metadata
PG_MIGRATION_LOCK = 0x6D65746572  # "meter": one migration at a time on a shared PostgreSQL


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Migrations stay independent of runtime types: UtcDateTime is a DateTime(timezone=True) on disk.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no engine or sqlalchemy.url given to the migration environment")
        engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_item=_render_item,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run `meter-bridge db upgrade`")
run_migrations_online()
