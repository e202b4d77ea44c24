"""Billing and loyalty behind small interfaces, so the submission outbox never sees HTTP.

A gateway call answers `Accepted`, `Refused(code)` (terminal: billing said no) or `TryLater(reason,
retry_after)` (429, 5xx, timeouts, unreachable: the outbox retries with the same idempotency key)."""

from cloud_bridge.gateways.base import (
    Accepted,
    BillingGateway,
    CreditRequest,
    GatewayAnswer,
    Gateways,
    LoyaltyGateway,
    ReadingSubmission,
    Refused,
    TryLater,
)
from cloud_bridge.gateways.http import HttpBillingGateway, HttpLoyaltyGateway, http_gateways

__all__ = [
    "Accepted",
    "BillingGateway",
    "CreditRequest",
    "GatewayAnswer",
    "Gateways",
    "HttpBillingGateway",
    "HttpLoyaltyGateway",
    "LoyaltyGateway",
    "ReadingSubmission",
    "Refused",
    "TryLater",
    "http_gateways",
]
