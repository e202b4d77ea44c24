"""`meter-bridge accounts add|list|remove|rotate` and `meter-bridge broker init`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cloud_bridge.accounts import (
    ROLES,
    AccountError,
    add_account,
    list_accounts,
    remove_account,
    role_admin_for,
    rotate_password,
)
from cloud_bridge.accounts.roles import client_id_for
from cloud_bridge.broker import BrokerError, init_dynsec, write_secret
from cloud_bridge.cli_common import fail, load_config


def _secret_out(path: Path | None, password: str) -> None:
    if path is not None:
        write_secret(path, password + "\n")


def _show_password(name: str, role: str, password: str, as_json: bool, what: str) -> None:
    client_id = client_id_for(name, role)
    if as_json:
        click.echo(json.dumps({"username": name, "password": password, "role": role, "client_id": client_id}))
        return
    out = Console()
    out.print(f"[bold]{what} {name}[/bold] (role {role})")
    out.print(f"  broker password: [bold yellow]{password}[/bold yellow]   (shown once)")
    out.print("  client id:       " + (client_id or "bridge-<worker> (the bridge's workers)")
              + ("   (the broker refuses any other)" if client_id else ""))


def _admin_call(ctx: click.Context, fn: Any) -> Any:
    """`fn(admin)` on the broker broker.kind names (Mosquitto's dynamic security, RabbitMQ's management API)."""
    try:
        with role_admin_for(load_config(ctx)) as admin:
            return fn(admin)
    except AccountError as exc:
        fail(str(exc))


PASSWORD_OUT = click.option(
    "--password-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the password to this file (mode 600, also when it existed).")


@click.group("accounts")
def accounts() -> None:
    """Broker accounts for people and services: operator, homeassistant, bridge.

    Devices get theirs from `meter-bridge devices add`. Accounts are made on the running broker through
    its admin account (broker.admin_password_file) and apply at once.
    """


@accounts.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="operator: read the fleet, send commands. homeassistant: discovery, device state, status and "
              "telemetry, its birth message, the capture/reload buttons. bridge: ingest and fleet state.")
@PASSWORD_OUT
@click.option("--json", "as_json", is_flag=True, help='Print {"username", "password", "role", "client_id"}.')
@click.pass_context
def add_cmd(ctx: click.Context, name: str, role: str, password_out: Path | None, as_json: bool) -> None:
    """Create the account NAME with ROLE's rights and print its one-time password.

    Its client id must be NAME (the bridge's: bridge-<worker>), so no account can take another's session.
    """
    password = _admin_call(ctx, lambda admin: add_account(admin, name, role))  # type: ignore[arg-type]
    _secret_out(password_out, password)
    _show_password(name, role, password, as_json, "added account")


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every broker account with its role and the client id it must use.

    On RabbitMQ (broker.kind = rabbitmq) its users through the management API, each role read back from
    the user's topic permissions (`-`: not one of the roles' rights, e.g. a user made by hand).
    """
    rows = _admin_call(ctx, list_accounts)
    if as_json:
        click.echo(json.dumps({"accounts": [{"username": a.username, "role": a.role, "client_id": a.client_id}
                                            for a in rows]}))
        return
    table = Table(title=f"{len(rows)} broker account(s)")
    for col in ("user", "role", "client id"):
        table.add_column(col)
    for a in rows:
        table.add_row(a.username, a.role, a.client_id or ("bridge-<i>" if a.role == "bridge" else "[dim]any[/dim]"))
    Console().print(table)


@accounts.command("remove")
@click.argument("name")
@click.pass_context
def remove_cmd(ctx: click.Context, name: str) -> None:
    """Delete the account NAME; the broker disconnects it at once. (A device: `devices retire`.)"""
    if not _admin_call(ctx, lambda admin: remove_account(admin, name)):
        fail(f"no broker account {name!r} (`meter-bridge accounts list` shows them)")
    click.echo(f"removed account {name}")


@accounts.command("rotate")
@click.argument("name")
@PASSWORD_OUT
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rotate_cmd(ctx: click.Context, name: str, password_out: Path | None, as_json: bool) -> None:
    """Issue a new password for NAME; the old one stops working for new connections at once."""

    def run(admin: Any) -> tuple[str, str]:
        password = rotate_password(admin, name)
        role = next((a.role for a in list_accounts(admin) if a.username == name), "-")
        return password, role

    password, role = _admin_call(ctx, run)
    _secret_out(password_out, password)
    _show_password(name, role, password, as_json, "new password for")


@click.group("broker")
def broker() -> None:
    """Set up the broker's accounts (Mosquitto dynamic security)."""


@broker.command("init")
@click.option("--dynsec-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The plugin's file to create (plugin_opt_config_file in mosquitto.conf), e.g. "
              "/var/lib/mosquitto/dynamic-security.json.")
@click.option("--admin-password-out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the admin password (mode 600); point broker.admin_password_file at it.")
@click.option("--admin-user", default="broker-admin", show_default=True)
@click.option("--import-passwd", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Carry over the accounts of the old Mosquitto password file (broker.password_file): devices, "
              "bridge and operator keep their passwords.")
def init_cmd(dynsec_file: Path, admin_password_out: Path, admin_user: str, import_passwd: Path | None) -> None:
    """Write the broker's first dynamic-security file: everything denied, one admin account.

    Run it once before the broker's first start; then `meter-bridge accounts add bridge --role bridge`,
    `devices add ID` and so on talk to the running broker. Upgrading from password_file + acl_file:
    --import-passwd keeps every account's password, so no device needs a visit.
    """
    try:
        skipped = init_dynsec(dynsec_file, admin_password_out, admin_user=admin_user, import_passwd=import_passwd)
    except (BrokerError, OSError, UnicodeDecodeError) as exc:
        fail(str(exc))
    for why in skipped:
        click.echo(f"not imported: {why}", err=True)
    click.echo(f"wrote {dynsec_file} (admin account {admin_user}) and its password to {admin_password_out} (mode 600)")
    click.echo("next: start mosquitto with config/mosquitto/mosquitto.conf, then "
               "`meter-bridge accounts add bridge --role bridge --password-out …`")
