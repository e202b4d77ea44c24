"""`meter-bridge cmd ID capture|reload|set-value VALUE [--at T]` and `meter-bridge cmd-log [ID]`."""

from __future__ import annotations

import getpass
import json
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from cloud_bridge.cli_common import fail, load_config, open_engine
from cloud_bridge.commands import CommandError, command_history, send_command
from contract import topics
from contract.times import parse_utc

EXIT = {"accepted": 0, "done": 0, "refused": 3, "no_answer": 4, "blocked": 5}


def _parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_utc(value)  # contract.times: one parser, a time without a zone is refused
    except ValueError as exc:
        fail(f"--at {value!r} is not a time with a zone this system accepts ({exc}); "
             "use ISO 8601, e.g. 2026-12-01T09:30:00+03:00")


@click.command("cmd")
@click.argument("device_id")
@click.argument("name", type=click.Choice(topics.COMMANDS))
@click.argument("value", required=False)
@click.option("--at", "at_text", default=None, help="set-value: when the meter showed VALUE (ISO 8601 with a zone; "
              "default now).")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds to wait for the answer "
              "(default commands.timeout_s).")
@click.option("--confirm", is_flag=True, help="set-value: send it although the meter has no readings around that "
              "time to check it against (you have read the meter yourself).")
@click.option("--by", "requested_by", default=None, help="Who asks, for the audit log (default: your login).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cmd(ctx: click.Context, device_id: str, name: str, value: str | None, at_text: str | None,
        timeout_s: float | None, confirm: bool, requested_by: str | None, as_json: bool) -> None:
    """Send a command to DEVICE_ID and wait for its answer.

    \b
    capture            take a reading now (answer: accepted; the reading follows)
    reload             reread edge.toml, the layout and the model (answer: done or refused)
    set-value VALUE    the value the meter shows now, e.g. 00123.456 (after a replacement or a fault)

    set-value goes through the settlement checks first (the readings of the device's meter around --at
    allow it, billing does not hold more); with nothing to check against it needs --confirm.
    Every command is written to the audit log (`meter-bridge cmd-log`). Sent with the operator account
    in commands.username/commands.password_file to the broker at mqtt.host/mqtt.port: MQTT 5, or MQTT
    3.1.1 when broker.kind = rabbitmq (the cluster's MQTT listener or its load balancer). Exit 0 when
    the device accepted or did it, 3 refused, 4 no answer, 5 blocked before sending.
    """
    cfg = load_config(ctx)
    at = _parse_at(at_text)
    engine = open_engine(ctx)
    who = requested_by or getpass.getuser()
    if cfg.commands.username:
        who = f"{who} (via {cfg.commands.username})"
    try:
        outcome = send_command(engine, cfg, device_id, name, requested_by=who, value=value, at=at, confirm=confirm,
                               timeout_s=timeout_s)
    except CommandError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(outcome.as_json()))
    else:
        colour = {"accepted": "green", "done": "green", "refused": "red", "blocked": "red"}.get(outcome.state, "yellow")
        Console().print(f"{device_id} {name}: [{colour}]{outcome.state}[/{colour}]"
                        + (f": {outcome.reason}" if outcome.reason else ""))
    raise SystemExit(EXIT.get(outcome.state, 1))


@click.command("cmd-log")
@click.argument("device_id", required=False)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cmd_log(ctx: click.Context, device_id: str | None, limit: int, as_json: bool) -> None:
    """The command audit log, newest first: who sent what to which device, when, and the answer."""
    engine = open_engine(ctx)
    try:
        rows = command_history(engine, device_id, limit)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"commands": [r.as_json() for r in rows]}))
        return
    table = Table(title=f"{len(rows)} command(s)")
    for col in ("when (local time)", "device", "command", "by", "answer", "reason"):
        table.add_column(col)
    for r in rows:
        what = r.name + (f" {r.args.get('value')}" if r.args.get("value") else "")
        when = r.requested_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        table.add_row(when, r.device_id, what, r.requested_by, r.state, r.reason or "")
    Console().print(table)
