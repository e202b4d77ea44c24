"""`meter-bridge history` and `meter-bridge correct`: a payer's readings, submissions and points, and a
resident's correction of a reading."""

from __future__ import annotations

import json
from typing import Any

import click

from cloud_bridge.cli_common import fail, load_config, open_engine

TABLE_LIMIT = 50


def _short(iso: str | None) -> str:
    return iso[:16].replace("T", " ") + "Z" if iso else "-"


@click.command("history")
@click.option("--payer", "payer_code", required=True, metavar="CODE", help="The 10-digit payer code.")
@click.option("--limit", type=click.IntRange(0), default=None,
              help=f"Newest readings to show (0: all; default {TABLE_LIMIT} in the table, all with --json).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: payer, readings, submissions, points.")
@click.pass_context
def history(ctx: click.Context, payer_code: str, limit: int | None, as_json: bool) -> None:
    """A payer's readings (with corrections), what went to billing and why anything was refused, and
    the loyalty points credited per period."""
    from cloud_bridge.residents import ResidentError, payer_history

    config = load_config(ctx)
    engine = open_engine(ctx)
    effective = limit if limit is not None else (None if as_json else TABLE_LIMIT)
    try:
        with engine.begin() as conn:
            data = payer_history(conn, payer_code, timezone=config.window.timezone, limit=effective or None,
                                 settle_first=config.settlement)
    except ResidentError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    _print_history(data, effective)


def _print_history(data: dict[str, Any], limit: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a pipe or a file: keep whole words, do not squeeze to 80
    meters = ", ".join(f"{m['meter_serial']} ({m['kind']}, "
                       + (f"device {m['device_id']}" if m["device_id"] else "read from photos")
                       + f"{', until ' + _short(m['valid_to']) if m['valid_to'] else ''})" for m in data["meters"])
    console.print(f"Payer {data['payer']}, {data['address']}: {meters or 'no meters'}")
    t = Table(title="Readings" + (f" (newest {limit})" if limit and len(data["readings"]) >= limit else ""))
    for col in ("id", "taken at", "meter", "device / photo", "seq", "value", "status", "reason", "corrected",
                "settlement"):
        t.add_column(col, overflow="fold")
    for r in data["readings"]:
        corrected = f"{r['corrected_value']} by {r['corrected_by']}" if r["corrected_value"] else ""
        s = r["settlement"]
        settled = s["state"] + (f": {s['reason']}" if s["state"] == "outlier" and s["reason"] else "")
        photo = r.get("photo")
        source = r["device_id"] if r["device_id"] else \
            f"photo {photo['photo_id']}{' (edited)' if photo['edited'] else ''}" if photo else r.get("source", "")
        t.add_row(str(r["id"]), _short(r["taken_at"]), r["meter_serial"], source, str(r["seq"]),
                  r["value"] or "-", r["status"], r["reason"] or "", corrected, settled)
    console.print(t)
    held = [c for c in data["corrections"] if c["state"] != "accepted"]
    if held:
        c_t = Table(title="Corrections not used for billing")
        for col in ("id", "reading", "value", "by", "state", "why"):
            c_t.add_column(col, overflow="fold")
        for c in held:
            c_t.add_row(str(c["id"]), str(c["reading_id"]), c["value"], c["by"], c["state"], c["reason"] or "")
        console.print(c_t)
    s = Table(title="Submissions to billing")
    for col in ("period", "meter", "value", "taken at", "state", "reason", "tries", "billing id", "key"):
        s.add_column(col, overflow="fold")
    for x in data["submissions"]:
        s.add_row(x["period"], x["meter_serial"], x["value"] or "-", _short(x["taken_at"]), x["state"],
                  x["reason"] or "", str(x["attempts"]), x["submission_id"] or "", x["key"])
    console.print(s)
    p = Table(title=f"Loyalty points (balance {data['balance']})")
    for col in ("period", "points", "state", "reason", "credit id"):
        p.add_column(col, overflow="fold")
    for x in data["points"]:
        p.add_row(x["period"], str(x["points"]), x["state"], x["reason"] or "", x["credit_id"] or "")
    console.print(p)


@click.command("correct")
@click.argument("reading_id", type=int)
@click.option("--value", required=True, metavar="V", help="The value the meter really shows, e.g. 00123.456.")
@click.option("--by", type=click.Choice(["resident", "installer", "operator"]), default="resident",
              show_default=True, help="Who corrects it.")
@click.option("--note", default=None, help="Why, in a few words.")
@click.option("--confirm", is_flag=True,
              help="Accept a value the checks hold for review (nothing around it to check against); "
                   "operators and installers only.")
@click.option("--at", "at_text", metavar="ISO_TIME", default=None,
              help="Decide whether the period is open as if at this time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def correct(ctx: click.Context, reading_id: int, value: str, by: str, note: str | None, confirm: bool,
            at_text: str | None, as_json: bool) -> None:
    """Check and record a correction of READING_ID (a new row pointing at it; the reading is kept as it was).

    The value goes through the same checks as a device's reading: the meter's readings before and after
    it must allow it, it may not be below what billing holds, nor have more digits than a meter has.
    A value they rule out is refused (exit status 1) with the range that is plausible; one with nothing
    around it to check against is held for an operator (exit status 3; `--confirm`). An accepted correction makes the
    reading billable; if its period is open and the value differs from what billing was sent, it is
    submitted with its own idempotency key (payer:meter:period:c<correction id>); billing may refuse it
    (e.g. decreasing_value), and `history` shows why."""
    from cloud_bridge.gateways.http import http_gateways
    from cloud_bridge.residents import ResidentError, correct_reading
    from cloud_bridge.submission.periods import parse_instant

    config = load_config(ctx)
    try:
        at = parse_instant(at_text) if at_text else None
    except ValueError as exc:
        fail(str(exc))
    engine = open_engine(ctx)
    try:
        with http_gateways(config) as gateways:
            result = correct_reading(engine, config, reading_id, value, by=by, note=note, confirm=confirm, at=at,
                                     gateways=gateways)
    except ResidentError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        click.echo(f"correction {result.correction_id} of reading {reading_id}: {result.old_value or '-'} -> "
                   f"{result.value}; {result.message}")
    if result.action in ("refused", "review"):
        ctx.exit(1 if result.action == "refused" else 3)
