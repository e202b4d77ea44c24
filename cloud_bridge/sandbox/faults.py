"""Failures on demand: a queue of faults that the next requests meet, switched at run time through
`POST /admin/faults` or set at start by flags.

A fault applies to `readings`, `credits` or `all` POSTs; `count` requests meet it (None: until cleared),
then the next fault in the queue takes over. Modes: `503` (outage), `429` (rate limit with Retry-After),
`delay` (record at once, answer only after `delay_s`: billing has it, the client may have given up).
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Target = Literal["readings", "credits", "all"]


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["503", "429", "delay"]
    count: int | None = Field(default=1, ge=1, description="how many requests meet it; null: until cleared")
    retry_after: int = Field(default=1, ge=0, le=3600, description="seconds, for 429")
    delay_s: float = Field(default=1.0, ge=0, le=120, description="seconds, for delay")
    target: Target = "all"


class FaultRequest(BaseModel):
    """Body of POST /admin/faults: one fault, a list to queue, or the outside-window switch."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["503", "429", "delay", "none"] | None = None
    count: int | None = Field(default=1, ge=1)
    retry_after: int = Field(default=1, ge=0, le=3600)
    delay_s: float = Field(default=1.0, ge=0, le=120)
    target: Target = "all"
    faults: list[Fault] | None = None
    outside_window: bool | None = None
    replace: bool = Field(default=True, description="clear the queue first (false: append)")


class FaultBoard:
    """The fault queue and the outside-window switch, shared by the request handlers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self.outside_window = False

    def apply(self, req: FaultRequest) -> None:
        with self._lock:
            if req.outside_window is not None:
                self.outside_window = req.outside_window
            new: list[Fault] = list(req.faults or [])
            if req.mode is not None and req.mode != "none":
                new.append(Fault(mode=req.mode, count=req.count, retry_after=req.retry_after,
                                 delay_s=req.delay_s, target=req.target))
            if req.mode == "none" or (req.replace and (new or req.faults is not None)):
                self._queue = []
            self._queue.extend(new)

    def push(self, fault: Fault) -> None:
        with self._lock:
            self._queue.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._queue = []
            self.outside_window = False

    def take(self, target: Literal["readings", "credits"]) -> Fault | None:
        """The fault this request meets, if any (consumes one of its count)."""
        with self._lock:
            if not self._queue:
                return None
            head = self._queue[0]
            if head.target not in (target, "all"):
                return None
            if head.count is not None:
                remaining = head.count - 1
                if remaining <= 0:
                    self._queue.pop(0)
                else:
                    self._queue[0] = head.model_copy(update={"count": remaining})
            return head

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"outside_window": self.outside_window,
                    "faults": [f.model_dump() for f in self._queue]}
