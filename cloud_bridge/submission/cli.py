"""`meter-bridge submit`: one submission pass by hand (also how an operator re-runs a missed pass)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cloud_bridge.cli_common import fail, load_config, open_engine


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%MZ") if value else "-"


@click.command("submit")
@click.option("--period", "period_text", metavar="YYYY-MM", default=None,
              help="Billing period (a calendar month in window.timezone). Default: the one whose window is open.")
@click.option("--at", "at_text", metavar="ISO_TIME", default=None,
              help="Run the pass as if at this time (UTC ISO 8601, e.g. 2026-12-01T09:00:00Z): only readings "
                   "taken up to then count, and the window is checked at that time. Default: now.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; change nothing, call nobody.")
@click.option("--json", "as_json", is_flag=True, help="Print what the pass did per meter as one JSON object.")
@click.pass_context
def submit(ctx: click.Context, period_text: str | None, at_text: str | None, dry_run: bool, as_json: bool) -> None:
    """Run one submission pass to billing and loyalty, and print what happened per meter.

    For each meter bound in the period, the latest *settled* reading taken up to --at (the readings
    around it agree with it; the device sent it `ok`, or a person's checked correction) goes to
    billing once, with idempotency key `payer:meter:period`; an accepted submission earns the payer
    loyalty points once per period. A meter with nothing settled (only suspect readings, outliers, or
    readings still waiting for later ones) is listed as needs_attention with the reason and never sent.
    Items that failed before (503, 429, timeouts) are retried when due.
    Exit status 0 when the pass ran, also when some meters need attention.
    """
    from cloud_bridge.gateways.http import http_gateways
    from cloud_bridge.submission.passes import run_submission_pass
    from cloud_bridge.submission.periods import Period, parse_instant

    config = load_config(ctx)
    try:
        period = Period.parse(period_text) if period_text else None
        at = parse_instant(at_text) if at_text else datetime.now(UTC)
    except ValueError as exc:
        fail(str(exc))
    engine = open_engine(ctx)
    try:
        with http_gateways(config) as gateways:
            report = run_submission_pass(engine, config, at, period=period, dry_run=dry_run, gateways=gateways)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
        return
    _print_report(report)


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a pipe or a file: keep whole words, do not squeeze to 80
    if report.period is None:
        console.print(f"No submission window is open at {_time(report.at)}; pass --period YYYY-MM to name one.")
    elif report.window is not None:
        opens, closes = report.window
        state = "open" if report.window_open else "closed"
        console.print(f"Period {report.period}: window {_time(opens)} – {_time(closes)} is {state} "
                      f"at {_time(report.at)}{' (dry run)' if report.dry_run else ''}.")
        if not report.window_open:
            console.print("Nothing new is queued outside the window; earlier items still due were retried.")
    table = Table(title="Submissions")
    for col in ("payer", "meter", "period", "value", "taken at", "state", "reason", "tries", "billing id", "this pass"):
        table.add_column(col, overflow="fold")
    from contract.payloads import mask_payer

    for m in report.meters:
        table.add_row(mask_payer(m.payer_code), m.meter_serial, m.period, m.value or "-", _time(m.taken_at),
                      m.state, m.reason or "", str(m.attempts), m.submission_id or "", m.action)
    console.print(table)
    if report.credits:
        credits = Table(title="Loyalty credits")
        for col in ("payer", "period", "points", "state", "reason", "credit id"):
            credits.add_column(col, overflow="fold")
        for c in report.credits:
            credits.add_row(mask_payer(c.payer_code), c.period, str(c.points), c.state, c.reason or "",
                            c.credit_id or "")
        console.print(credits)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts().items())) or "no meters"
    console.print(f"{counts}.")
