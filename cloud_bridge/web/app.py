"""The app factory behind `meter-bridge web`: sessions, CSRF, security headers, static files, and the
routes of every module in PAGE_MODULES."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_bridge.web import auth, health, operator, ops_photos, photo, resident
from cloud_bridge.web.pages import (
    PACKAGE_DIR,
    NotFound,
    PasswordChangeRequired,
    SignInRequired,
    Web,
    gettext,
    make_environments,
    not_found,
    render,
    sign_in_redirect,
)
from cloud_bridge.web.photo import LARGE_BODIES
from cloud_bridge.web.security import CsrfMiddleware, Throttle, read_or_create_secret

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig

log = logging.getLogger(__name__)

# Each module has `routes: list[BaseRoute]`; order matters only where paths overlap.
PAGE_MODULES: tuple[ModuleType, ...] = (auth, resident, photo, operator, ops_photos, health)
SESSION_COOKIE = "meter_session"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {b"content-security-policy": CSP.encode(), b"x-content-type-options": b"nosniff",
                         b"referrer-policy": b"same-origin", b"x-frame-options": b"DENY"}
                if not scope["path"].startswith("/static/"):
                    extra[b"cache-control"] = b"no-store"  # personal pages stay out of shared caches
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _refusal(scope: Scope, why: str) -> ASGIApp:
    """The CSRF middleware's answer: a page in the visitor's language saying what to do."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        t = gettext(request)
        if "application/json" in request.headers.get("accept", ""):  # the photo page's fetch calls
            if why == "too_large":
                log.info("refused a %s to %s: body over the limit", scope["method"], scope["path"])
                message = t.gettext("The photo is larger than 10 MB. Take it again at a lower resolution, or "
                                    "send a screenshot of it.")
            else:
                log.warning("refused a %s to %s without a valid CSRF token", scope["method"], scope["path"])
                message = t.gettext("The page was too old. Reload it and try again.")
            await JSONResponse({"error": why, "message": message}, status_code=413 if why == "too_large" else 403)(
                scope, receive, send)
            return
        if why == "too_large":
            response = render(request, "error.html", status_code=413, title=t.gettext("Too much data"),
                              message=t.gettext("The form sent more than this page accepts."))
        else:
            log.warning("refused a %s to %s without a valid CSRF token", scope["method"], scope["path"])
            response = render(request, "error.html", status_code=403, title=t.gettext("Form expired"),
                              message=t.gettext("The form was too old or came from another site. "
                                                "Go back, reload the page and send it again."))
        await response(scope, receive, send)

    return app


def collect_routes(modules: tuple[ModuleType, ...] = PAGE_MODULES) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for module in modules:
        routes.extend(module.routes)
    routes.append(Mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static"))
    return routes


def create_app(engine: Engine, config: BridgeConfig, *, clock: Callable[[], datetime] | None = None,
               modules: tuple[ModuleType, ...] = PAGE_MODULES) -> Starlette:
    """The portal for residents and operators on `engine`. Secrets come from the files named in
    config.web (created 0600 when missing); a secret file others can read stops the start."""
    cfg = config.web
    session_secret = read_or_create_secret(cfg.secret_file)
    sso_secret = read_or_create_secret(cfg.sso.secret_file) if cfg.auth == "sso" else None
    state = Web(engine=engine, config=config, session_secret=session_secret, sso_secret=sso_secret,
                throttle=Throttle(engine, cfg.login_window_s), envs=make_environments(), clock=clock)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return not_found(request)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return not_found(request)
        t = gettext(request)
        return render(request, "error.html", status_code=exc.status_code, title=str(exc.status_code),
                      message=t.gettext("This request cannot be answered."))

    async def on_sign_in(request: Request, exc: Exception) -> Response:
        return sign_in_redirect(request)

    async def on_password(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/account/password", status_code=303)

    app = Starlette(
        routes=collect_routes(modules),
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(SessionMiddleware, secret_key=session_secret.decode(), session_cookie=SESSION_COOKIE,
                       max_age=cfg.session_max_age_s, same_site="lax", https_only=cfg.cookie_secure),
            Middleware(CsrfMiddleware, refuse=_refusal, large_bodies=LARGE_BODIES),
        ],
        exception_handlers={NotFound: on_not_found, HTTPException: on_http, SignInRequired: on_sign_in,
                            PasswordChangeRequired: on_password},
    )
    app.state.web = state
    return app
