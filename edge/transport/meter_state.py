"""The meter's state for Home Assistant (`meters/{id}/state`, retained): only ever moving forward.

The reading stream is for the bridge: a reading the bridge has not acknowledged is published again,
minutes or days later, and a Home Assistant reading that stream would see its water total jump back.
So HA gets its own retained topic, built here from the readings as they are committed (in `seq`
order, never from what is republished): the latest accepted value, which never goes below the last
one said, the newest reading's status, time and reason, and the flow over the last accepted readings.

The state is kept in the outbox's database, written before it is published, so after a restart the
device says again exactly what it said last (and catches up with any reading committed after it).
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from contract.payloads import MeterState, Reading
from edge.transport.outbox import Outbox

log = logging.getLogger(__name__)

STORE_KEY = "meter_state"
FLOW_WINDOW_S = 900.0  # flow over at least this span of accepted readings (and at least the last two)
MAX_POINTS = 256


class MeterStateKeeper:
    """Folds committed readings, in seq order, into a `MeterState`; persists it in the outbox."""

    def __init__(self, device_id: str, outbox: Outbox) -> None:
        self.device_id = device_id
        self.outbox = outbox
        self.state = MeterState(device_id=device_id, seq=0)
        self._points: list[tuple[int, Decimal, datetime]] = []  # accepted (seq, value, taken_at), oldest first
        self._load()
        self._catch_up()

    # -- persistence ----------------------------------------------------------------------------
    def _load(self) -> None:
        stored: Any = self.outbox.get_json(STORE_KEY)
        if not stored:
            return
        try:
            state = MeterState.model_validate(stored["state"])
            points = [(int(s), Decimal(v), datetime.fromisoformat(t)) for s, v, t in stored.get("points", [])]
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            log.error("the stored Home Assistant state in %s is unreadable (%s); starting it again from the "
                      "readings still in the outbox", self.outbox.path, str(exc).splitlines()[0])
            return
        if state.device_id != self.device_id:
            log.warning("the stored Home Assistant state is for device %s, not %s: starting it again",
                        state.device_id, self.device_id)
            return
        self.state, self._points = state, points

    def _save(self) -> None:
        self.outbox.set_json(STORE_KEY, {
            "state": self.state.model_dump(mode="json"),
            "points": [[s, str(v), t.isoformat()] for s, v, t in self._points],
        })

    def _catch_up(self) -> None:
        """Readings committed after the state was last saved (a power cut between the two writes, or
        the first start of a version that keeps it)."""
        readings = []
        for seq, payload in self.outbox.payloads_after(self.state.seq):
            try:
                readings.append(Reading.model_validate_json(payload))
            except ValidationError:
                log.warning("outbox seq %d is not a valid reading; the Home Assistant state skips it", seq)
        if readings:
            for r in readings:
                self._fold(r)
            self._save()

    # -- folding readings -----------------------------------------------------------------------
    def advance(self, reading: Reading) -> bool:
        """Take in a committed reading. False (nothing changes) for one not newer than the state."""
        if not self._fold(reading):
            return False
        self._save()
        return True

    def _fold(self, r: Reading) -> bool:
        if r.seq <= self.state.seq:
            return False
        update: dict[str, Any] = {"seq": r.seq, "taken_at": r.taken_at, "status": r.status, "reason": r.reason,
                                  "confidence": r.confidence, "read_value": r.value}
        value = r.decimal_value()
        current = self.state.decimal_value()
        if r.status == "ok" and value is not None:
            if current is not None and value < current:
                log.warning("seq %d: accepted value %s is below %s, which Home Assistant already has; it keeps %s "
                            "(an installer's set-value moves it down)", r.seq, r.value, self.state.value,
                            self.state.value)
            else:
                self._points.append((r.seq, value, r.taken_at))
                update.update(value=r.value, value_seq=r.seq, value_at=r.taken_at, flow_m3_per_h=self._flow())
        self.state = MeterState.model_validate({**self.state.model_dump(), **update})
        return True

    def set_value(self, value: str, at: datetime) -> None:
        """The installer's `set-value`: their value is the meter's, also when it is lower (a replaced or
        wrongly read meter); Home Assistant then sees a new meter cycle. The flow starts over."""
        self._points = [(self.state.seq, Decimal(value), at)]
        self.state = MeterState.model_validate({**self.state.model_dump(), "value": value, "value_seq": None,
                                                "value_at": at, "flow_m3_per_h": None})
        self._save()

    def _flow(self) -> float | None:
        """m³/h from the oldest accepted reading still needed to span FLOW_WINDOW_S to the newest."""
        if len(self._points) < 2:
            return None
        newest = self._points[-1]
        start = 0
        for i, (_, _, at) in enumerate(self._points[:-1]):
            if (newest[2] - at).total_seconds() >= FLOW_WINDOW_S:
                start = i  # the latest one that still spans the window
        self._points = self._points[start:][-MAX_POINTS:]
        oldest = self._points[0]
        hours = (newest[2] - oldest[2]).total_seconds() / 3600.0
        if hours <= 0:
            return None
        return round(max(0.0, float(newest[1] - oldest[1]) / hours), 6)

    def payload(self) -> bytes:
        return self.state.to_json_bytes()
