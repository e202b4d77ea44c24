"""The CSRF middleware's body limits: the photo route takes 10 MB (token in the header), every other
route 64 KiB; a body over the limit is refused from its Content-Length before any of it is read, or,
without one, as soon as what arrived passes the limit."""

from __future__ import annotations

import asyncio
from typing import Any

from cloud_bridge.web.photo import LARGE_BODIES
from cloud_bridge.web.security import CsrfMiddleware

MIB = 1 << 20
TOKEN = "t" * 32


def run(path: str, chunks: int, *, length: int | None = None, token: str | None = TOKEN) -> tuple[str, int]:
    """(what answered: app / too_large / csrf, how many chunks of 1 MiB the middleware pulled)."""
    pulled = 0
    answered: list[str] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"\0" * MIB, "more_body": pulled < chunks}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        answered.append("app")

    def refuse(scope: Any, why: str) -> Any:
        async def answer(scope: Any, receive: Any, send: Any) -> None:
            answered.append(why)
        return answer

    headers = [(b"host", b"portal"), (b"content-type", b"multipart/form-data; boundary=B")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if token is not None:
        headers.append((b"x-csrf-token", token.encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "session": {"csrf": TOKEN}}
    asyncio.run(CsrfMiddleware(app, refuse, LARGE_BODIES)(scope, receive, send))
    return answered[0], pulled


def test_the_photo_route_takes_10_mb_and_stops_reading_past_it() -> None:
    photo = "/payer/1000000001/photo"
    assert run(photo, 10) == ("app", 10)  # 10 MiB of photo: taken
    assert run(photo, 40) == ("too_large", 11)  # chunked 40 MiB: cut off at the 11th MiB
    assert run(photo, 40, length=40 * MIB) == ("too_large", 0)  # from the header: nothing read
    assert run(photo, 1, token=None) == ("csrf", 0)  # no token in the header: not read at all
    assert run(photo, 1, token="wrong" * 8) == ("csrf", 0)


def test_every_other_route_keeps_64_kib() -> None:
    for path in ("/payer/1000000001/reading/5", "/payer/1000000001/photo/7/send", "/payer/1000000001/photox",
                 "/me/link"):
        assert run(path, 2) == ("too_large", 1), path
