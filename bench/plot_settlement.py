"""The picture of settlement for docs/reading.md: readings over time, settled, outliers and pending marked.

    python -m bench.plot_settlement [--replay bench-out/reading.json] [--out docs/img/settlement.png]

Top: the misread of issue 13 (00160.37 read as 00160.87) with its neighbours, settled by
``contract.settlement.settle`` exactly as the bridge and `meter-edge read` do. Bottom (when
``bench/reading.py`` has written its replay): a day and a half of a real-crop household around a frame
settlement set aside, with the meter's true value.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from contract.settlement import Observation, settle

T0 = datetime(2026, 11, 2, 6, tzinfo=UTC)
ISSUE = ["00160.05", "00160.12", "00160.21", "00160.29", "00160.87", "00160.44", "00160.52", "00160.60",
         "00160.61", "00160.66"]
STYLE = {"settled": ("o", "#2a9d4b", "settled"), "outlier": ("X", "#d62828", "outlier"),
         "pending": ("s", "#f4a100", "pending")}


def issue_example() -> list[tuple[datetime, float, str, str | None]]:
    obs = [Observation(i, T0 + timedelta(hours=i), Decimal(v), "ok", decimals=2) for i, v in enumerate(ISSUE)]
    res = settle(obs, max_rate_m3_per_h=Decimal(3))
    return [(o.taken_at, float(o.value or 0), r.state, r.code) for o, r in zip(obs, res, strict=True)]


def replay_window(path: Path, hours: int = 36) -> tuple[str, list[dict[str, Any]]] | None:
    """The crop-replay frames around the first outlier with a value, else around the first frame nothing
    was read from (None when the replay has neither)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    crops = [seq for seq in data["sequences"] if seq["kind"] == "crops"]
    for wanted in (lambda f: f["settlement"] == "outlier" and f["value"] is not None,
                   lambda f: f["settlement"] == "outlier"):
        for seq in crops:
            frames = seq["frames"]
            for i, f in enumerate(frames):
                if wanted(f) and hours // 2 <= i < len(frames) - hours // 2:
                    return " ".join(seq["key"][:2]), frames[i - hours // 2:i + hours // 2]
    return None


def draw(ax: Any, points: list[tuple[datetime, float | None, str, str | None]], title: str,
         truth: list[tuple[datetime, float]] | None = None) -> None:
    if truth:
        ax.plot([t for t, _ in truth], [v for _, v in truth], "-", color="#888888", lw=1, label="true value")
    blanks = [t for t, v, _, _ in points if v is None]
    for k, t in enumerate(blanks):
        ax.axvline(t, color="#bbbbbb", lw=1, ls=":", label="nothing read (no_value)" if k == 0 else None)
    for state, (marker, colour, label) in STYLE.items():
        pts = [(t, v) for t, v, s, _ in points if s == state and v is not None]
        if pts:
            ax.scatter([t for t, _ in pts], [v for _, v in pts], marker=marker, color=colour, s=36, label=label,
                       zorder=3)
    for t, v, state, code in points:
        if state != "settled" and v is not None and code:
            ax.annotate(code, (t, v), textcoords="offset points", xytext=(6, -4), fontsize=7,
                        color=STYLE[state][1])
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("m³")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


@click.command()
@click.option("--replay", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench-out/reading.json"),
              show_default=True, help="The replay written by `python -m bench.reading`.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/img/settlement.png"),
              show_default=True)
def main(replay: Path, out: Path) -> None:
    """Draw docs/img/settlement.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    window = replay_window(replay) if replay.is_file() else None
    fig, axes = plt.subplots(2 if window else 1, 1, figsize=(9, 6.4 if window else 3.4), dpi=90)
    axes = list(axes) if window else [axes]
    ex = issue_example()
    draw(axes[0], [(t, v, s, c) for t, v, s, c in ex],
         "Issue 13: 00160.37 read as 00160.87 (the tenths wheel's 3 as 8); the readings after it outvote it")
    if window:
        key, frames = window
        pts = [(datetime.fromisoformat(f["taken_at"]), None if f["value"] is None else float(f["value"]),
                f["settlement"], (f["settlement_reason"] or "").split(":", 1)[0] or None) for f in frames]
        truth = [(datetime.fromisoformat(f["taken_at"]), f["truth"]) for f in frames]
        draw(axes[1], pts, f"Real-crop replay, household {key}: a day and a half, a frame an hour", truth)
    for ax in axes:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %H:%M"))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
