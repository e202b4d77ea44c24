"""Signing in and out, registering as a resident, choosing the language, changing the password."""

from __future__ import annotations

import logging

from sqlalchemy import update
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cloud_bridge.store.tables import users
from cloud_bridge.web.i18n import LANGUAGES
from cloud_bridge.web.pages import (
    client_address,
    current_user,
    gettext,
    not_found,
    render,
    require_user,
    safe_next,
    web,
)
from cloud_bridge.web.security import csrf_token
from cloud_bridge.web.users import User, UserError, authenticate, create_user, normalise_login, set_password

log = logging.getLogger(__name__)


def home_of(user: User) -> str:
    return "/ops" if user.is_operator else "/me"


def _start_session(request: Request, user: User) -> None:
    lang = request.session.get("lang")
    request.session.clear()  # a fresh session (and CSRF token) after signing in
    request.session.update({"uid": user.id, "sv": user.session_version})
    if lang:
        request.session["lang"] = lang
    csrf_token(request.session)
    request.state.user = user


async def home(request: Request) -> Response:
    user = current_user(request)
    return RedirectResponse(home_of(user) if user else "/login", status_code=303)


async def login(request: Request) -> Response:
    w = web(request)
    t = gettext(request)
    sso = w.config.web.auth == "sso"
    if request.method == "GET":
        user = current_user(request)
        if user is not None:
            return RedirectResponse(home_of(user), status_code=303)
        return render(request, "login.html", next=safe_next(request.query_params.get("next"), ""), sso=sso)
    form = await request.form()
    login_text = str(form.get("login", ""))[:300]
    password = str(form.get("password", ""))
    target = safe_next(form.get("next"), "")
    try:
        login_key = "login:" + normalise_login(login_text)
    except UserError:
        login_key = "login:" + login_text.strip().lower()
    ip_key = "ip:" + client_address(request)
    now = w.now()
    cfg = w.config.web
    if w.throttle.blocked(ip_key, cfg.login_failures_per_ip, now) or \
            w.throttle.blocked(login_key, cfg.login_failures_per_account, now):
        log.warning("sign-in refused by the limits (%s)", ip_key)
        minutes = max(1, cfg.login_window_s // 60)
        return render(request, "login.html", status_code=429, next=target, login=login_text, sso=sso,
                      error=t.gettext("Too many failed attempts. Try again in %(minutes)d minutes.")
                      % {"minutes": minutes})
    user = await run_in_threadpool(authenticate, w.engine, login_text, password, now)
    if user is None:
        w.throttle.fail([login_key, ip_key], now)
        return render(request, "login.html", status_code=401, next=target, login=login_text, sso=sso,
                      error=t.gettext("Wrong e-mail, phone or password."))
    w.throttle.clear(login_key)
    _start_session(request, user)
    return RedirectResponse(target or home_of(user), status_code=303)


async def logout(request: Request) -> Response:
    """Ends this session and every other session of the account (a copied cookie stops working too)."""
    user = current_user(request)
    if user is not None:
        with web(request).engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user.id).values(session_version=users.c.session_version + 1))
    lang = request.session.get("lang")
    request.session.clear()
    if lang:
        request.session["lang"] = lang
    return RedirectResponse("/login", status_code=303)


async def register(request: Request) -> Response:
    w = web(request)
    if w.config.web.auth == "sso":
        return not_found(request)
    t = gettext(request)
    if request.method == "GET":
        return render(request, "register.html")
    form = await request.form()
    login_text = str(form.get("login", ""))[:300]
    password = str(form.get("password", ""))
    now = w.now()
    ip_key = "register:" + client_address(request)
    if w.throttle.blocked(ip_key, w.config.web.login_failures_per_ip, now):
        return render(request, "register.html", status_code=429, login=login_text,
                      error=t.gettext("Too many new accounts from this address. Try again later."))
    if password != str(form.get("password2", "")):
        return render(request, "register.html", status_code=400, login=login_text,
                      error=t.gettext("The two passwords differ."))
    try:
        user = await run_in_threadpool(create_user, w.engine, login_text, "resident", password, now=now)
    except UserError as exc:
        return render(request, "register.html", status_code=400, login=login_text, error=t.gettext(str(exc)))
    w.throttle.fail([ip_key], now)  # every account created counts against the address's limit
    _start_session(request, user)
    return RedirectResponse("/me", status_code=303)


async def choose_language(request: Request) -> Response:
    form = await request.form()
    lang = str(form.get("lang", ""))
    if lang in LANGUAGES:
        request.session["lang"] = lang
    return RedirectResponse(safe_next(form.get("next")), status_code=303)


async def change_password(request: Request) -> Response:
    user = require_user(request)
    w = web(request)
    t = gettext(request)
    if request.method == "GET":
        return render(request, "password.html")
    form = await request.form()
    current, new = str(form.get("current", "")), str(form.get("password", ""))
    if await run_in_threadpool(authenticate, w.engine, user.login, current, w.now()) is None:
        return render(request, "password.html", status_code=400, error=t.gettext("The current password is wrong."))
    if new != str(form.get("password2", "")):
        return render(request, "password.html", status_code=400, error=t.gettext("The two passwords differ."))
    try:
        await run_in_threadpool(set_password, w.engine, user.id, new)
    except UserError as exc:
        return render(request, "password.html", status_code=400, error=t.gettext(str(exc)))
    _start_session(request, User(user.id, user.login, user.role, user.session_version + 1, False))
    return RedirectResponse(home_of(user), status_code=303)


routes: list[BaseRoute] = [
    Route("/", home),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/register", register, methods=["GET", "POST"]),
    Route("/lang", choose_language, methods=["POST"]),
    Route("/account/password", change_password, methods=["GET", "POST"]),
]
