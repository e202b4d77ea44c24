"""`meter-bridge db …`: migrations."""

from __future__ import annotations

import json

import click

from cloud_bridge.cli_common import fail, load_config
from cloud_bridge.store.engine import (
    StoreError,
    current_revision,
    head_revision,
    make_engine,
    require_existing,
    upgrade,
)


@click.group("db")
def db() -> None:
    """The bridge's database (SQLite or PostgreSQL, from `database_url`)."""


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def upgrade_cmd(ctx: click.Context, as_json: bool) -> None:
    """Create or migrate the database to the newest schema. Safe to run again."""
    cfg = load_config(ctx)
    engine = make_engine(cfg.database_url)
    try:
        before, after = upgrade(engine)
    except Exception as exc:  # a DB that cannot be reached or migrated: say which and why
        fail(f"cannot migrate {engine.url.render_as_string(hide_password=True)}: {exc}")
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if as_json:
        click.echo(json.dumps({"database": where, "from": before, "to": after}))
    elif before == after:
        click.echo(f"{where}: already at {after}")
    else:
        click.echo(f"{where}: migrated {before or '(empty)'} -> {after}")


@db.command("current")
@click.pass_context
def current_cmd(ctx: click.Context) -> None:
    """Print the database's schema revision and the newest one this bridge knows."""
    cfg = load_config(ctx)
    try:
        require_existing(cfg.database_url)
    except StoreError as exc:
        fail(str(exc))
    engine = make_engine(cfg.database_url)
    try:
        have = current_revision(engine)
    except Exception as exc:
        fail(f"cannot read {engine.url.render_as_string(hide_password=True)}: {exc}")
    finally:
        engine.dispose()
    click.echo(f"database: {have or '(empty)'}; newest: {head_revision()}")
