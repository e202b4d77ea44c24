"""Secrets in 0600 files, password hashing (argon2id), sign-in limits counted in the store, and the
CSRF check every unsafe request goes through before any route sees it."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, func, select

from cloud_bridge.store.tables import web_failures
from cloud_bridge.web.words import N_

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_FORM_BYTES = 64 * 1024
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
PASSWORD_MIN = 10
PASSWORD_MAX = 256  # checked before hashing: a megabyte "password" is refused, not hashed


class SecretFileError(RuntimeError):
    """A secret file cannot be used; the message says what to do."""


def read_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """The secret in `path`, created (0600, random) when missing. A file others may read is refused."""
    path = path.expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it a moment ago: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(nbytes) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretFileError(f"secret file {path} can be read by others (mode {mode:o}): run `chmod 600 {path}`")
    value = path.read_text().strip().encode()
    if len(value) < 16:
        raise SecretFileError(f"secret file {path} holds fewer than 16 characters: put a long random value in it "
                              "(or delete it and one is created)")
    return value


# argon2id with OWASP's minimum (19 MiB, 2 passes, 1 lane): a hash costs ~0.1 s on a free core, and
# one sign-in does not tie up both cores of a small server (the library's default, 64 MiB and 4 lanes,
# took 2.6 s here under load). Stored hashes carry their parameters, so raising these later still
# verifies old ones.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches. With no stored hash a dummy one is checked, so an unknown login
    takes as long as a wrong password."""
    if len(password) > PASSWORD_MAX:
        return False
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why a new password is not accepted (English msgid, translated by the page), or None."""
    if len(password) < PASSWORD_MIN:
        return N_("The password needs at least 10 characters.")
    if len(password) > PASSWORD_MAX:
        return N_("The password is too long (at most 256 characters).")
    return None


def new_password() -> str:
    """A one-time password for a new account: 16 characters, easy to type."""
    return secrets.token_urlsafe(12)


class Throttle:
    """Counts failures per key in the store (so all workers count the same ones) and refuses a key
    that reached its limit within the window."""

    def __init__(self, engine: Engine, window_s: int) -> None:
        self.engine = engine
        self.window = timedelta(seconds=window_s)

    def blocked(self, key: str, limit: int, now: datetime) -> bool:
        with self.engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(web_failures)
                             .where(web_failures.c.key == key[:300], web_failures.c.at > now - self.window)).scalar()
        return int(n or 0) >= limit

    def fail(self, keys: list[str], now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(web_failures.insert(), [{"key": k[:300], "at": now} for k in keys])
            conn.execute(delete(web_failures).where(web_failures.c.at < now - 2 * self.window))

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(web_failures).where(web_failures.c.key == key[:300]))


SSO_MAX_SKEW_S = 300


def sso_signature(secret: bytes, value: str, ts: int) -> str:
    """What the proxy sends in the signature header: `<unix time>:<hex HMAC-SHA256 of "<time>:<value>">`."""
    return f"{ts}:" + hmac.new(secret, f"{ts}:{value}".encode(), hashlib.sha256).hexdigest()


def sso_identity(secret: bytes, value: str | None, signature: str | None, now: float) -> str | None:
    """The identity the proxy vouches for, or None when the header is missing, its HMAC is wrong, or it was
    signed more than SSO_MAX_SKEW_S from now (a copied pair of headers stops working within minutes)."""
    if not value or not signature or len(value) > 200 or len(signature) > 100:
        return None
    ts_text, _, _ = signature.strip().partition(":")
    if not ts_text.isdigit() or abs(now - int(ts_text)) > SSO_MAX_SKEW_S:
        return None
    if not hmac.compare_digest(sso_signature(secret, value, int(ts_text)), signature.strip().lower()):
        return None
    return value


def csrf_token(session: MutableMapping[str, Any]) -> str:
    """The session's CSRF token (created on first use); forms carry it in a hidden field."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return token


class CsrfMiddleware:
    """Refuses every POST/PUT/PATCH/DELETE whose CSRF token (form field `csrf_token` or header
    `X-CSRF-Token`) does not match the session's, and every body over 64 KiB, before any route runs.
    A cross-site Origin is refused too. It sits inside the session middleware and replays the body it
    read to the route, so routes use `await request.form()` as usual.

    `large_bodies`: (path pattern, limit) for the few routes that take more (a resident's photo, 10 MB);
    those must send the token in the header. The limit is checked on Content-Length before the body is
    read, and again while it streams in (a chunked upload is cut off as soon as it passes the limit)."""

    def __init__(self, app: ASGIApp, refuse: Callable[[Scope, str], ASGIApp],
                 large_bodies: tuple[tuple[re.Pattern[str], int], ...] = ()) -> None:
        self.app = app
        self.refuse = refuse  # builds the 403/413 response (a translated page)
        self.large_bodies = large_bodies

    def limit_for(self, path: str) -> int:
        return next((limit for pattern, limit in self.large_bodies if pattern.fullmatch(path)), MAX_FORM_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
            await self.refuse(scope, "csrf")(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self.refuse(scope, "too_large")(scope, receive, send)
            return
        sent = headers.get(CSRF_HEADER)
        if limit > MAX_FORM_BYTES:  # a large body is not read at all without the header's token
            expected = scope.get("session", {}).get("csrf")
            if not sent or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
                await self.refuse(scope, "csrf")(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                await self.refuse(scope, "too_large")(scope, receive, send)
                return
        body = b"".join(chunks)
        if sent is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=200).get(CSRF_FIELD)
            sent = values[0] if values else None
        expected = scope.get("session", {}).get("csrf")
        if not sent or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
            await self.refuse(scope, "csrf")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
