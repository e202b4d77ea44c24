"""Residents' pages (role `resident`): my payer codes and linking one, a payer's meters, bills, history,
points and corrections. A payer code that is not linked to the signed-in resident answers exactly like
an unknown one (`not_found`)."""

from __future__ import annotations

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.store.engine import read_only
from cloud_bridge.web.charts import bar_chart
from cloud_bridge.web.pages import NotFound, client_address, formats, gettext, render, require_user, web
from cloud_bridge.web.portal import HISTORY_ROWS, PayerView, payer_view
from cloud_bridge.web.users import PAYER_CODE, is_linked, linked_payers, redeem_link_code

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
                               number=lambda v: f.number(v, 2), empty=empty),
            "monthly": bar_chart(m.monthly, title=t.gettext("Consumption per month, m³"), unit=unit,
                                 label=f.short_month, number=lambda v: f.number(v, 2), empty=empty)}
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


routes: list[BaseRoute] = [
    Route("/me", my_meters),
    Route("/me/link", link, methods=["POST"]),
    Route("/payer/{code:str}.json", payer_json),
    Route("/payer/{code:str}", payer_page),
]
