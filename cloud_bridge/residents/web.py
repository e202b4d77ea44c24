"""A small read-only page per payer: `GET /payer/{code}` (history table and consumption per month as
inline SVG) and `GET /payer/{code}.json` (the `history --json` object). Server-side HTML, no scripts.

It has no login of its own: it listens on loopback by default and belongs behind the utility's
authenticating proxy, which decides who may see which payer code."""

from __future__ import annotations

import html
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from cloud_bridge.residents import ResidentError, payer_history

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig


def monthly_consumption(history: dict[str, Any]) -> list[tuple[str, Decimal]]:
    """m³ per period, summed over the payer's meters: last usable value of the period minus the last one
    before it (a meter's first period counts from its first reading)."""
    per_meter: dict[str, dict[str, tuple[str, str, Decimal]]] = {}
    first: dict[str, Decimal] = {}
    for r in sorted(history["readings"], key=lambda r: (r["taken_at"], r["id"])):
        value = r["corrected_value"] or (r["value"] if r["status"] == "ok" else None)
        if value is None:
            continue
        v = Decimal(value)
        first.setdefault(r["meter_serial"], v)
        per_meter.setdefault(r["meter_serial"], {})[r["period"]] = (r["taken_at"], r["period"], v)
    totals: dict[str, Decimal] = {}
    for meter, periods in per_meter.items():
        previous = first[meter]
        for period in sorted(periods):
            v = periods[period][2]
            totals[period] = totals.get(period, Decimal(0)) + max(Decimal(0), v - previous)
            previous = v
    return sorted(totals.items())


def consumption_svg(points: list[tuple[str, Decimal]], width: int = 640, height: int = 200) -> str:
    if not points:
        return "<p>No usable readings yet.</p>"
    top = max(float(v) for _, v in points) or 1.0
    bar = (width - 40) / len(points)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
             'role="img" aria-label="consumption per month">']
    for i, (period, v) in enumerate(points):
        h = float(v) / top * height
        x = 30 + i * bar
        parts.append(f'<rect x="{x + 4:.1f}" y="{height - h + 10:.1f}" width="{max(bar - 8, 2):.1f}" '
                     f'height="{h:.1f}" fill="#3b82f6"><title>{period}: {v:.3f} m³</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height + 25}" font-size="11" text-anchor="middle">'
                     f'{period}</text>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - h + 5:.1f}" font-size="10" '
                     f'text-anchor="middle">{v:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(title: str, cols: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def render_page(history: dict[str, Any]) -> str:
    consumption = monthly_consumption(history)
    readings = [[r["taken_at"], r["meter_serial"], r["value"], r["status"], r["reason"], r["corrected_value"]]
                for r in history["readings"][:200]]
    subs = [[s["period"], s["meter_serial"], s["value"], s["state"], s["reason"]] for s in history["submissions"]]
    pts = [[p["period"], p["points"], p["state"]] for p in history["points"]]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Meter readings</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 8px;font-size:13px}</style></head><body>"
        f"<h1>Payer {html.escape(history['payer'])}</h1><p>{html.escape(history['address'])}</p>"
        f"<h2>Consumption per month (m³)</h2>{consumption_svg(consumption)}"
        + _table("Submissions to billing", ["period", "meter", "value", "state", "reason"], subs)
        + _table(f"Loyalty points (balance {history['balance']})", ["period", "points", "state"], pts)
        + _table("Readings (newest 200)", ["taken at", "meter", "value", "status", "reason", "corrected"], readings)
        + "</body></html>")


def create_web_app(engine: Engine, config: BridgeConfig) -> Starlette:
    def load(code: str) -> dict[str, Any] | Response:
        try:
            with engine.begin() as conn:
                return payer_history(conn, code, timezone=config.window.timezone)
        except ResidentError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    async def page(request: Request) -> Response:
        data = load(request.path_params["code"])
        return data if isinstance(data, Response) else HTMLResponse(render_page(data))

    async def as_json(request: Request) -> Response:
        data = load(request.path_params["code"])
        return data if isinstance(data, Response) else JSONResponse(data)

    return Starlette(routes=[Route("/payer/{code:str}.json", as_json), Route("/payer/{code:str}", page)])
