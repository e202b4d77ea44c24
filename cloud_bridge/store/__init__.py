"""The bridge's store: tables (SQLAlchemy Core), the engine factory and Alembic migrations."""

from cloud_bridge.store.engine import StoreError, check_schema, make_engine, open_store, upgrade
from cloud_bridge.store.tables import metadata, utcnow

__all__ = ["StoreError", "check_schema", "make_engine", "metadata", "open_store", "upgrade", "utcnow"]
