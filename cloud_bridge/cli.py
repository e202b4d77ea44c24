"""`meter-bridge`: the cloud side's command line."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from cloud_bridge import __version__
from contract.lazycli import LazyGroup

COMMANDS = {
    "db": ("cloud_bridge.store.cli:db", "Database migrations (db upgrade)."),
    "devices": ("cloud_bridge.registry.cli:devices", "Devices: add, list, show, unbind, retire, replace."),
    "bind": ("cloud_bridge.registry.cli:bind", "Bind a device to a meter and a payer code."),
    "rebind": ("cloud_bridge.registry.cli:rebind", "Close a device's binding and open a new one."),
    "meters": ("cloud_bridge.registry.cli:meters_group", "Meters with no device, read from residents' photos."),
    "accounts": ("cloud_bridge.accounts.cli:accounts", "Broker accounts: operator, homeassistant, bridge."),
    "broker": ("cloud_bridge.accounts.cli:broker", "Set up the broker's accounts (broker init)."),
    "cmd": ("cloud_bridge.commands_cli:cmd", "Send a device a command (capture, reload, set-value); wait for it."),
    "cmd-log": ("cloud_bridge.commands_cli:cmd_log", "The command audit log: who sent what, when, the answer."),
    "run": ("cloud_bridge.ingest.cli:run", "Ingest readings from the broker (N workers)."),
    "status": ("cloud_bridge.health:status", "Counters: received, stored, duplicate, refused, lag."),
    "history": ("cloud_bridge.residents.cli:history", "A payer's readings, submissions and points."),
    "correct": ("cloud_bridge.residents.cli:correct", "Check and record a correction of a reading."),
    "web": ("cloud_bridge.web.cli:web", "Serve the portal: residents' meters and bills, operators' fleet."),
    "users": ("cloud_bridge.web.cli:users_group", "Portal accounts: add an operator (one-time password), list."),
    "residents": ("cloud_bridge.web.cli:residents_group", "One-time link codes for payer codes (invite, link)."),
    "submit": ("cloud_bridge.submission.cli:submit", "Run one submission pass to billing."),
    "settle": ("cloud_bridge.settlement.cli:settle", "Mark stored readings settled, outlier or pending."),
    "sandbox": ("cloud_bridge.sandbox.cli:sandbox", "Serve a billing + loyalty sandbox over HTTP."),
    "photo": ("cloud_bridge.photo.cli:photo", "Read a resident's meter photo (photo read PHOTO --json)."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meter-bridge")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="BRIDGE_CONFIG",
    help="Bridge config TOML (default: config/bridge.toml if present). BRIDGE_* variables override it.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: int) -> None:
    """Take meter readings from the broker, keep them, submit one per meter and month to billing,
    and credit residents' loyalty points.

    Every command reads the config given by --config; the settings object is in ctx.obj["config_path"].
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


if __name__ == "__main__":
    main()
