"""One device's readings over time as inline SVG, drawn on the server (no script; scales to a phone).

The line joins the readings that count (ok / settled) and the y axis follows them; the others are marked,
never joined, at the edge when they are off the scale: `suspect`
(a triangle at the value the device was unsure of), `outlier` (a ring: settlement found it off the
meter's course), `error` (a tick under the axis: nothing could be read). Each mark has a <title>."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Literal

from markupsafe import Markup

from cloud_bridge.web.charts import nice_step

WIDTH, HEIGHT = 400, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 20, 40
Mark = Literal["ok", "suspect", "outlier", "error"]


@dataclass(frozen=True)
class ChartPoint:
    at: datetime
    value: Decimal | None
    mark: Mark
    note: str = ""  # shown in the mark's tooltip (status, reason)


def reading_chart(points: list[ChartPoint], *, title: str, unit: str, when: Callable[[datetime], str],
                  number: Callable[[Decimal], str], empty: str) -> Markup:
    if not points:
        return Markup('<p class="note">{}</p>').format(empty)
    points = sorted(points, key=lambda p: p.at)
    # The axis follows the readings on the meter's course; a mark far off it (an outlier of 999 m³) is
    # drawn at the edge, its tooltip saying the value, so it does not flatten the course into a line.
    values = [p.value for p in points if p.value is not None and p.mark == "ok"] or \
        [p.value for p in points if p.value is not None]
    t0, t1 = points[0].at.timestamp(), points[-1].at.timestamp()
    span_t = max(t1 - t0, 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    if values:
        lo, hi = float(min(values)), float(max(values))
    else:
        lo, hi = 0.0, 1.0
    step = nice_step(max(hi - lo, 1e-3))
    ymin = step * math.floor(lo / step)
    ymax = max(step * math.ceil(hi / step), ymin + step)

    def x(p: ChartPoint) -> float:
        return LEFT + (p.at.timestamp() - t0) / span_t * plot_w if t1 > t0 else LEFT + plot_w / 2

    def y(v: Decimal) -> float:
        return TOP + plot_h - (min(max(float(v), ymin), ymax) - ymin) / (ymax - ymin) * plot_h

    parts = [f'<svg class="chart readings" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             'xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>",
             f'<text x="4" y="14">{escape(unit)}</text>']
    ticks = round((ymax - ymin) / step)
    for i in range(ticks + 1):
        tick = ymin + step * i
        ty = TOP + plot_h - (tick - ymin) / (ymax - ymin) * plot_h
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{ty + 4:.1f}" text-anchor="end">'
                     f"{escape(number(Decimal(str(round(tick, 6)))))}</text>")
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        at = datetime.fromtimestamp(t0 + frac * (t1 - t0), tz=points[0].at.tzinfo)
        parts.append(f'<text x="{LEFT + frac * plot_w:.1f}" y="{HEIGHT - BOTTOM + 30}" text-anchor="{anchor}">'
                     f"{escape(when(at))}</text>")
    line = [p for p in points if p.mark == "ok" and p.value is not None]
    if len(line) > 1:
        d = " ".join(f"{'M' if i == 0 else 'L'}{x(p):.1f},{y(p.value):.1f}"  # type: ignore[arg-type]
                     for i, p in enumerate(line))
        parts.append(f'<path class="line" d="{d}"/>')
    for p in points:
        tip = f"<title>{escape(when(p.at))}: {escape(str(p.value) if p.value is not None else '—')}" \
              f"{' ' + escape(p.note) if p.note else ''}</title>"
        px = x(p)
        if p.mark == "error" or p.value is None:
            base = TOP + plot_h
            parts.append(f'<line class="pt-error" x1="{px:.1f}" x2="{px:.1f}" y1="{base + 3:.1f}" '
                         f'y2="{base + 12:.1f}">{tip}</line>')
        elif p.mark == "ok":
            parts.append(f'<circle class="pt-ok" cx="{px:.1f}" cy="{y(p.value):.1f}" r="2.2">{tip}</circle>')
        elif p.mark == "outlier":
            parts.append(f'<circle class="pt-outlier" cx="{px:.1f}" cy="{y(p.value):.1f}" r="4.5">{tip}</circle>')
        else:
            py = y(p.value)
            parts.append(f'<path class="pt-suspect" d="M{px:.1f},{py - 5:.1f} L{px + 4.5:.1f},{py + 3.5:.1f} '
                         f'L{px - 4.5:.1f},{py + 3.5:.1f} Z">{tip}</path>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
