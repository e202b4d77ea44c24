"""HTTP JSON clients (httpx) for the billing and loyalty contracts v1 (DESIGN.md, "Sandbox contract")."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from cloud_bridge.config import BridgeConfig
from cloud_bridge.gateways.base import (
    Accepted,
    CreditRequest,
    GatewayAnswer,
    Gateways,
    ReadingSubmission,
    Refused,
    TryLater,
)
from contract.settings import read_secret

log = logging.getLogger(__name__)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _JsonApi:
    def __init__(self, base_url: str, token: str | None, timeout_s: float, name: str,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Accept": "application/json", "User-Agent": "meter-bridge"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.name = name
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                    timeout=httpx.Timeout(timeout_s), transport=transport)

    def close(self) -> None:
        self._client.close()

    def post(self, path: str, body: dict[str, Any], key: str, ref_field: str) -> GatewayAnswer:
        try:
            resp = self._client.post(path, json=body, headers={"Idempotency-Key": key})
        except httpx.TimeoutException:
            return TryLater("timeout")
        except httpx.TransportError as exc:
            return TryLater(f"unreachable: {type(exc).__name__}")
        return self._classify(resp, ref_field)

    def _classify(self, resp: httpx.Response, ref_field: str) -> GatewayAnswer:
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        status = resp.status_code
        if status in (200, 201) and data.get(ref_field):
            return Accepted(str(data[ref_field]), data, replayed=resp.headers.get("idempotent-replayed") == "true")
        if status == 422:
            return Refused(str(data.get("code") or "refused"), data.get("detail"))
        if status == 409:
            # The key was used before with another body: a bug on our side, never to be retried blindly.
            return Refused(str(data.get("code") or "conflict"), data.get("detail"))
        if status == 429:
            return TryLater("rate_limited", parse_retry_after(resp.headers.get("retry-after")))
        if status >= 500:
            return TryLater(f"http_{status}", parse_retry_after(resp.headers.get("retry-after")))
        if status in (401, 403):
            log.error("%s answered %s: check the token file in the config (billing.token_file / "
                      "loyalty.token_file)", self.name, status)
            return TryLater(f"http_{status}_unauthorized", retry_now=False)
        log.error("%s answered %s %s: not retried in this pass", self.name, status, data or resp.text[:200])
        return TryLater(f"http_{status}", retry_now=False)


class HttpBillingGateway(_JsonApi):
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, token, timeout_s, "billing", transport)

    def submit_reading(self, submission: ReadingSubmission, idempotency_key: str) -> GatewayAnswer:
        return self.post("/v1/readings", submission.to_json(), idempotency_key, "submission_id")


class HttpLoyaltyGateway(_JsonApi):
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, token, timeout_s, "loyalty", transport)

    def credit(self, request: CreditRequest, idempotency_key: str) -> GatewayAnswer:
        return self.post("/v1/credits", request.to_json(), idempotency_key, "credit_id")


def http_gateways(config: BridgeConfig, *, timeout_s: float | None = None) -> Gateways:
    """Billing and loyalty clients from the config (URLs, token files, submission.timeout_s)."""
    timeout = timeout_s if timeout_s is not None else config.submission.timeout_s
    billing = HttpBillingGateway(config.billing.url, read_secret(config.billing.token_file), timeout)
    try:
        loyalty = HttpLoyaltyGateway(config.loyalty.url, read_secret(config.loyalty.token_file), timeout)
    except BaseException:
        billing.close()
        raise
    return Gateways(billing, loyalty)
