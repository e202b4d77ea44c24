"""Helpers every `meter-bridge` subcommand uses: the config, the store, clear failures."""

from __future__ import annotations

from typing import NoReturn

import click
from sqlalchemy import Engine

from cloud_bridge.config import BridgeConfig, ConfigError, load_bridge_config
from cloud_bridge.store.engine import StoreError, open_existing_store


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: …` on stderr and exit; the message says what went wrong and what to do."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def load_config(ctx: click.Context) -> BridgeConfig:
    obj = ctx.find_root().obj or {}
    if "bridge_config" in obj:
        return obj["bridge_config"]  # type: ignore[no-any-return]
    try:
        cfg = load_bridge_config(obj.get("config_path"))
    except ConfigError as exc:
        fail(str(exc))
    obj["bridge_config"] = cfg
    return cfg


def open_engine(ctx: click.Context, *, migrate: bool = True) -> Engine:
    """The store for this command. It must exist: only `meter-bridge db upgrade` creates a database,
    so a typo in database_url is an error, not a new empty fleet. An existing database at an older
    schema is migrated to the newest one (migrate=True) or refused (migrate=False)."""
    cfg = load_config(ctx)
    try:
        return open_existing_store(cfg.database_url, migrate=migrate)
    except StoreError as exc:
        fail(str(exc))
