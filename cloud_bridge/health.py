"""`meter-bridge status`: how ingest is doing, from the database only (works for any number of
workers, and on a broker tier where retained topics are not reliable)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, func, select

from cloud_bridge.cli_common import load_config, open_engine
from cloud_bridge.config import BridgeConfig
from cloud_bridge.fleet import fleet_counts
from cloud_bridge.store.engine import read_only
from cloud_bridge.store.tables import counters, readings, refusals, utcnow
from contract.payloads import format_utc

DELAY_SAMPLE = 1000


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def collect(conn: Connection, cfg: BridgeConfig, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    counted = dict(conn.execute(select(counters.c.name, func.sum(counters.c.value)).group_by(counters.c.name)).all())
    by_status: dict[str, int] = dict(
        conn.execute(select(readings.c.status, func.count()).group_by(readings.c.status)).all())
    by_reason: dict[str, int] = dict(conn.execute(select(refusals.c.reason, func.count()).group_by(refusals.c.reason)
                                  .order_by(refusals.c.reason)).all())
    newest = conn.execute(select(func.max(readings.c.stored_at))).scalar()
    recent = conn.execute(select(readings.c.stored_at, readings.c.taken_at)
                          .order_by(readings.c.id.desc()).limit(DELAY_SAMPLE)).all()
    delays = sorted((r.stored_at - r.taken_at).total_seconds() for r in recent)
    last_minute = conn.execute(select(func.count()).where(
        readings.c.stored_at >= now - timedelta(seconds=60))).scalar_one()
    stored = sum(by_status.values())
    fleet = fleet_counts(conn, now, cfg.fleet, cfg.window)
    return {
        "at": format_utc(now),
        "received": int(counted.get("received", 0)),
        "stored": stored,
        "duplicate": int(counted.get("duplicate", 0)),
        "seq_reused": int(counted.get("seq_reused", 0)),
        "refused": sum(by_reason.values()),
        "refused_by_reason": {k: int(v) for k, v in by_reason.items()},
        "readings_by_status": {k: int(v) for k, v in sorted(by_status.items())},
        "stored_last_minute": int(last_minute),
        "lag": {
            "since_last_stored_s": round((now - newest).total_seconds(), 3) if newest else None,
            "delay_p50_s": _round(_percentile(delays, 0.5)),
            "delay_p95_s": _round(_percentile(delays, 0.95)),
            "delay_max_s": _round(delays[-1] if delays else None),
            "sample": len(delays),
        },
        "fleet": fleet.model_dump(mode="json"),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _human_s(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.2f} s"


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts and monitoring).")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Counters from the database: received, stored, duplicate, refused by reason, lag, fleet.

    `received` counts every message on a reading topic; received = stored + duplicate + refused
    (for messages handled since the counters began). Lag: time since the newest stored reading,
    and the delay stored_at - taken_at over the last 1,000 readings (a device that was offline
    for a week shows up here, it is never refused).
    """
    cfg = load_config(ctx)
    engine = open_engine(ctx)
    try:
        with read_only(engine) as conn:
            data = collect(conn, cfg)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(data))
        return
    out = Console()
    t = Table(title=f"bridge status at {data['at']}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("received", str(data["received"]))
    t.add_row("stored", str(data["stored"]))
    for status_name, n in data["readings_by_status"].items():
        t.add_row(f"  {status_name}", str(n))
    t.add_row("duplicate", str(data["duplicate"]))
    t.add_row("refused", str(data["refused"]))
    for reason, n in data["refused_by_reason"].items():
        t.add_row(f"  {reason}", str(n))
    t.add_row("stored in the last minute", str(data["stored_last_minute"]))
    lag = data["lag"]
    t.add_row("since last stored", _human_s(lag["since_last_stored_s"]))
    t.add_row(f"delay taken->stored p50 / p95 / max (last {lag['sample']})",
              f"{_human_s(lag['delay_p50_s'])} / {_human_s(lag['delay_p95_s'])} / {_human_s(lag['delay_max_s'])}")
    f = data["fleet"]
    t.add_row("devices (online / offline / stale)", f"{f['devices']} ({f['online']} / {f['offline']} / {f['stale']})")
    t.add_row("devices with suspect readings, last day", str(f["suspect_last_day"]))
    t.add_row("devices with error readings, last day", str(f["errors_last_day"]))
    t.add_row(f"meters submitted in {f['period']} (needs attention)",
              f"{f['submitted_this_period']} ({f['needs_attention']})")
    t.add_row(f"corrections accepted in {f['period']}", str(f["corrections_this_period"]))
    out.print(t)
