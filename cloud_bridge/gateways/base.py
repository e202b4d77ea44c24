"""The two gateway interfaces and what a call can answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ReadingSubmission:
    payer_code: str
    meter_serial: str
    period: str  # YYYY-MM
    value: str  # decimal string as the meter shows it, e.g. "00123.456"
    taken_at: str  # UTC ISO 8601

    def to_json(self) -> dict[str, Any]:
        return {"payer_code": self.payer_code, "meter_serial": self.meter_serial, "period": self.period,
                "value": self.value, "taken_at": self.taken_at}


@dataclass(frozen=True)
class CreditRequest:
    payer_code: str
    period: str
    points: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"payer_code": self.payer_code, "period": self.period, "points": self.points, "reason": self.reason}


@dataclass(frozen=True)
class Accepted:
    """Billing stored it (201); `ref` is its submission_id or credit_id."""

    ref: str
    body: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True)
class Refused:
    """A terminal no (422): `code` is billing's reason, e.g. decreasing_value, unknown_payer."""

    code: str
    detail: str | None = None


@dataclass(frozen=True)
class TryLater:
    """Not answered: try again with the same key. `retry_after` seconds when the server said so.
    `retry_now` False: retrying in this pass is pointless (e.g. 401: the token is wrong)."""

    reason: str
    retry_after: float | None = None
    retry_now: bool = True


GatewayAnswer = Accepted | Refused | TryLater


class BillingGateway(Protocol):
    def submit_reading(self, submission: ReadingSubmission, idempotency_key: str) -> GatewayAnswer: ...

    def close(self) -> None: ...


class LoyaltyGateway(Protocol):
    def credit(self, request: CreditRequest, idempotency_key: str) -> GatewayAnswer: ...

    def close(self) -> None: ...


@dataclass
class Gateways:
    """The bridge's two gateways, built once by whoever runs passes (cloud_bridge.service, the `submit`
    and `correct` commands, the portal) and closed by it, never by a pass."""

    billing: BillingGateway
    loyalty: LoyaltyGateway

    def close(self) -> None:
        try:
            self.billing.close()
        finally:
            self.loyalty.close()

    def __enter__(self) -> Gateways:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
