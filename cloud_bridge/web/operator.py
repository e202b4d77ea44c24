"""Operators' pages (role `operator`). The fleet page of the operators' issue grows here; every route
starts with `require_user(request, role="operator")`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.fleet import fleet_counts
from cloud_bridge.store.engine import read_only
from cloud_bridge.web.pages import render, require_user, web


async def ops_home(request: Request) -> Response:
    require_user(request, role="operator")
    w = web(request)
    with read_only(w.engine) as conn:
        counts = fleet_counts(conn, w.now(), w.config.fleet, w.config.window)
    return render(request, "ops_home.html", counts=counts)


routes: list[BaseRoute] = [
    Route("/ops", ops_home),
]
