"""Installer commands: `devices add|list|show|unbind|retire|replace`, `bind`, `rebind`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cloud_bridge import registry
from cloud_bridge.accounts import AccountError, device_accounts
from cloud_bridge.broker import write_secret
from cloud_bridge.cli_common import fail, load_config, open_engine
from cloud_bridge.registry import (
    Binding,
    MeterKind,
    RegistryError,
    add_device,
    binding_history,
    check_device_id,
    device_exists,
    open_bindings,
)
from cloud_bridge.store.engine import read_only
from contract.payloads import format_utc, mask_payer

KIND = click.Choice(["cold", "hot"])


def _t(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%MZ") if value else "-"


def _iso(value: datetime | None) -> str | None:
    return format_utc(value) if value else None


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


@click.group("devices")
def devices() -> None:
    """Devices: add them (each gets its own broker account), list them, and unbind, retire or replace one."""


@devices.command("add")
@click.argument("device_id")
@click.option("--note", default=None, help="Free text, e.g. where the device hangs.")
@click.option("--new-password", "reissue", is_flag=True, help="The device exists: issue a new broker password only.")
@click.option("--password-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the password to this file (mode 600, also when it existed), for provisioning "
              "scripts.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def add(ctx: click.Context, device_id: str, note: str | None, reissue: bool, password_out: Path | None,
        as_json: bool) -> None:
    """Register DEVICE_ID and create its broker account.

    Prints the device's one-time password (the broker keeps only a hash). The account is made on the
    running broker through its admin account (broker.admin_password_file): user name and client id
    are the device id, and it may touch only its own topics. No reload is needed.
    """
    cfg = load_config(ctx)
    try:
        check_device_id(device_id)
    except RegistryError as exc:
        fail(str(exc))
    engine = open_engine(ctx)
    try:
        with engine.begin() as conn:
            if reissue:
                if not device_exists(conn, device_id):
                    raise RegistryError(f"unknown device {device_id}: add it without --new-password")
                if registry.retired_at(conn, device_id) is not None:
                    raise RegistryError(f"device {device_id} is retired: a new Pi needs its own id")
            else:
                add_device(conn, device_id, note)
            # Inside the transaction: if the broker refuses, the device is not added.
            with device_accounts(cfg) as accounts:
                password = accounts.add_device(device_id, reissue=reissue)
    except (RegistryError, AccountError) as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if password_out is not None:
        write_secret(password_out, password + "\n")
    if as_json:
        _print_json({"device_id": device_id, "username": device_id, "client_id": device_id, "password": password})
        return
    out = Console()
    out.print(f"[bold]{'new password for' if reissue else 'added device'} {device_id}[/bold]")
    out.print(f"  broker user and client id: {device_id}")
    out.print(f"  broker password: [bold yellow]{password}[/bold yellow]   (shown once; put it in the device's "
              "mqtt.password_file)")
    out.print(f"  next: meter-bridge bind {device_id} --meter SERIAL --kind cold|hot --payer CODE --address \"…\"")


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@click.option("--show-payer", is_flag=True, help="Show payer codes and addresses in full (default: masked).")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool, show_payer: bool) -> None:
    """List devices: binding in force, online/offline, last value and its status, readings not ok in a
    row, stale, the device's last error, outbox depth, model and version (from its telemetry).

    Stale: no reading taken for fleet.stale_factor x fleet.device_interval_s. Online and telemetry come
    from what the devices publish (retained), as stored by `meter-bridge run`.
    """
    from cloud_bridge.device_health import device_health
    from cloud_bridge.store.tables import utcnow

    cfg = load_config(ctx)
    engine = open_engine(ctx)
    try:
        with read_only(engine) as conn:
            rows = device_health(conn, utcnow(), cfg.fleet)
            bound = open_bindings(conn)
    finally:
        engine.dispose()
    if as_json:
        listed = []
        for h in rows:
            item = h.as_json(show_payer=show_payer)
            b = bound.get(h.device_id)
            item["binding"] = b.as_json(show_payer=show_payer) if b else None
            item["last_taken_at"] = _iso(h.last_taken_at)
            listed.append(item)
        _print_json({"devices": listed})
        return
    table = Table(title=f"{len(rows)} device(s)")
    cols = ["device", "meter", "payer", "address" if show_payer else "", "online", "last value",
            "status", "not ok", "stale", "last error", "outbox", "model", "version"]
    for col in cols:
        if col:
            table.add_column(col, no_wrap=col in ("device", "meter", "payer", "last value"),
                             overflow="fold")
    for h in rows:
        b = bound.get(h.device_id)
        cells = [h.device_id, f"{b.meter_serial} ({b.kind})" if b else "[dim]unbound[/dim]",
                 (b.payer_code if show_payer else mask_payer(b.payer_code)) if b else ""]
        if show_payer:
            cells.append(b.address if b else "")
        status = {"ok": "[green]ok[/green]", "suspect": "[yellow]suspect[/yellow]", "error": "[red]error[/red]",
                  None: "-"}.get(h.last_status, h.last_status or "-")
        if h.last_reason:
            status += f" ({h.last_reason})"
        if h.last_settlement:
            status += f", {h.last_settlement}"
        cells += [{None: "?", True: "[green]online[/green]", False: "[red]offline[/red]"}[h.online],
                  h.last_value or "-", status, str(h.not_ok_in_row) if h.not_ok_in_row else "",
                  "[red]stale[/red]" if h.stale else "", h.last_error or "",
                  "-" if h.outbox_depth is None else str(h.outbox_depth), h.model or "-", h.version or "-"]
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze 13 columns into 80 characters
        console = Console(width=200)
    console.print(table)


@devices.command("show")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--show-payer", is_flag=True, help="Show payer codes and addresses in full.")
@click.pass_context
def show(ctx: click.Context, device_id: str, as_json: bool, show_payer: bool) -> None:
    """A device's binding history (closed bindings are kept)."""
    engine = open_engine(ctx)
    try:
        with engine.connect() as conn:
            if not device_exists(conn, device_id):
                fail(f"unknown device {device_id}")
            history = binding_history(conn, device_id)
    finally:
        engine.dispose()
    if as_json:
        _print_json({"device_id": device_id, "bindings": [b.as_json(show_payer=show_payer) for b in history]})
        return
    _bindings_table(f"bindings of {device_id}", history, show_payer)


def _bindings_table(title: str, rows: list[Binding], show_payer: bool) -> None:
    table = Table(title=title)
    for col in ("id", "meter", "kind", "payer", "from", "to"):
        table.add_column(col)
    for b in rows:
        table.add_row(str(b.id), b.meter_serial, b.kind, b.payer_code if show_payer else mask_payer(b.payer_code),
                      _t(b.valid_from), _t(b.valid_to) if b.valid_to else "[green]in force[/green]")
    Console().print(table)


def _run_registry(ctx: click.Context, fn: Any) -> Any:
    engine = open_engine(ctx)
    try:
        with engine.begin() as conn:
            return fn(conn)
    except RegistryError as exc:
        fail(str(exc))
    finally:
        engine.dispose()


@click.command("bind")
@click.argument("device_id")
@click.option("--meter", "meter_serial", required=True, help="The meter's serial number.")
@click.option("--kind", type=KIND, default=None, help="cold or hot (needed for a meter not seen before).")
@click.option("--payer", "payer_code", required=True, help="The payer code: 10 digits.")
@click.option("--address", default=None, help="The payer's address (needed for a payer not seen before).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bind(ctx: click.Context, device_id: str, meter_serial: str, kind: MeterKind | None, payer_code: str,
         address: str | None, as_json: bool) -> None:
    """Bind DEVICE_ID to a meter and a payer code. Readings stored from now on count for that payer."""
    b: Binding = _run_registry(ctx, lambda conn: registry.bind(
        conn, device_id, meter_serial=meter_serial, kind=kind, payer_code=payer_code, address=address))
    if as_json:
        _print_json({"binding": b.as_json(show_payer=True)})
    else:
        click.echo(f"bound {device_id} -> meter {b.meter_serial} ({b.kind}), payer {mask_payer(b.payer_code)}, "
                   f"from {_t(b.valid_from)} (binding {b.id})")


@click.command("rebind")
@click.argument("device_id")
@click.option("--meter", "meter_serial", required=True, help="The meter's serial number (may be the same).")
@click.option("--kind", type=KIND, default=None, help="cold or hot (needed for a meter not seen before).")
@click.option("--payer", "payer_code", required=True, help="The payer code: 10 digits (may be the same).")
@click.option("--address", default=None, help="The payer's address (needed for a payer not seen before).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rebind(ctx: click.Context, device_id: str, meter_serial: str, kind: MeterKind | None, payer_code: str,
           address: str | None, as_json: bool) -> None:
    """Close DEVICE_ID's binding and open a new one (new meter or new payer). History is kept:
    readings stored before now stay with the old binding."""
    old, new = _run_registry(ctx, lambda conn: registry.rebind(
        conn, device_id, meter_serial=meter_serial, payer_code=payer_code, kind=kind, address=address))
    if as_json:
        _print_json({"closed": old.as_json(show_payer=True), "binding": new.as_json(show_payer=True)})
    else:
        click.echo(f"closed binding {old.id} (meter {old.meter_serial}, payer {mask_payer(old.payer_code)}) "
                   f"at {_t(old.valid_to)}")
        click.echo(f"bound {device_id} -> meter {new.meter_serial} ({new.kind}), payer {mask_payer(new.payer_code)}"
                   f" (binding {new.id})")


@devices.command("unbind")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def unbind(ctx: click.Context, device_id: str, as_json: bool) -> None:
    """Close DEVICE_ID's binding (meter removed). Its readings are refused until it is bound again;
    readings stored before stay with the binding they were stored under."""
    old: Binding = _run_registry(ctx, lambda conn: registry.unbind(conn, device_id))
    if as_json:
        _print_json({"closed": old.as_json(show_payer=True)})
        return
    click.echo(f"closed binding {old.id} (meter {old.meter_serial}) at {_t(old.valid_to)}")


def _retire_on_broker(cfg: Any, device_id: str) -> tuple[list[str], list[str]]:
    """The retained topics cleared, and what could not be done (a RabbitMQ node not reached)."""
    with device_accounts(cfg) as accounts:
        return accounts.retire_device(device_id), list(accounts.warnings)


def _warn_not_cleared(device_id: str, warnings: list[str]) -> None:
    for w in warnings:
        click.echo(f"warning: {device_id}'s retained topics were not cleared on {w}; that node keeps them until "
                   "an empty retained message is published to each (the topics under `cleared`)", err=True)


@devices.command("retire")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def retire(ctx: click.Context, device_id: str, as_json: bool) -> None:
    """Retire DEVICE_ID for good (stolen, broken, scrapped).

    Revokes its broker account (the broker disconnects it at once), closes its binding, and clears its
    retained topics (status, telemetry, state) and its Home Assistant discovery, so HA removes its
    entities; on RabbitMQ (broker.kind = rabbitmq) on every node's MQTT listener, since each node keeps
    its own retained messages (a node not reached is named in a warning). Its readings and binding
    history are kept. A new Pi gets a new id: `devices add NEW`,
    then `devices replace OLD NEW` instead of this, to keep the meter's binding.
    """
    cfg = load_config(ctx)
    engine = open_engine(ctx)
    try:
        with engine.begin() as conn:
            closed = registry.retire(conn, device_id)
            # Inside the transaction: if the broker cannot be reached, the device is not marked retired.
            cleared, warnings = _retire_on_broker(cfg, device_id)
    except (RegistryError, AccountError) as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    _warn_not_cleared(device_id, warnings)
    if as_json:
        _print_json({"device_id": device_id, "closed": closed.as_json(show_payer=True) if closed else None,
                     "cleared": cleared, "not_cleared_on": warnings})
        return
    click.echo(f"retired {device_id}: broker account revoked, {len(cleared)} retained topic(s) cleared"
               + (f", binding {closed.id} (meter {closed.meter_serial}) closed" if closed else ""))


@devices.command("replace")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def replace(ctx: click.Context, old: str, new: str, as_json: bool) -> None:
    """A new Pi (NEW, added with `devices add NEW`) at OLD's meter.

    NEW is bound to the same meter and payer from now on, so the meter's history goes on; OLD is retired
    (account revoked, retained topics cleared, its readings kept). Then tell NEW the meter's value:
    `meter-bridge cmd NEW set-value V`.
    """
    cfg = load_config(ctx)
    engine = open_engine(ctx)
    try:
        with engine.begin() as conn:
            closed, opened = registry.replace(conn, old, new)
            cleared, warnings = _retire_on_broker(cfg, old)
    except (RegistryError, AccountError) as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    _warn_not_cleared(old, warnings)
    if as_json:
        _print_json({"retired": old, "closed": closed.as_json(show_payer=True),
                     "binding": opened.as_json(show_payer=True), "cleared": cleared, "not_cleared_on": warnings})
        return
    click.echo(f"{new} now reads meter {opened.meter_serial} for payer {mask_payer(opened.payer_code)} "
               f"(binding {opened.id}); {old} retired ({len(cleared)} retained topic(s) cleared)")
    click.echo(f"next: meter-bridge cmd {new} set-value <the meter's value now>")


@click.group("meters")
def meters_group() -> None:
    """Meters with no device, read from residents' photos: add, list, remove."""


@meters_group.command("add")
@click.argument("serial")
@click.option("--payer", "payer_code", required=True, help="The payer code: 10 digits.")
@click.option("--kind", type=KIND, default=None, help="cold or hot (needed for a meter not seen before).")
@click.option("--address", default=None, help="The payer's address (needed for a payer not seen before).")
@click.option("--digits", type=int, default=None,
              help="Black wheels (before the point) the meter shows, e.g. 5; the photo reader reads that many.")
@click.option("--decimals", type=int, default=None, help="Red wheels (after the point), e.g. 3; 0 for none.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def meters_add(ctx: click.Context, serial: str, payer_code: str, kind: MeterKind | None, address: str | None,
               digits: int | None, decimals: int | None, as_json: bool) -> None:
    """Register meter SERIAL for PAYER without a device: its residents read it by photo in the portal.

    A meter a Pi already reads for the same payer needs nothing more (residents may photograph it too):
    only --digits/--decimals are recorded. A Pi bound to the meter later takes over its binding.
    """
    b: Binding = _run_registry(ctx, lambda conn: registry.add_photo_meter(
        conn, serial, payer_code=payer_code, kind=kind, address=address, digits=digits, decimals=decimals))
    if as_json:
        _print_json({"binding": b.as_json(show_payer=True), "digits": digits, "decimals": decimals})
        return
    how = f"by device {b.device_id}" if b.device_id else "from residents' photos"
    click.echo(f"meter {b.meter_serial} ({b.kind}) of payer {mask_payer(b.payer_code)} is read {how} "
               f"(binding {b.id})")
    click.echo(f"next: meter-bridge residents invite --payer {b.payer_code}   (a link code for the resident)")


@meters_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the meters as JSON.")
@click.option("--show-payer", is_flag=True, help="Show payer codes and addresses in full (default: masked).")
@click.pass_context
def meters_list(ctx: click.Context, as_json: bool, show_payer: bool) -> None:
    """List the meters read from residents' photos only (no device)."""
    engine = open_engine(ctx)
    try:
        with read_only(engine) as conn:
            rows = registry.list_photo_meters(conn)
            wheels = {m.meter_serial: (m.digits, m.decimals)
                      for b in rows for m in registry.photo_meters(conn, b.payer_code)}
    finally:
        engine.dispose()
    if as_json:
        _print_json({"meters": [{**b.as_json(show_payer=show_payer), "digits": wheels.get(b.meter_serial, (None,))[0],
                                 "decimals": wheels.get(b.meter_serial, (None, None))[1]} for b in rows]})
        return
    table = Table(title="meters read from photos")
    for col in ("meter", "kind", "payer", "wheels", "since"):
        table.add_column(col)
    for b in rows:
        d, dec = wheels.get(b.meter_serial, (None, None))
        table.add_row(b.meter_serial, b.kind, b.payer_code if show_payer else mask_payer(b.payer_code),
                      f"{d if d is not None else '?'}.{dec if dec is not None else '?'}", _t(b.valid_from))
    Console().print(table)


@meters_group.command("remove")
@click.argument("serial")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def meters_remove(ctx: click.Context, serial: str, as_json: bool) -> None:
    """Stop reading meter SERIAL from photos (removed, or moved to another payer). Its readings stay."""
    old: Binding = _run_registry(ctx, lambda conn: registry.remove_photo_meter(conn, serial))
    if as_json:
        _print_json({"closed": old.as_json(show_payer=True)})
        return
    click.echo(f"closed binding {old.id} (meter {old.meter_serial}) at {_t(old.valid_to)}")
