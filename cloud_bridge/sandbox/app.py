"""The sandbox's Starlette app: billing (`/v1/readings`) and loyalty (`/v1/credits`) contracts v1,
plus `/admin/faults` to cause outages and rate limits on demand, and `/healthz`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloud_bridge.sandbox.faults import FaultBoard, FaultRequest
from cloud_bridge.sandbox.store import SandboxStore
from contract.payloads import VALUE_PATTERN
from contract.times import parse_utc

log = logging.getLogger(__name__)

PAYER_PATTERN = r"^[0-9]{10}$"
SERIAL_PATTERN = r"^[A-Za-z0-9._/-]{1,64}$"
PERIOD_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
MAX_BODY_BYTES = 16 * 1024
MAX_KEY_LEN = 255


class ReadingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payer_code: str = Field(pattern=PAYER_PATTERN)
    meter_serial: str = Field(pattern=SERIAL_PATTERN)
    period: str = Field(pattern=PERIOD_PATTERN)
    value: str = Field(pattern=VALUE_PATTERN)
    taken_at: str

    @field_validator("taken_at")
    @classmethod
    def _aware_time(cls, v: str) -> str:
        parse_utc(v)  # ValueError (no zone, out of range, not a time) becomes a 422
        return v


class CreditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payer_code: str = Field(pattern=PAYER_PATTERN)
    period: str = Field(pattern=PERIOD_PATTERN)
    points: int = Field(ge=1, le=1_000_000)
    reason: str = Field(min_length=1, max_length=200)


Accounts = dict[str, set[str]]  # payer code -> meter serials billing knows


def _error(status: int, code: str, detail: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


M = TypeVar("M", bound=BaseModel)


def _fingerprint(body: BaseModel) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


def create_app(
    store: SandboxStore,
    *,
    accounts: Accounts | None = None,
    token: str | None = None,
    loyalty_token: str | None = None,
    faults: FaultBoard | None = None,
) -> Starlette:
    """Build the app. `accounts` None: every well-formed payer and meter is known. `token` None: no auth
    (the loyalty endpoints use `loyalty_token` when given, else `token`)."""
    board = faults if faults is not None else FaultBoard()

    def authorised(request: Request, expected: str | None) -> bool:
        if not expected:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())

    async def read_json(request: Request) -> tuple[dict[str, Any] | None, JSONResponse | None]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return None, _error(413, "payload_too_large", f"at most {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return None, _error(400, "invalid_request", "the body is not JSON")
        if not isinstance(data, dict):
            return None, _error(400, "invalid_request", "the body must be a JSON object")
        return data, None

    def guarded(scope: str, handler: Callable[[dict[str, Any], str], Response], expected_token: str | None,
                ) -> Callable[[Request], Awaitable[Response]]:
        """Auth, Idempotency-Key, faults and the request log around a POST handler."""

        async def endpoint(request: Request) -> Response:
            key = request.headers.get("idempotency-key")
            if not authorised(request, expected_token):
                response: Response = _error(401, "unauthorized", "send Authorization: Bearer <token>")
            elif not key or len(key) > MAX_KEY_LEN:
                response = _error(400, "missing_idempotency_key",
                                  f"send an Idempotency-Key header of 1-{MAX_KEY_LEN} characters")
            else:
                # The body is read first: a slow answer must still record what a client gave up on.
                data, problem = await read_json(request)
                fault = None if problem is not None else board.take(scope)  # type: ignore[arg-type]
                if problem is not None:
                    response = problem
                elif fault is not None and fault.mode == "503":
                    response = _error(503, "unavailable", "sandbox outage on demand")
                elif fault is not None and fault.mode == "429":
                    response = _error(429, "rate_limited", headers={"Retry-After": str(fault.retry_after)})
                else:
                    response = handler(data or {}, key)
                    if fault is not None and fault.mode == "delay":
                        # Recorded first, answered late: what a client that times out cannot know.
                        await asyncio.sleep(fault.delay_s)
            code = None
            replayed = response.headers.get("idempotent-replayed") == "true"
            if response.status_code >= 400 and isinstance(response, JSONResponse):
                code = json.loads(bytes(response.body)).get("code")
            store.log_request(request.method, request.url.path, key, response.status_code, code, replayed)
            return response

        return endpoint

    def replay_or_conflict(scope: str, key: str, fingerprint: str) -> Response | None:
        stored = store.answer_for(scope, key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            return _error(409, "idempotency_key_reused", "this key was used with a different body")
        return JSONResponse(stored.body, status_code=stored.status, headers={"Idempotent-Replayed": "true"})

    def parse_new(model: type[M], scope: str, data: dict[str, Any], key: str) -> tuple[M, str] | Response:
        """The validated body and its fingerprint; or the answer to send at once: 400 for a bad body,
        the stored answer for a key seen with the same body, 409 for a key reused with another."""
        try:
            body = model.model_validate(data)
        except ValidationError as exc:
            return _error(400, "invalid_request", "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        fp = _fingerprint(body)
        cached = replay_or_conflict(scope, key, fp)
        return (body, fp) if cached is None else cached

    def post_reading(data: dict[str, Any], key: str) -> Response:
        parsed = parse_new(ReadingIn, "readings", data, key)
        if isinstance(parsed, Response):
            return parsed
        body, fp = parsed
        refusal = None
        if accounts is not None and body.payer_code not in accounts:
            refusal = "unknown_payer"
        elif accounts is not None and body.meter_serial not in accounts[body.payer_code]:
            refusal = "unknown_meter"
        elif board.outside_window:
            refusal = "outside_window"
        else:
            last = store.last_accepted_value(body.payer_code, body.meter_serial, body.period)
            if last is not None and Decimal(body.value) < last:
                refusal = "decreasing_value"
        if refusal is not None:
            answer = {"code": refusal}
            store.remember_refusal("readings", key, fp, answer)
            return JSONResponse(answer, status_code=422)
        return JSONResponse(store.accept_reading(key, fp, body.model_dump()), status_code=201)

    def post_credit(data: dict[str, Any], key: str) -> Response:
        parsed = parse_new(CreditIn, "credits", data, key)
        if isinstance(parsed, Response):
            return parsed
        body, fp = parsed
        if accounts is not None and body.payer_code not in accounts:
            answer = {"code": "unknown_payer"}
            store.remember_refusal("credits", key, fp, answer)
            return JSONResponse(answer, status_code=422)
        return JSONResponse(store.add_credit(key, fp, body.model_dump()), status_code=201)

    async def get_readings(request: Request) -> Response:
        if not authorised(request, token):
            return _error(401, "unauthorized", "send Authorization: Bearer <token>")
        rows = store.readings(request.query_params.get("payer"))
        return JSONResponse({"readings": [{k: r[k] for k in (
            "submission_id", "payer_code", "meter_serial", "period", "value", "taken_at")} for r in rows]})

    async def get_credits(request: Request) -> Response:
        if not authorised(request, loyalty_token or token):
            return _error(401, "unauthorized", "send Authorization: Bearer <token>")
        payer = request.query_params.get("payer")
        rows = store.credits(payer)
        out: dict[str, Any] = {"credits": [{k: r[k] for k in ("credit_id", "period", "points")} for r in rows]}
        out["balance"] = store.balance(payer) if payer else sum(r["points"] for r in rows)
        return JSONResponse(out)

    async def admin_faults(request: Request) -> Response:
        if not authorised(request, token):
            return _error(401, "unauthorized", "send Authorization: Bearer <token>")
        if request.method == "DELETE":
            board.clear()
        elif request.method == "POST":
            data, problem = await read_json(request)
            if problem is not None:
                return problem
            try:
                board.apply(FaultRequest.model_validate(data))
            except ValidationError as exc:
                return _error(400, "invalid_request", str(exc))
        return JSONResponse(board.snapshot())

    async def admin_requests(request: Request) -> Response:
        if not authorised(request, token):
            return _error(401, "unauthorized", "send Authorization: Bearer <token>")
        return JSONResponse({"requests": store.requests(request.query_params.get("key"))})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **board.snapshot()})

    routes = [
        Route("/v1/readings", guarded("readings", post_reading, token), methods=["POST"]),
        Route("/v1/readings", get_readings, methods=["GET"]),
        Route("/v1/credits", guarded("credits", post_credit, loyalty_token or token), methods=["POST"]),
        Route("/v1/credits", get_credits, methods=["GET"]),
        Route("/admin/faults", admin_faults, methods=["GET", "POST", "DELETE"]),
        Route("/admin/requests", admin_requests, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.store = store
    app.state.faults = board
    return app
