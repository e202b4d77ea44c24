"""`meter-bridge db …`: migrations, and rebuilding what the store derives from readings."""

from __future__ import annotations

import json

import click
from sqlalchemy import select

from cloud_bridge.cli_common import fail, load_config
from cloud_bridge.store.device_latest import rebuild
from cloud_bridge.store.engine import (
    StoreError,
    current_revision,
    head_revision,
    make_engine,
    open_existing_store,
    require_existing,
    upgrade,
)
from cloud_bridge.store.tables import devices


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


@db.command("rebuild-latest")
@click.option("--chunk", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Devices per transaction.")
@click.pass_context
def rebuild_latest_cmd(ctx: click.Context, chunk: int) -> None:
    """Recompute every device's newest-reading row (table device_latest) from its readings. Needed only
    when readings were stored by something that did not keep that table: workers of a version before
    0008_device_latest still running while `db upgrade` ran, or a restore of the readings alone. Safe
    while workers run (each device's row is locked while it is rebuilt); a scan of every reading."""
    cfg = load_config(ctx)
    try:
        engine = open_existing_store(cfg.database_url, migrate=False)
    except StoreError as exc:
        fail(str(exc))
    devices_n = with_readings = 0
    try:
        after = ""
        while True:
            with engine.begin() as conn:
                ids = list(conn.execute(select(devices.c.device_id).where(devices.c.device_id > after)
                                        .order_by(devices.c.device_id).limit(chunk)).scalars())
                if not ids:
                    break
                with_readings += rebuild(conn, ids)
            devices_n += len(ids)
            after = ids[-1]
    finally:
        engine.dispose()
    click.echo(f"rebuilt device_latest: {devices_n} devices, {with_readings} with readings")
