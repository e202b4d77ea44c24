"""What every page uses: the app's shared state, who is signed in, `require_user`, rendering a template
in the visitor's language, and the one "not found" answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cloud_bridge.web.i18n import LANGUAGE_NAMES, LANGUAGES, Formats, pick_language, translations
from cloud_bridge.web.security import Throttle, csrf_token, sso_identity
from cloud_bridge.web.users import Role, User, get_user, sso_user
from cloud_bridge.web.words import Words

if TYPE_CHECKING:
    from babel.support import NullTranslations

    from cloud_bridge.config import BridgeConfig

PACKAGE_DIR = Path(__file__).resolve().parent


class SignInRequired(Exception):
    """Raised by require_user when nobody is signed in: the app answers with the sign-in page."""


class PasswordChangeRequired(Exception):
    """The account signed in with a one-time password and must choose its own first."""


class NotFound(Exception):
    """Answer exactly like a page that does not exist (unknown, unlinked and other people's things alike)."""


@dataclass
class Web:
    """Shared by every request: `request.app.state.web`."""

    engine: Engine
    config: BridgeConfig
    session_secret: bytes
    sso_secret: bytes | None
    throttle: Throttle
    envs: dict[str, Environment] = field(default_factory=dict)
    clock: Any = None  # () -> aware datetime; tests may pass one

    def now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)


def make_environments() -> dict[str, Environment]:
    envs = {}
    for lang in LANGUAGES:
        env = Environment(loader=PackageLoader("cloud_bridge.web", "templates"), autoescape=select_autoescape(),
                          extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
        env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
        envs[lang] = env
    return envs


def web(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


def language(request: Request) -> str:
    return pick_language(request.session.get("lang"))


def gettext(request: Request) -> NullTranslations:
    """Translations for code (flash messages, plain words for reasons): `gettext(request).gettext("…")`."""
    return translations(language(request))


def formats(request: Request) -> Formats:
    return Formats(language(request), web(request).config.window.timezone)


def client_address(request: Request) -> str:
    header = web(request).config.web.trusted_proxy_header
    if header and (value := request.headers.get(header)):
        return value.split(",")[0].strip()[:64]
    return request.client.host if request.client else "unknown"


def current_user(request: Request) -> User | None:
    """Who is signed in: the single sign-on header (sso mode, HMAC checked), else the session cookie."""
    if "user" in request.scope.get("state", {}):
        return request.state.user  # type: ignore[no-any-return]
    w = web(request)
    user: User | None = None
    cfg = w.config.web
    if cfg.auth == "sso" and w.sso_secret is not None:
        identity = sso_identity(w.sso_secret, request.headers.get(cfg.sso.header),
                                request.headers.get(cfg.sso.signature_header), time.time())
        if identity is not None:
            user = sso_user(w.engine, identity, now=w.now())
    if user is None:
        uid, version = request.session.get("uid"), request.session.get("sv")
        if isinstance(uid, int) and isinstance(version, int):
            with w.engine.connect() as conn:
                found = get_user(conn, uid)
            if found is not None and found.session_version == version:
                user = found
    request.state.user = user
    return user


def require_user(request: Request, role: Role | None = None) -> User:
    """The signed-in user, or the sign-in page (raised). A user of another role gets the page-not-found
    answer: a resident learns nothing about operators' pages."""
    user = current_user(request)
    if user is None:
        raise SignInRequired()
    if user.must_change_password and request.url.path != "/account/password":
        raise PasswordChangeRequired()
    if role is not None and user.role != role:
        raise NotFound()
    return user


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render `template` in the visitor's language. Every template gets: user, csrf_token, lang,
    languages, fmt (dates and numbers in the utility's time zone), path, window_timezone, words (plain
    words for status codes)."""
    lang = language(request)
    w = web(request)
    values: dict[str, Any] = {
        "request": request, "user": current_user(request), "csrf_token": csrf_token(request.session), "lang": lang,
        "languages": LANGUAGE_NAMES, "fmt": formats(request), "path": request.url.path,
        "window_timezone": w.config.window.timezone, "words": Words(translations(lang))}
    values.update(context)
    html = w.envs[lang].get_template(template).render(**values)
    return HTMLResponse(html, status_code=status_code)


def not_found(request: Request) -> Response:
    """The single answer for a missing page, an unknown id and something that is not the visitor's."""
    if request.url.path.endswith(".json"):
        return JSONResponse({"error": "not found"}, status_code=404)
    # `path` is not echoed (the language switch returns to the start page): the body is the same for all.
    return render(request, "error.html", status_code=404, path="/", title=gettext(request).gettext("Page not found"),
                  message=gettext(request).gettext("There is no such page, or it is not yours to see."))


def sign_in_redirect(request: Request) -> Response:
    if request.url.path.endswith(".json"):
        return JSONResponse({"error": "sign in first"}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


def safe_next(value: object, default: str = "/") -> str:
    """A local path to go back to after a form (never another site: no scheme, no //host)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") and "\\" not in value \
            and len(value) < 500:
        return value
    return default
