"""A sequence of the device's decisions, settled: a frame is ``ok`` only where the frames around it agree.

`meter-edge read` and `bench/reading.py` read frames one by one as the device does (``assemble``), then
hand the whole sequence to ``contract.settlement.settle``, which has the frames *after* each one. The
printed status follows settlement: ``ok`` only for a ``settled`` frame (a frame the device held back as
``suspect`` but its neighbours corroborate is recovered as ``ok``), ``suspect`` with the settlement's
reason for an ``outlier`` or ``pending`` frame, ``error`` when nothing could be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from contract.settlement import Observation, Settlement, digits_from_wire, settle
from edge.reading.model import Decision, Status

ANCHOR_KEY = "previous"


@dataclass(frozen=True)
class SettledFrame:
    """One frame's device decision and its settlement, and what `read` prints from them."""

    decision: Decision
    settlement: Settlement

    @property
    def status(self) -> Status:
        if self.decision.status == "error":
            return "error"
        return "ok" if self.settlement.state == "settled" and self.decision.value is not None else "suspect"

    @property
    def reason(self) -> str | None:
        if self.status == "ok":
            return None
        if self.status == "error":
            return self.decision.reason
        return self.settlement.reason or self.decision.reason

    def fields(self) -> dict[str, Any]:
        """What `read` adds to the Reading: the settlement and what the device alone said."""
        return {"settlement": self.settlement.state, "settlement_reason": self.settlement.reason,
                "device_status": self.decision.status, "device_reason": self.decision.reason}

    def explain(self) -> dict[str, Any]:
        s = self.settlement
        return {"state": s.state, "code": s.code, "reason": s.reason, "before": s.before, "after": list(s.after)}


def settle_decisions(frames: Sequence[tuple[datetime, Decision]], *, decimals: int, max_rate_m3_per_h: float,
                     previous: Decimal | None = None, previous_at: datetime | None = None,
                     min_after: int = 2) -> list[SettledFrame]:
    """Settle the decisions of one meter's frames (in reading order; keys are their indexes).

    ``previous`` (and ``previous_at``): the installer's value the reading started from, an anchor (a
    person's value); without ``previous_at`` it stands before every frame and bounds no rate.
    """
    observations = [
        Observation(key=i, taken_at=at, value=None if d.value is None else Decimal(d.value), status=d.status,
                    digits=digits_from_wire(d.digits()), decimals=decimals)
        for i, (at, d) in enumerate(frames)]
    billed = None
    if previous is not None and previous_at is not None:
        observations.insert(0, Observation(ANCHOR_KEY, previous_at, previous, "corrected", decimals=decimals,
                                           trusted=True))
    elif previous is not None:
        billed = previous
    results = settle(observations, max_rate_m3_per_h=Decimal(str(max_rate_m3_per_h)), min_after=min_after,
                     billed=billed)
    by_key = {r.key: r for r in results}
    return [SettledFrame(d, by_key[i]) for i, (_, d) in enumerate(frames)]
