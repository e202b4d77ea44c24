"""Bar charts as inline SVG, rendered on the server: axes, ticks, units, a title per bar. No script;
the SVG scales to the width of a phone (viewBox)."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 400, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 24, 20, 30


def nice_step(top: float, ticks: int = 4) -> float:
    """A round tick step (1, 2, 2.5, 5 × 10ⁿ) so that `ticks` steps cover `top`."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def bar_chart(points: list[tuple[str, Decimal]], *, title: str, unit: str, label: Callable[[str], str],
              number: Callable[[Decimal, int], str], empty: str) -> Markup:
    """`points` (label key, value) oldest first → an SVG with a y axis in `unit` and x labels.
    `number(value, decimals)` formats a number in the visitor's language."""
    if not points:
        return Markup('<p class="note">{}</p>').format(empty)
    top = max(float(v) for _, v in points)
    step = nice_step(top)
    ymax = step * max(1, math.ceil(top / step - 1e-9))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bar = plot_w / len(points)
    every = max(1, math.ceil(len(points) / 6))  # at most ~6 x labels on a phone
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             'xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>",
             f'<text x="4" y="14">{escape(unit)}</text>']
    ticks = round(ymax / step)
    step_text = format(Decimal(str(step)).normalize(), "f")
    tick_digits = len(step_text.split(".")[1]) if "." in step_text else 0
    for i in range(ticks + 1):
        tick = step * i
        y = TOP + plot_h - tick / ymax * plot_h
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{escape(number(Decimal(str(round(tick, 6))), tick_digits))}</text>")
    for i, (key, v) in enumerate(points):
        h = float(v) / ymax * plot_h if ymax else 0.0
        x = LEFT + i * bar
        parts.append(f'<rect class="bar" x="{x + bar * 0.15:.1f}" y="{TOP + plot_h - h:.1f}" '
                     f'width="{max(bar * 0.7, 1):.1f}" height="{h:.1f}"><title>{escape(label(key))}: '
                     f"{escape(number(v, 3))} {escape(unit)}</title></rect>")
        if i % every == 0 or (i == len(points) - 1 and len(points) <= 6):
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                         f"{escape(label(key))}</text>")
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
