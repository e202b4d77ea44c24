"""The resident's photo page: choose the meter, take or upload a photo, see what the reader proposes with
the counter box and the wheel boxes drawn, drag the box to read again, confirm or edit the value, send.

Routes (role `resident`, only for payer codes linked to the signed-in resident; anything else answers
like a page that does not exist). The page's script (static/photo.js) calls the JSON ones with the
session's CSRF token in the `X-CSRF-Token` header:
- `GET  /payer/{code}/photo`: the page;
- `POST /payer/{code}/photo`: multipart `meter` + `photo` (at most 10 MB: the CSRF middleware refuses a
  larger body before reading it) → the proposal, or a refusal in the resident's language;
- `GET  /payer/{code}/photo/{id}.jpg`: the stored photo (upright, no metadata);
- `POST /payer/{code}/photo/{id}/box`: `{"counter_box": [x, y, w, h]}` → the proposal read in that box;
- `POST /payer/{code}/photo/{id}/send`: `{"value": "00123.456"}` → what became of it.
Every refusal is counted (`meterfleet_photos_refused_total{reason}`) and logged.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.config import BridgeConfig
from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.photo import store
from cloud_bridge.photo.upload import MAX_UPLOAD_BYTES, PhotoRefused, decode_stored, normalise
from cloud_bridge.registry import PhotoMeter, photo_binding, photo_meters
from cloud_bridge.store.engine import read_only
from cloud_bridge.web.pages import NotFound, formats, gettext, render, require_user, web
from cloud_bridge.web.portal import payer_view
from cloud_bridge.web.resident import _linked_code, one_try
from cloud_bridge.web.words import Words

log = logging.getLogger(__name__)

UPLOAD_PATH = re.compile(r"/payer/[0-9]{10}/photo")
LARGE_BODIES = ((UPLOAD_PATH, MAX_UPLOAD_BYTES + 64 * 1024),)  # the photo and a few small form fields
PHOTO_ID = re.compile(r"^[0-9]{1,18}$")
MAX_READS = threading.BoundedSemaphore(2)  # photos read at once by this process (the reader is CPU-bound)


def _refuse(request: Request, code: str, status: int = 400, **values: Any) -> JSONResponse:
    """A refusal in the resident's language: counted and logged here, nothing stored."""
    w = web(request)
    with w.engine.begin() as conn:
        store.count(conn, Counter({f"photo_refused:{code}": 1}), w.now())
    log.info("photo refused for %s: %s %s", request.url.path, code, values.get("detail", ""))
    words = Words(gettext(request))
    return JSONResponse({"error": code, "message": words.photo_refusal(code, formats(request), **values)},
                        status_code=status)


def _proposal_json(request: Request, photo_id: int, code: str, width: int, height: int,
                   proposal: dict[str, Any], digits: int, decimals: int) -> dict[str, Any]:
    words = Words(gettext(request))
    status = str(proposal.get("status"))
    return {
        "photo_id": photo_id, "image": f"/payer/{code}/photo/{photo_id}.jpg", "width": width, "height": height,
        "value": proposal.get("value"), "status": status, "confidence": proposal.get("confidence"),
        "counter_box": proposal.get("counter_box"), "boxes": proposal.get("boxes") or [],
        "angle_deg": proposal.get("angle_deg") if isinstance(proposal.get("angle_deg"), int | float) else 0,
        "digits": digits, "decimals": decimals, "sure": words.photo_sureness(proposal, formats(request)),
        "tone": {"ok": "ok", "unsure": "warn"}.get(status, "error"),
        "message": words.photo_refusal("no_counter", formats(request)) if status == "no_counter" else None}


def _meter(request: Request, code: str, serial: str) -> PhotoMeter | None:
    with read_only(web(request).engine) as conn:
        return photo_binding(conn, code, serial)


async def photo_page(request: Request) -> Response:
    code = _linked_code(request)
    w = web(request)
    with read_only(w.engine) as conn:
        meters = photo_meters(conn, code)
        view = payer_view(conn, w.config, code, w.now(), history_limit=0)
    chosen = request.query_params.get("meter")
    return render(request, "photo.html", v=view, meters=meters, chosen=chosen, max_mb=MAX_UPLOAD_BYTES // 2**20)


def _read(jpeg: bytes, digits: int, decimals: int, box: tuple[int, int, int, int] | None) -> dict[str, Any]:
    with MAX_READS:
        return store.read(decode_stored(jpeg), digits, decimals, box)


async def upload(request: Request) -> Response:
    code = _linked_code(request)
    user = require_user(request, role="resident")
    w = web(request)
    now = w.now()
    with read_only(w.engine) as conn:
        recent = store.uploads_since(conn, user.id, now - timedelta(hours=1))
    if recent >= w.config.web.photo_uploads_per_hour:
        return _refuse(request, "too_many", 429)
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=1024)
    except Exception as exc:  # a malformed multipart body; Starlette raises its own kinds
        return _refuse(request, "not_an_image", detail=str(exc)[:100])
    serial = form.get("meter")
    item = form.get("photo")
    meter = _meter(request, code, serial) if isinstance(serial, str) and len(serial) <= 64 else None
    if meter is None:
        return _refuse(request, "no_meter")
    if not isinstance(item, UploadFile):
        return _refuse(request, "empty")
    data = await item.read(MAX_UPLOAD_BYTES + 1)
    await form.close()
    try:
        photo = await run_in_threadpool(normalise, data)
    except PhotoRefused as exc:
        return _refuse(request, exc.code, 413 if exc.code == "too_large" else 400, detail=exc.detail)
    with read_only(w.engine) as conn:
        digits, decimals = store.wheels_of(conn, meter)
    try:
        proposal = await run_in_threadpool(_read, photo.jpeg, digits, decimals, None)
    except store.PhotoError as exc:
        log.error("photo reader: %s", exc)
        return _refuse(request, exc.code, 503, detail=str(exc))
    with w.engine.begin() as conn:
        purged = store.purge_drafts(conn, now)
        photo_id = store.save_draft(conn, user_id=user.id, payer_code=code, meter_serial=meter.meter_serial,
                                    photo=photo, proposal=proposal, now=now)
    if purged:
        log.info("deleted %d photo drafts never sent", purged)
    log.info("photo %s of meter %s: %s %s (%.2f)", photo_id, meter.meter_serial, proposal.get("status"),
             proposal.get("value"), float(proposal.get("confidence") or 0.0))
    return JSONResponse(_proposal_json(request, photo_id, code, photo.width, photo.height, proposal, digits, decimals))


def _draft(request: Request, code: str) -> store.Draft:
    raw = request.path_params["photo_id"]
    if not PHOTO_ID.match(raw):
        raise NotFound()
    with read_only(web(request).engine) as conn:
        draft = store.get_draft(conn, int(raw), code)
    if draft is None:
        raise NotFound()
    return draft


async def image(request: Request) -> Response:
    code = _linked_code(request)
    draft = _draft(request, code)
    with read_only(web(request).engine) as conn:
        data = store.image_of(conn, draft.id, code)
    if data is None:
        raise NotFound()
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _box(value: Any, width: int, height: int) -> tuple[int, int, int, int] | None:
    """[x, y, w, h] within the photo (clamped), at least 8 px each way; None when it is not four numbers."""
    if not isinstance(value, list) or len(value) != 4 or \
            not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    x, y, w, h = (round(float(v)) for v in value)
    x, y = min(max(x, 0), width - 8), min(max(y, 0), height - 8)
    w, h = min(max(w, 8), width - x), min(max(h, 8), height - y)
    return x, y, w, h


async def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def reread(request: Request) -> Response:
    code = _linked_code(request)
    draft = _draft(request, code)
    w = web(request)
    if draft.sent:
        return _refuse(request, "already_sent", 409)
    body = await _json_body(request)
    box = _box(body.get("counter_box") if body else None, draft.width, draft.height)
    if box is None:
        return _refuse(request, "bad_box")
    meter = _meter(request, code, draft.meter_serial)
    if meter is None:
        return _refuse(request, "no_meter")
    with read_only(w.engine) as conn:
        digits, decimals = store.wheels_of(conn, meter)
        jpeg = store.image_of(conn, draft.id, code)
    assert jpeg is not None
    try:
        proposal = await run_in_threadpool(_read, jpeg, digits, decimals, box)
    except store.PhotoError as exc:
        log.error("photo reader: %s", exc)
        return _refuse(request, exc.code, 503, detail=str(exc))
    proposal.setdefault("counter_box", list(box))
    try:
        with w.engine.begin() as conn:
            store.save_reread(conn, draft, proposal, w.now())
    except store.PhotoError as exc:
        return _refuse(request, exc.code, 409)
    return JSONResponse(_proposal_json(request, draft.id, code, draft.width, draft.height, proposal, digits,
                                       decimals))


async def send(request: Request) -> Response:
    code = _linked_code(request)
    draft = _draft(request, code)
    w = web(request)
    body = await _json_body(request)
    value = body.get("value") if body else None
    if not isinstance(value, str) or len(value) > 30:
        return _refuse(request, "not_a_value")
    meter = _meter(request, code, draft.meter_serial)
    try:
        result = await run_in_threadpool(_send, w.engine, w.config, draft.id, code, value, w.now)
    except store.PhotoError as exc:
        values: dict[str, Any] = {"detail": str(exc)}
        if exc.code == "too_many_digits" and meter is not None:
            with read_only(w.engine) as conn:
                values["digits"], values["decimals"] = store.wheels_of(conn, meter)
        return _refuse(request, exc.code, 409 if exc.code == "already_sent" else 400, **values)
    words = Words(gettext(request))
    f = formats(request)
    if result.action == "refused":
        verdict = result.verdict
        assert verdict is not None
        log.info("photo %s refused: %s", draft.id, verdict.reason)  # counted by store.send
        return JSONResponse({"error": "out_of_range", "message": words.photo_refusal(
            "out_of_range", f, value=result.value, low=verdict.plausible_low, high=verdict.plausible_high)},
            status_code=422)
    text, tone = words.photo_outcome(result, f)
    return JSONResponse({"action": result.action, "reading_id": result.reading_id, "value": result.value,
                         "edited": result.edited, "message": text, "tone": tone,
                         "history": f"/payer/{code}#reading-{result.reading_id}"})


def _send(engine: Engine, config: BridgeConfig, photo_id: int, code: str, value: str,
          clock: Callable[[], datetime]) -> store.SendResult:
    """Send while the resident waits: one billing attempt at most (`one_try`); gateways built and closed here."""
    config = one_try(config)
    with http_gateways(config) as gateways:
        return store.send(engine, config, photo_id, code, value, gateways=gateways, now=clock(), clock=clock)


routes: list[BaseRoute] = [
    Route("/payer/{code:str}/photo", photo_page, methods=["GET"]),
    Route("/payer/{code:str}/photo", upload, methods=["POST"]),
    Route("/payer/{code:str}/photo/{photo_id:str}.jpg", image),
    Route("/payer/{code:str}/photo/{photo_id:str}/box", reread, methods=["POST"]),
    Route("/payer/{code:str}/photo/{photo_id:str}/send", send, methods=["POST"]),
]
