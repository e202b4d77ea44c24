"""`meter-bridge settle`: settle stored history (what the running bridge does for new readings)."""

from __future__ import annotations

import json

import click

from cloud_bridge.cli_common import fail, load_config, open_engine


@click.command("settle")
@click.option("--meter", "serials", multiple=True, metavar="SERIAL", help="Only this meter (repeatable).")
@click.option("--since", "since_text", metavar="ISO_TIME", default=None,
              help="Only readings taken from then on (older ones are read as context). Default: all.")
@click.option("--json", "as_json", is_flag=True, help="Print counts per meter as one JSON object.")
@click.pass_context
def settle(ctx: click.Context, serials: tuple[str, ...], since_text: str | None, as_json: bool) -> None:
    """Mark every stored reading settled (billable: later readings agree with it), outlier (ruled out,
    with the reason) or pending (waiting for later readings).

    Safe to run at any time and as often as you like: the result depends only on the stored readings,
    accepted corrections and what billing holds. `history` shows each reading's settlement; a
    submission pass bills the latest settled reading of a period.
    """
    from cloud_bridge.settlement import all_meters, settle_meter
    from cloud_bridge.store.tables import utcnow
    from cloud_bridge.submission.periods import parse_instant

    config = load_config(ctx)
    try:
        since = parse_instant(since_text) if since_text else None
    except ValueError as exc:
        fail(str(exc))
    engine = open_engine(ctx)
    out: dict[str, dict[str, int]] = {}
    try:
        with engine.begin() as conn:
            meters = all_meters(conn, serials or None)
        missing = sorted(set(serials) - set(meters))
        if missing:
            fail(f"no bound meter {', '.join(missing)} (see `meter-bridge devices list`)")
        for serial in meters:
            with engine.begin() as conn:
                result = settle_meter(conn, serial, config.settlement, utcnow(), since=since)
            counts = result.counts()
            out[serial] = {k: counts.get(k, 0) for k in ("settled", "outlier", "pending")} | {"changed": result.written}
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"meters": out}, ensure_ascii=False))
        return
    for serial, c in out.items():
        click.echo(f"{serial}: {c['settled']} settled, {c['outlier']} outlier, {c['pending']} pending "
                   f"({c['changed']} changed)")
    total = {k: sum(c[k] for c in out.values()) for k in ("settled", "outlier", "pending")}
    click.echo(f"{len(out)} meters: {total['settled']} settled, {total['outlier']} outlier, "
               f"{total['pending']} pending.")
