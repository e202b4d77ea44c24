"""Operators' page of residents' photo readings (`/ops/photos`): the ones held for review (nothing to check
them against, e.g. a new meter's first photo: not billed until confirmed) with the photo and a form to
confirm the value (the same `correct --by operator --confirm` path), and the newest photo readings with
what the reader proposed, whether the resident moved the box or edited the value."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.config import BridgeConfig
from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.photo import store
from cloud_bridge.residents import CorrectionResult, ResidentError, correct_reading
from cloud_bridge.store.engine import read_only
from cloud_bridge.web.pages import NotFound, gettext, render, require_user, web
from cloud_bridge.web.resident import one_try
from contract.payloads import VALUE_PATTERN, mask_payer

PHOTO_ID = re.compile(r"^[0-9]{1,18}$")
SHOWN = 50


async def photos_page(request: Request, *, error: str | None = None, done: str | None = None,
                      status_code: int = 200) -> Response:
    require_user(request, role="operator")
    w = web(request)
    with read_only(w.engine) as conn:
        waiting = store.sent_photos(conn, waiting_only=True, limit=SHOWN)
        recent = store.sent_photos(conn, limit=SHOWN)
    return render(request, "ops_photos.html", status_code=status_code, waiting=waiting, recent=recent,
                  mask=mask_payer, error=error, done=done or request.query_params.get("done"))


async def image(request: Request) -> Response:
    require_user(request, role="operator")
    raw = request.path_params["photo_id"]
    if not PHOTO_ID.match(raw):
        raise NotFound()
    with read_only(web(request).engine) as conn:
        data = store.photo_image(conn, int(raw))
    if data is None:
        raise NotFound()
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _confirm(engine: Engine, config: BridgeConfig, reading_id: int, value: str, who: str,
             clock: Callable[[], datetime]) -> CorrectionResult:
    config = one_try(config)
    with http_gateways(config) as gateways:
        return correct_reading(engine, config, reading_id, value, by="operator", confirm=True, at=clock(),
                               clock=clock, note=f"photo reading confirmed by {who} (web)", gateways=gateways)


async def confirm(request: Request) -> Response:
    user = require_user(request, role="operator")
    w = web(request)
    t = gettext(request)
    raw = request.path_params["photo_id"]
    if not PHOTO_ID.match(raw):
        raise NotFound()
    with read_only(w.engine) as conn:
        item = next(iter(store.sent_photos(conn, waiting_only=True, photo_id=int(raw))), None)
    if item is None:
        raise NotFound()
    form = await request.form()
    value = str(form.get("value", "")).strip().replace(",", ".")[:24]
    if not re.match(VALUE_PATTERN, value):
        return await photos_page(request, error=t.gettext("Type the value the photo shows, e.g. 00123.456."),
                                 status_code=400)
    try:
        result = await run_in_threadpool(_confirm, w.engine, w.config, item.reading_id, value, user.login, w.now)
    except ResidentError as exc:
        return await photos_page(request, error=str(exc), status_code=400)
    if result.action == "refused":
        return await photos_page(request, error=result.message, status_code=400)
    return RedirectResponse(f"/ops/photos?done={item.photo_id}", status_code=303)


routes: list[BaseRoute] = [
    Route("/ops/photos", photos_page),
    Route("/ops/photos/{photo_id:str}.jpg", image),
    Route("/ops/photos/{photo_id:str}/confirm", confirm, methods=["POST"]),
]
