"""Residents' pages (role `resident`): my payer codes and linking one, a payer's meters, bills, history,
points and corrections. A payer code that is not linked to the signed-in resident answers exactly like
an unknown one (`not_found`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.config import BridgeConfig
from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.residents import CorrectionResult, ResidentError, correct_reading
from cloud_bridge.store.engine import read_only
from cloud_bridge.store.tables import bindings, readings
from cloud_bridge.submission.passes import window_rule
from cloud_bridge.submission.periods import Period
from cloud_bridge.web.charts import bar_chart
from cloud_bridge.web.feed import Event, payer_events
from cloud_bridge.web.pages import NotFound, client_address, formats, gettext, render, require_user, web
from cloud_bridge.web.portal import HISTORY_ROWS, PayerView, ReadingRow, payer_view, reason_code
from cloud_bridge.web.users import PAYER_CODE, is_linked, linked_payers, redeem_link_code
from cloud_bridge.web.words import Words
from contract.payloads import VALUE_PATTERN

log = logging.getLogger(__name__)
VALUE = re.compile(VALUE_PATTERN)
SHORT_HISTORY = 20  # readings per meter on the page; ?all=1 shows the portal's whole history


async def my_meters(request: Request) -> Response:
    user = require_user(request, role="resident")
    w = web(request)
    with read_only(w.engine) as conn:
        codes = linked_payers(conn, user.id)
        views = [payer_view(conn, w.config, code, w.now(), history_limit=0) for code in codes]
    return render(request, "me.html", views=views, linked=request.query_params.get("linked"))


async def link(request: Request) -> Response:
    user = require_user(request, role="resident")
    w = web(request)
    t = gettext(request)
    form = await request.form()
    now = w.now()
    key = f"link:{user.id}"
    ip_key = "ip:" + client_address(request)
    cfg = w.config.web
    if w.throttle.blocked(key, cfg.link_failures_per_account, now) or \
            w.throttle.blocked(ip_key, cfg.login_failures_per_ip, now):
        error = t.gettext("Too many wrong link codes. Try again in %(minutes)d minutes.") % {
            "minutes": max(1, cfg.login_window_s // 60)}
        return await _me_with_error(request, error, 429)
    payer_code = redeem_link_code(w.engine, user.id, str(form.get("code", ""))[:64], now)
    if payer_code is None:
        w.throttle.fail([key, ip_key], now)
        return await _me_with_error(request, t.gettext(
            "This link code does not work: it is wrong, already used or expired. Check it, or ask your "
            "utility for a new one."), 400)
    return RedirectResponse(f"/me?linked={payer_code}", status_code=303)


async def _me_with_error(request: Request, error: str, status: int) -> Response:
    user = require_user(request, role="resident")
    w = web(request)
    with read_only(w.engine) as conn:
        views = [payer_view(conn, w.config, code, w.now(), history_limit=0) for code in linked_payers(conn, user.id)]
    return render(request, "me.html", status_code=status, views=views, link_error=error)


def _linked_code(request: Request) -> str:
    """The payer code of the URL when it is linked to the signed-in resident; otherwise NotFound, the
    same answer for another resident's code, an unlinked code, an unknown code and a malformed one."""
    user = require_user(request, role="resident")
    code = request.path_params["code"]
    if not PAYER_CODE.match(code):
        raise NotFound()
    with read_only(web(request).engine) as conn:
        if not is_linked(conn, user.id, code):
            raise NotFound()
    return str(code)


def meter_charts(request: Request, view: PayerView) -> dict[str, dict[str, Markup]]:
    t = gettext(request)
    f = formats(request)
    unit = t.gettext("m³")
    empty = t.gettext("Not enough sure readings for a chart yet.")
    out = {}
    for m in view.meters:
        out[m.serial] = {
            "daily": bar_chart(m.daily, title=t.gettext("Consumption per day, m³"), unit=unit, label=f.day,
                               number=f.number, empty=empty),
            "monthly": bar_chart(m.monthly, title=t.gettext("Consumption per month, m³"), unit=unit,
                                 label=f.short_month, number=f.number, empty=empty)}
    return out


async def payer_page(request: Request) -> Response:
    code = _linked_code(request)
    w = web(request)
    with read_only(w.engine) as conn:
        view = payer_view(conn, w.config, code, w.now())
    per_meter = HISTORY_ROWS if request.query_params.get("all") else SHORT_HISTORY
    return render(request, "payer.html", v=view, charts=meter_charts(request, view), per_meter=per_meter)


async def payer_json(request: Request) -> Response:
    code = _linked_code(request)
    w = web(request)
    with read_only(w.engine) as conn:
        view = payer_view(conn, w.config, code, w.now())
    return JSONResponse(view.to_json())


def _reading_of(request: Request, code: str) -> ReadingRow:
    """The reading of the URL when it belongs to `code` (a linked payer); otherwise NotFound."""
    raw = request.path_params["reading_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound()
    w = web(request)
    with read_only(w.engine) as conn:
        r = conn.execute(
            select(readings.c.id, readings.c.taken_at, readings.c.value, readings.c.status, readings.c.reason,
                   bindings.c.meter_serial)
            .join(bindings, bindings.c.id == readings.c.binding_id)
            .where(readings.c.id == int(raw), bindings.c.payer_code == code)).first()
    if r is None:
        raise NotFound()
    return ReadingRow(r.id, r.taken_at, r.meter_serial, r.value, r.status, reason_code(r.reason), r.reason)


def _correction_page(request: Request, code: str, reading: ReadingRow, status_code: int = 200,
                     **context: object) -> Response:
    w = web(request)
    with read_only(w.engine) as conn:
        view = payer_view(conn, w.config, code, w.now())
    history = [c for c in view.corrections if c.reading_id == reading.id]
    standing = next((c for c in history if c.counts), None)
    if standing is not None:
        reading.corrected_value = standing.value
    meter = next((m for m in view.meters if m.serial == reading.meter_serial), None)
    return render(request, "correct.html", status_code=status_code, v=view, r=reading, meter=meter,
                  history=history, reading_period=str(Period.of(reading.taken_at, ZoneInfo(view.timezone))),
                  **context)


async def correct(request: Request) -> Response:
    code = _linked_code(request)
    reading = _reading_of(request, code)
    if request.method == "GET":
        return _correction_page(request, code, reading)
    w = web(request)
    t = gettext(request)
    form = await request.form()
    value = str(form.get("value", "")).strip().replace(",", ".")[:24]
    note = str(form.get("note", "")).strip()[:500] or None
    if not VALUE.match(value):
        return _correction_page(request, code, reading, 400, value=value, note=note, error=t.gettext(
            "Enter the number the meter shows, digits with a point or comma, e.g. 00123.456."))
    try:
        result = await run_in_threadpool(_correct, w.engine, w.config, reading.id, value, note, w.now)
    except ResidentError as exc:
        log.warning("correction of reading %s refused: %s", reading.id, exc)
        return _correction_page(request, code, reading, 400, value=value, note=note,
                                error=t.gettext("This correction cannot be recorded. Reload the page and try again."))
    return _correction_page(request, code, reading, outcome=outcome(request, result))


def _correct(engine: Engine, config: BridgeConfig, reading_id: int, value: str, note: str | None,
             clock: Callable[[], datetime]) -> CorrectionResult:
    config = one_try(config)
    with http_gateways(config) as gateways:
        return correct_reading(engine, config, reading_id, value, by="resident", note=note, at=clock(), clock=clock,
                               gateways=gateways)


def one_try(config: BridgeConfig) -> BridgeConfig:
    """The config for a correction sent while the resident waits: one attempt, at most 10 s; when billing
    does not answer, the submission stays pending and the bridge's next pass retries it (same key)."""
    sub = config.submission.model_copy(update={
        "max_attempts_per_pass": 1, "max_wait_in_pass_s": 0.0, "timeout_s": min(config.submission.timeout_s, 10.0)})
    return config.model_copy(update={"submission": sub})


def outcome(request: Request, result: CorrectionResult) -> dict[str, str]:
    """What happens next, in words: `{"tone": ok|warn|error, "text": ...}`."""
    t = gettext(request)
    f = formats(request)
    words = Words(t)
    verdict = result.verdict
    if result.action == "refused" and verdict is not None:
        span = words.plausible(verdict.plausible_low, verdict.plausible_high, f)
        text = t.gettext("Not accepted: %(value)s m³ does not fit this meter's readings around that time.") % {
            "value": result.value}
        if span:
            text += " " + t.gettext("A plausible value is %(span)s. Check the number on the meter.") % {"span": span}
        return {"tone": "error", "text": text}
    if result.action == "review":
        return {"tone": "warn", "text": t.gettext(
            "Kept for review: there are no readings around that time to check it against. The utility will "
            "confirm it before it is billed.")}
    s = result.submission
    if s is not None:
        if s.state == "accepted":
            return {"tone": "ok", "text": t.gettext("Sent to billing and accepted.")}
        if s.state == "refused":
            return {"tone": "error", "text": t.gettext("Sent to billing, which refused it: %(why)s.") % {
                "why": words.refusal(s.reason)}}
        return {"tone": "ok", "text": t.gettext(
            "Recorded. Billing did not answer yet; it is sent again with the next submission pass.")}
    if result.period is None:
        return {"tone": "warn", "text": t.gettext("Recorded; the reading belongs to no meter of a payer, so it is "
                                                  "not sent to billing.")}
    w = web(request)
    rule = window_rule(w.config)
    period = Period.parse(result.period)
    opens, closes = rule.window(period)
    now = w.now()
    if now < opens:
        return {"tone": "ok", "text": t.gettext(
            "Recorded. It is sent with the first submission pass after the window opens on %(opens)s.") % {
            "opens": f.when(opens)}}
    if now >= closes:
        return {"tone": "warn", "text": t.gettext(
            "Recorded, but the window for %(period)s closed on %(closes)s, so it is not sent to billing.") % {
            "period": f.month(str(period)), "closes": f.until(closes)}}
    return {"tone": "ok", "text": t.gettext(
        "Recorded. Billing already has this value, or a later reading of the meter counts for the period.")}


def _events(request: Request, user_id: int) -> list[Event]:
    w = web(request)
    now = w.now()
    events: list[Event] = []
    with read_only(w.engine) as conn:
        for code in linked_payers(conn, user_id):
            events.extend(payer_events(conn, w.config, code, now))
    events.sort(key=lambda e: (e.at, e.id), reverse=True)
    return events


async def notifications(request: Request) -> Response:
    user = require_user(request, role="resident")
    return render(request, "notifications.html", events=_events(request, user.id))


async def notifications_json(request: Request) -> Response:
    """The same feed for the utility's sender: kind, time (UTC), payer, meter, value, period, points, and
    `text` in the visitor's language."""
    user = require_user(request, role="resident")
    t = gettext(request)
    f = formats(request)
    words = Words(t)
    return JSONResponse({"events": [{**e.to_json(), "text": words.event(e, f)} for e in _events(request, user.id)]})


routes: list[BaseRoute] = [
    Route("/me", my_meters),
    Route("/me/notifications", notifications),
    Route("/me/notifications.json", notifications_json),
    Route("/me/link", link, methods=["POST"]),
    Route("/payer/{code:str}.json", payer_json),
    Route("/payer/{code:str}/reading/{reading_id:str}", correct, methods=["GET", "POST"]),
    Route("/payer/{code:str}", payer_page),
]
