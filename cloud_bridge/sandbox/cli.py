"""`meter-bridge sandbox`: serve the billing + loyalty sandbox in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from cloud_bridge.sandbox.faults import Fault, FaultBoard
from cloud_bridge.sandbox.server import AccountsError, SandboxServer, load_accounts


@click.command("sandbox")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: a free one; the address is printed).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--accounts", "accounts_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CSV `payer_code,meter_serial` of the accounts billing knows (default: every well-formed "
                   "pair is known).")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("sandbox.sqlite"),
              show_default=True, help="The sandbox's own SQLite file (what it accepted, idempotency answers).")
@click.option("--outside-window", is_flag=True, help="Refuse every reading as outside_window (until switched "
              "off with POST /admin/faults {\"outside_window\": false}).")
@click.option("--fail-503", type=click.IntRange(0), default=0, help="Answer the first N POSTs with 503.")
@click.option("--fail-429", type=click.IntRange(0), default=0, help="Then answer N POSTs with 429.")
@click.option("--retry-after", type=click.IntRange(0, 3600), default=1, show_default=True,
              help="Retry-After seconds sent with 429.")
@click.pass_context
def sandbox(ctx: click.Context, port: int, host: str, accounts_path: Path | None, db_path: Path,
            outside_window: bool, fail_503: int, fail_429: int, retry_after: int) -> None:
    """Serve DESIGN.md's billing and loyalty contracts over HTTP for the demo and tests.

    POST /v1/readings and /v1/credits need `Authorization: Bearer <token>` when billing.token_file
    (loyalty.token_file for credits) is set in the config, and an Idempotency-Key header: the same key
    again gets the same answer. GET /v1/readings?payer=CODE and /v1/credits?payer=CODE show what was
    accepted. Failures on demand: POST /admin/faults {"mode": "503", "count": 3},
    {"mode": "429", "retry_after": 2, "count": 2}, {"mode": "delay", "delay_s": 5},
    {"outside_window": true}, {"mode": "none"}; GET /admin/faults shows the queue. Ctrl-C stops it.
    """
    from cloud_bridge.cli_common import fail, load_config
    from contract.settings import ConfigError, read_secret

    config = load_config(ctx)
    try:
        token = read_secret(config.billing.token_file)
        loyalty_token = read_secret(config.loyalty.token_file)
    except ConfigError as exc:
        fail(str(exc))
    accounts = None
    if accounts_path is not None:
        try:
            accounts = load_accounts(accounts_path)
        except AccountsError as exc:
            raise click.ClickException(str(exc)) from None
    board = FaultBoard()
    board.outside_window = outside_window
    if fail_503:
        board.push(Fault(mode="503", count=fail_503))
    if fail_429:
        board.push(Fault(mode="429", count=fail_429, retry_after=retry_after))
    try:
        server = SandboxServer(db_path, host=host, port=port, accounts=accounts, token=token,
                               loyalty_token=loyalty_token, faults=board)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror} (pick another --port)") from None
    known = f"{len(accounts)} payers from {accounts_path}" if accounts is not None else "any well-formed pair"
    auth = "bearer token" if token else "none (set billing.token_file to require one)"
    click.echo(f"sandbox listening on {server.url} (db {db_path}, accounts: {known}, auth: {auth})", err=False)
    click.echo(f"  billing {server.url}/v1/readings, loyalty {server.url}/v1/credits, faults {server.url}/admin/faults")
    import sys

    sys.stdout.flush()
    server.serve_forever()
