"""The types of the reading rules: what goes in (wheels of one frame, carried state), what comes out.

Everything here is plain data: the rules in `edge.reading.assemble` are pure functions over these, so a
frame's decision depends only on (state, observation, rules) and can be replayed and tested by table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from contract.times import check_sane, parse_utc

Status = Literal["ok", "suspect", "error"]


@dataclass(frozen=True)
class WheelInput:
    """One wheel as the model saw it: ``digit`` 0-9 or None (N), ``position`` 0.0-9.9, ``confidence`` 0-1."""

    digit: int | None
    position: float
    confidence: float


@dataclass(frozen=True)
class Observation:
    """One frame: its wheels left to right (highest first) and when it was taken.

    ``failure`` set means the frame could not be read at all (alignment failed, unreadable image): the
    decision is an ``error`` with that reason and the state is left as it was.
    """

    wheels: tuple[WheelInput, ...]
    taken_at: datetime
    failure: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A frame whose value was refused, kept to notice when refusals agree with each other."""

    value: Decimal
    at: datetime
    code: str


@dataclass(frozen=True)
class ReadingState:
    """What must carry from one frame to the next.

    ``previous``/``previous_at``: the last accepted value (billable) and when it was last seen.
    ``refusals``: the latest run of refused frames that agree with each other (at most what the rule needs).
    ``refused_run``: how many frames that run has lasted (for the reason text; not bounded).
    ``pending``: a large increase seen once, waiting for a second frame that agrees.
    ``before``/``before_at``: the accepted value before ``previous`` (None after a person's value): refused
    frames that fit it show that ``previous`` was the misread, and the device re-anchors by itself.
    ``by_person``: ``previous`` is a person's value (``cmd/set-value``): the device never moves it down alone.
    ``reanchors``: how often the device re-anchored by itself (telemetry; survives restarts).
    """

    previous: Decimal | None = None
    previous_at: datetime | None = None
    refusals: tuple[Refusal, ...] = ()
    refused_run: int = 0
    pending: Refusal | None = None
    before: Decimal | None = None
    before_at: datetime | None = None
    by_person: bool = False
    reanchors: int = 0

    def accept(self, value: Decimal, at: datetime) -> ReadingState:
        """The state after accepting ``value`` at ``at``: a new value moves ``previous`` into ``before``."""
        if self.previous is not None and value != self.previous:
            return ReadingState(previous=value, previous_at=at, before=self.previous, before_at=self.previous_at,
                                reanchors=self.reanchors)
        return ReadingState(previous=value, previous_at=at, before=self.before, before_at=self.before_at,
                            by_person=self.by_person and value == self.previous, reanchors=self.reanchors)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the agent keeps it in its state directory across restarts)."""

        def ref(r: Refusal) -> dict[str, str]:
            return {"value": str(r.value), "at": r.at.isoformat(), "code": r.code}

        return {
            "previous": None if self.previous is None else str(self.previous),
            "previous_at": None if self.previous_at is None else self.previous_at.isoformat(),
            "refusals": [ref(r) for r in self.refusals],
            "refused_run": self.refused_run,
            "pending": None if self.pending is None else ref(self.pending),
            "before": None if self.before is None else str(self.before),
            "before_at": None if self.before_at is None else self.before_at.isoformat(),
            "by_person": self.by_person,
            "reanchors": self.reanchors,
        }

    @classmethod
    def salvage(cls, data: object) -> tuple[ReadingState, list[str]]:
        """What is sound in a stored state that `from_dict` refuses (written by an older version, or a
        bad `set-value` that one let through): each part that does not load is dropped, and named."""
        if not isinstance(data, dict):
            return cls(), [f"state is a {type(data).__name__}, not an object"]
        dropped: list[str] = []
        parts: dict[str, Any] = {}
        for key in ("previous", "previous_at", "refused_run", "pending"):
            try:
                cls.from_dict({key: data.get(key)})
                parts[key] = data.get(key)
            except Exception as exc:
                dropped.append(f"{key} ({type(exc).__name__}: {str(exc)[:80]})")
        refusals = []
        for r in data.get("refusals") or ():
            try:
                cls.from_dict({"refusals": [r]})
                refusals.append(r)
            except Exception:
                dropped.append("a stored refusal")
        if "previous" not in parts and "previous_at" in parts:
            parts.pop("previous_at")
        return cls.from_dict({**parts, "refusals": refusals}), dropped

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReadingState:
        def ref(d: dict[str, str]) -> Refusal:
            return Refusal(Decimal(d["value"]), _utc(d["at"]), d["code"])

        return cls(
            previous=None if data.get("previous") is None else Decimal(data["previous"]),
            previous_at=None if data.get("previous_at") is None else _utc(data["previous_at"]),
            refusals=tuple(ref(r) for r in data.get("refusals", ())),
            refused_run=int(data.get("refused_run", 0)),
            pending=None if data.get("pending") is None else ref(data["pending"]),
            before=None if data.get("before") is None else Decimal(data["before"]),
            before_at=None if data.get("before_at") is None else _utc(data["before_at"]),
            by_person=bool(data.get("by_person", False)),
            reanchors=int(data.get("reanchors", 0)),
        )


def _utc(text: str) -> datetime:
    return check_sane(parse_utc(text))


@dataclass(frozen=True)
class WheelExplain:
    """How one wheel entered the value: ``how`` is own | carry | alternative | filled | unreadable."""

    digit: int | None
    position: float
    confidence: float
    resolved: int | None
    how: str
    margin: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "v": "N" if self.digit is None else self.digit,
            "f": round(self.position, 2),
            "p": round(self.confidence, 4),
            "resolved": self.resolved,
            "how": self.how,
            "margin": None if self.margin is None else round(self.margin, 3),
        }


@dataclass(frozen=True)
class Decision:
    """The outcome of one frame.

    ``value`` is what is published (a decimal string with the layout's decimals, zero-padded to the
    wheel count) or None; only ``status == "ok"`` is billable. ``raw`` is what the wheels say before the
    history was consulted. ``rule`` is the stable code of the rule that decided; ``reason`` starts with
    the same code for anything that is not ok.
    """

    status: Status
    value: str | None
    reason: str | None
    confidence: float
    rule: str
    raw: str | None = None
    wheels: tuple[WheelExplain, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def digits(self) -> list[dict[str, Any]]:
        """The per-wheel ``{v, f, p}`` of the wire contract's Reading."""
        out = []
        for w in self.wheels:
            f = min(max(float(w.position), 0.0), 9.99)
            out.append({"v": "N" if w.digit is None else w.digit, "f": round(f, 2),
                        "p": round(min(max(float(w.confidence), 0.0), 1.0), 4)})
        return out

    def explain(self) -> dict[str, Any]:
        return {"rule": self.rule, "raw": self.raw, "wheels": [w.as_dict() for w in self.wheels]}
