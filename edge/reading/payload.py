"""A decision as the wire contract's Reading (what the agent publishes and `meter-edge read` prints)."""

from __future__ import annotations

from datetime import datetime

from contract.payloads import Digit, Reading
from edge.reading.model import Decision


def to_reading(decision: Decision, *, device_id: str, seq: int, taken_at: datetime, model: str = "",
               unit: str = "m3") -> Reading:
    """Build the contract Reading; ``value`` is kept for suspect readings (for people), never billed."""
    digits = [Digit(v=d["v"], f=d["f"], p=d["p"]) for d in decision.digits()]
    reason = decision.reason if decision.reason is None else decision.reason[:500]
    return Reading(device_id=device_id, seq=seq, taken_at=taken_at, value=decision.value,
                   unit=unit,  # type: ignore[arg-type]
                   status=decision.status, reason=reason, confidence=min(max(decision.confidence, 0.0), 1.0),
                   digits=digits, model=model[:128])
