"""`GET /healthz` of the portal, for a load balancer or `curl -f`: 200 when the database answers, else
503. No sign-in (it says nothing but that), no broker check (the portal does not use the broker; the
ingest process's /healthz checks both, docs/operate-fleet.md)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.metrics import health
from cloud_bridge.web.pages import web


async def healthz(request: Request) -> Response:
    ok, body = await run_in_threadpool(health, web(request).engine, None)
    return JSONResponse(body, status_code=200 if ok else 503)


routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET", "HEAD"])]
