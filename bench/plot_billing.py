"""The picture for docs/billing.md: what a submission pass bills out of a meter's last days of readings.

    python -m bench.plot_billing [--out docs/img/billing-settlement.png]

The readings go through the bridge's own settlement (`cloud_bridge.settlement.settle_rows`: the bridge's
checks, then `contract.settlement.settle`), as `meter-bridge settle` and a pass do; the pass bills the
latest settled reading taken up to its time that the device sent `ok`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from cloud_bridge.settlement import Row, settle_rows
from cloud_bridge.settlement.settings import SettlementSection
from cloud_bridge.submission.selection import billable

T0 = datetime(2026, 10, 19, 0, tzinfo=UTC)
EVERY = timedelta(hours=4)
# (value, status): the misreads, sent `ok` by the device, among true readings.
SEQUENCE = [
    ("00160.050", "ok"), ("00160.120", "ok"), ("00160.210", "ok"), ("00160.290", "ok"),
    ("00160.870", "ok"),  # tenths wheel: 3 read as 8
    ("00160.440", "ok"), ("00160.520", "ok"), ("00160.600", "ok"), ("00160.610", "ok"),
    ("00160.660", "suspect"),  # the device held it back (low confidence)
    ("999999999999.000000", "ok"),  # absurd, sent ok
    ("00160.790", "ok"), ("00160.850", "ok"),
]
STYLE = {"settled": ("o", "#2a9d4b"), "outlier": ("X", "#d62828"), "pending": ("s", "#f4a100")}


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/img/billing-settlement.png"),
              show_default=True)
def main(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [Row(i, T0 + i * EVERY, status, value, None if status == "ok" else "digit 4 below confidence",
                json.dumps({"digits": []}))
            for i, (value, status) in enumerate(SEQUENCE)]
    results = settle_rows(rows, None, SettlementSection())
    at = T0 + (len(rows) - 1) * EVERY + timedelta(minutes=30)
    billed = max((r for r in results if billable(r)), key=lambda r: r.taken_at)
    top = 161.2
    fig, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    ax: Any = axes  # matplotlib's stubs take no datetimes on the x axis; matplotlib itself does
    for state, (marker, colour) in STYLE.items():
        pts = [(r.taken_at, min(float(Decimal(r.value or "0")), top)) for r in results if r.state == state]
        ax.scatter([t for t, _ in pts], [v for _, v in pts], marker=marker, color=colour, s=40, label=state, zorder=3)
    for r in results:
        v = float(Decimal(r.value or "0"))
        note = (r.reason or "").split(":", 1)[0]
        if r.status == "suspect":
            note = f"device: suspect\n{r.state}, not billed"
        if v > top:
            ax.annotate(f"{r.value}\n{note}", (r.taken_at, top), xytext=(0, -34), textcoords="offset points",
                        ha="center", fontsize=7, color="#d62828", arrowprops={"arrowstyle": "->", "color": "#d62828"})
        elif r.state != "settled" or r.status == "suspect":
            ax.annotate(note, (r.taken_at, v), xytext=(0, 9), textcoords="offset points", ha="center", fontsize=7)
    ax.scatter([billed.taken_at], [float(Decimal(billed.value or "0"))], s=260, facecolors="none",
               edgecolors="#1d3557", linewidths=2, zorder=4, label="billed")
    ax.axvline(at, color="#1d3557", ls="--", lw=1)
    ax.text(at, 160.0, " pass", color="#1d3557", fontsize=8, va="bottom")
    ax.set_ylim(159.95, top + 0.05)
    ax.set_ylabel("m³")
    ax.set_title("What a submission pass bills: the latest settled reading the device sent ok", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    click.echo(f"written {out}: billed {billed.value} taken {billed.taken_at:%Y-%m-%d %H:%M}Z")


if __name__ == "__main__":
    main()
