"""Operators' pages (role `operator`): the fleet page and one device's page. Every route starts with
`require_user(request, role="operator")`: signed out → the sign-in page; any other role → the same
answer as a page that does not exist.

Everything is read from the store (device_health), so the pages show the same as `devices list`,
`status` and the metrics, for any number of ingest workers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.commands import CommandError, command_history, send_command
from cloud_bridge.device_health import (
    FleetFilter,
    attention_reasons,
    billing_state,
    device_health,
    fleet_listing,
    meter_states,
    period_progress,
)
from cloud_bridge.fleet import fleet_counts
from cloud_bridge.settlement import settlement_of
from cloud_bridge.store.engine import read_only
from cloud_bridge.store.tables import readings
from cloud_bridge.web.fleet_chart import ChartPoint, reading_chart
from cloud_bridge.web.pages import NotFound, formats, gettext, render, require_user, web
from contract import topics
from contract.payloads import mask_payer

MAX_ROWS = 500
CHART_DAYS = 30
CHART_MAX_POINTS = 2000
TABLE_READINGS = 30
COMMANDS_SHOWN = 10


def N_(message: str) -> str:  # marks a msgid for extraction; translated where shown
    return message


STATUS_WORDS = {"ok": N_("ok"), "suspect": N_("not sure"), "error": N_("not read")}
SETTLEMENT_WORDS = {"settled": N_("settled"), "outlier": N_("off the meter's course"),
                    "pending": N_("waiting for later readings")}
COMMAND_WORDS = {"capture": N_("take a reading"), "reload": N_("reload"), "set-value": N_("set the value")}
ANSWER_WORDS = {
    "sent": N_("sent, no answer yet"),
    "accepted": N_("accepted"),
    "done": N_("done"),
    "refused": N_("refused by the device"),
    "no_answer": N_("no answer"),
    "blocked": N_("not sent: failed the checks"),
    "failed": N_("not sent: the broker"),
}
ATTENTION_WORDS = {
    "offline": N_("offline"),
    "stale": N_("no reading for too long"),
    "no_reading": N_("no reading yet"),
    "not_ok": N_("last readings not ok"),
    "needs_attention": N_("held back for the utility to check"),
    "refused": N_("refused by billing"),
}


class OpsWords:
    """Operators' plain words for codes (`ops.status(code)`, `ops.attention(code)`)."""

    def __init__(self, request: Request) -> None:
        self.t = gettext(request)

    def status(self, code: str | None) -> str:
        return self.t.gettext(STATUS_WORDS[code]) if code in STATUS_WORDS else (code or "—")

    def attention(self, code: str) -> str:
        return self.t.gettext(ATTENTION_WORDS[code]) if code in ATTENTION_WORDS else code

    def settlement(self, state: str | None) -> str:
        return self.t.gettext(SETTLEMENT_WORDS[state]) if state in SETTLEMENT_WORDS else ""

    def command(self, name: str) -> str:
        return self.t.gettext(COMMAND_WORDS[name]) if name in COMMAND_WORDS else name

    def answer(self, state: str) -> str:
        return self.t.gettext(ANSWER_WORDS[state]) if state in ANSWER_WORDS else state


def _number(value: str | None, *, lo: float, hi: float) -> float | None:
    """A filter's number from the query string; anything else is ignored (the filter is off)."""
    if value is None or not value.strip():
        return None
    try:
        v = float(value.replace(",", "."))
    except ValueError:
        return None
    return v if lo <= v <= hi else None


def parse_filter(request: Request) -> FleetFilter:
    q = request.query_params
    not_ok = _number(q.get("not_ok"), lo=1, hi=1000)
    return FleetFilter(offline_h=_number(q.get("offline_h"), lo=0, hi=24 * 366),
                       not_ok=int(not_ok) if not_ok is not None else None,
                       attention=q.get("attention") == "1", unbilled=q.get("unbilled") == "1",
                       stale=q.get("stale") == "1", query=(q.get("q") or "")[:64])


async def fleet_page(request: Request) -> Response:
    require_user(request, role="operator")
    w = web(request)
    now = w.now()
    flt = parse_filter(request)
    with read_only(w.engine) as conn:
        counts = fleet_counts(conn, now, w.config.fleet, w.config.window)
        progress = period_progress(conn, now, w.config.window)
        page = fleet_listing(conn, now, w.config.fleet, flt, progress, MAX_ROWS)
        conn.rollback()
    items = [{"h": h, "billing": billing_state(h, page.states),
              "attention": attention_reasons(h, page.states, progress, now)} for h in page.rows]
    return render(request, "ops_home.html", ops=OpsWords(request), counts=counts, progress=progress, flt=flt,
                  items=items, total=page.total, matched=page.matched, max_rows=MAX_ROWS, now=now)


def _mark(status: str, settlement: str | None) -> str:
    """How a reading is drawn: an outlier (settlement ruled it out) is ringed even when the device said ok."""
    if settlement == "outlier" and status != "error":
        return "outlier"
    return {"ok": "ok", "error": "error"}.get(status, "suspect")


async def device_page(request: Request) -> Response:
    require_user(request, role="operator")
    return await _device(request)


async def device_command(request: Request) -> Response:
    """A command button: the same `send_command` as `meter-bridge cmd` (checks, audit log with the
    operator's login, waits for the device's answer), then back to the device page showing the answer."""
    user = require_user(request, role="operator")
    w = web(request)
    device_id, name = request.path_params["device_id"], request.path_params["name"]
    if not topics.is_valid_device_id(device_id) or name not in topics.COMMANDS:
        raise NotFound()
    with read_only(w.engine) as conn:
        known = bool(device_health(conn, w.now(), w.config.fleet, [device_id]))
        conn.rollback()
    if not known:
        raise NotFound()
    form = await request.form()
    raw = form.get("value") if name == "set-value" else None
    value = raw.strip()[:32] if isinstance(raw, str) else None
    if name == "set-value" and not value:
        return await _device(request, error=gettext(request).gettext("Type the value the meter shows now."),
                             status_code=400)
    who = f"{user.login} (web" + (f", via {w.config.commands.username})" if w.config.commands.username else ")")
    try:
        outcome = await run_in_threadpool(send_command, w.engine, w.config, device_id, name, requested_by=who,
                                          value=value, confirm=name == "set-value" and form.get("confirm") == "1")
    except CommandError as exc:
        return await _device(request, error=str(exc), status_code=503)
    return RedirectResponse(f"/ops/devices/{device_id}?cmd={outcome.command_id}#commands", status_code=303)


async def _device(request: Request, *, error: str | None = None, status_code: int = 200) -> Response:
    w = web(request)
    device_id = request.path_params["device_id"]
    if not topics.is_valid_device_id(device_id):
        raise NotFound()
    now = w.now()
    with read_only(w.engine) as conn:
        found = device_health(conn, now, w.config.fleet, [device_id])
        if not found:
            raise NotFound()
        h = found[0]
        progress = period_progress(conn, now, w.config.window)
        states = meter_states(conn, progress.period)
        recent = conn.execute(
            select(readings.c.id, readings.c.seq, readings.c.taken_at, readings.c.stored_at, readings.c.value,
                   readings.c.status, readings.c.reason, readings.c.confidence)
            .where(readings.c.device_id == device_id, readings.c.taken_at >= now - timedelta(days=CHART_DAYS))
            .order_by(readings.c.taken_at.desc(), readings.c.seq.desc()).limit(CHART_MAX_POINTS)).all()
        settled = settlement_of(conn, [r.id for r in recent])
        conn.rollback()
    t = gettext(request)
    fmt = formats(request)
    points = []
    for r in recent:
        try:
            value = Decimal(r.value) if r.value is not None else None
        except InvalidOperation:
            value = None
        state, why = settled.get(r.id, (None, None))
        note = r.status if not r.reason else f"{r.status}: {r.reason}"
        if state == "outlier":
            note += f"; outlier: {why}" if why else "; outlier"
        points.append(ChartPoint(r.taken_at, value, _mark(r.status, state), note[:300]))  # type: ignore[arg-type]
    chart = reading_chart(points, title=t.gettext("Readings of the last %(days)d days") % {"days": CHART_DAYS},
                          unit="m³", when=fmt.short,
                          number=lambda v: fmt.number(v, 0 if v == v.to_integral_value() else 2), empty=t.gettext(
                              "No readings in the last %(days)d days.") % {"days": CHART_DAYS})
    commands = await run_in_threadpool(command_history, w.engine, device_id, COMMANDS_SHOWN)
    c = w.config.commands
    return render(request, "ops_device.html", status_code=status_code, ops=OpsWords(request), h=h,
                  commands=commands, commands_ready=bool(c.username and c.password_file),
                  command_timeout_s=c.timeout_s, highlight=request.query_params.get("cmd"), error=error,
                  chart=chart, readings=recent[:TABLE_READINGS], settled=settled,
                  billing=billing_state(h, states), attention=attention_reasons(h, states, progress, now),
                  progress=progress, now=now, payer_masked=mask_payer(h.payer_code) if h.payer_code else None)


routes: list[BaseRoute] = [
    Route("/ops", fleet_page),
    Route("/ops/devices/{device_id}", device_page),
    Route("/ops/devices/{device_id}/cmd/{name}", device_command, methods=["POST"]),
]
