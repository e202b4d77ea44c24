"""Rolling-wheel resolution: which digit each wheel shows, decided from the wheels below it.

An odometer wheel turns towards its next digit only while the wheel to its right rolls from 9 to 0 (a
transfer pinion). So a wheel's own position says little about
its digit when it is caught between two numbers: a wheel at 2.6 above a wheel at 9.7 is a 2 still
rolling (the carry is not done), above a wheel at 0.1 it is a 3 that has not quite settled. We resolve
from the lowest wheel (whose own position decides) upwards: for each wheel the wheel below gives the band
of how far it may have turned (``carry_band``), and its digit is its position minus the middle of that
band, rounded. A carry through several wheels (0129.99 -> 0130.00) needs nothing special: each wheel
passes its resolved position up to the next.

A wheel whose position falls within ``ambiguity`` of the rounding boundary also offers its neighbour
as an *alternative*; an unreadable wheel (N) offers all ten digits. The assembly picks among the
resulting candidate values with the previous value and the maximum rate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

CARRY_EARLY = 8.5
"""The earliest a transfer pinion starts to move the next wheel (lower wheel's position)."""
CARRY_LATE = 9.5
"""The latest it starts. The simulator's meters start at 9.0; AI-on-the-edge's notes say about 9.7 finishes."""

MAX_UNREADABLE = 3
"""More unreadable wheels than this are not enumerated (10**k candidates): the frame is unreadable."""


def carry_band(lower: float) -> tuple[float, float]:
    """How far (0..1) the wheel above may have turned past its digit while the wheel below is at ``lower``.

    The wheel above moves only while the one below rolls from about 9 to 10 (a transfer pinion); when
    exactly it starts differs between meters, so the band spans a pinion starting at ``CARRY_LATE``
    (lower bound) to one starting at ``CARRY_EARLY`` (upper bound).
    """
    lower = lower % 10.0
    lo = min(max(lower - CARRY_LATE, 0.0) / (10.0 - CARRY_LATE), 1.0)
    hi = min(max(lower - CARRY_EARLY, 0.0) / (10.0 - CARRY_EARLY), 1.0)
    return lo, hi


@dataclass(frozen=True)
class WheelOption:
    """One way to read a wheel: the digit, the wheel's position passed to the wheel above, how it was got."""

    digit: int
    value: float
    how: str
    margin: float | None
    alternative: bool = False


def lowest_options(position: float) -> list[WheelOption]:
    """The lowest wheel decides itself: the digit it has reached (floor of its position)."""
    p = position % 10.0
    return [WheelOption(math.floor(p + 1e-9) % 10, p, "own", None)]


def upper_options(position: float, lower: float, ambiguity: float) -> list[WheelOption]:
    """Options for a wheel above one whose position is ``lower``: the resolved digit, then maybe its neighbour."""
    lo, hi = carry_band(lower)
    x = position - (lo + hi) / 2.0
    d = math.floor(x + 0.5)
    r = x - d
    margin = 0.5 - abs(r)

    def option(digit: int, alternative: bool) -> WheelOption:
        frac = min(max(position - digit, lo), hi)
        if position - digit > 5:  # circular: a wheel at 9.9 read as 0 (digit 10 -> 0) or vice versa
            frac = min(max(position - digit - 10, lo), hi)
        elif position - digit < -5:
            frac = min(max(position - digit + 10, lo), hi)
        own = math.floor(position % 10.0 + 1e-9) % 10
        how = "alternative" if alternative else ("own" if digit % 10 == own else "carry")
        return WheelOption(digit % 10, digit % 10 + frac, how, margin, alternative)

    out = [option(d, False)]
    if margin < ambiguity:
        out.append(option(d + 1 if r > 0 else d - 1, True))
    return out


@dataclass(frozen=True)
class Candidate:
    """A full reading the wheels allow: digits left to right, and how each was read."""

    digits: tuple[int, ...]
    hows: tuple[str, ...]
    margins: tuple[float | None, ...]

    @property
    def alternative(self) -> bool:
        return "alternative" in self.hows

    @property
    def filled(self) -> bool:
        return "filled" in self.hows

    @property
    def primary(self) -> bool:
        return not (self.alternative or self.filled)

    def units(self) -> int:
        """The value as an integer count of the lowest wheel's steps."""
        return int("".join(str(d) for d in self.digits) or "0")


def candidates(positions: Sequence[float], readable: Sequence[bool], ambiguity: float) -> list[Candidate]:
    """Every reading the wheels allow, the primary one (no alternative, nothing filled) first if there is one.

    ``positions`` and ``readable`` are left to right (highest wheel first). Returns [] when too many wheels
    are unreadable to enumerate.
    """
    n = len(positions)
    if n == 0 or sum(not r for r in readable) > MAX_UNREADABLE:
        return []
    # partial paths from the right: (digits reversed, hows, margins, lower position interval or None)
    Partial = tuple[tuple[int, ...], tuple[str, ...], tuple[float | None, ...], tuple[float, float] | None]
    paths: list[Partial] = [((), (), (), None)]
    for i in reversed(range(n)):
        nxt: list[Partial] = []
        for ds, hows, ms, lower in paths:
            if not readable[i]:
                for k in range(10):
                    nxt.append(((*ds, k), (*hows, "filled"), (*ms, None), (k + 0.0, k + 0.999)))
                continue
            if lower is None:
                opts = lowest_options(positions[i])
            else:
                opts = upper_options(positions[i], lower[0], ambiguity)
                if lower[1] != lower[0]:  # the wheel below is unknown within a digit: both ends of its band
                    seen = {o.digit for o in opts}
                    opts += [o for o in upper_options(positions[i], lower[1], ambiguity) if o.digit not in seen]
            for o in opts:
                nxt.append(((*ds, o.digit), (*hows, o.how), (*ms, o.margin), (o.value, o.value)))
        paths = nxt
    out = [Candidate(tuple(reversed(ds)), tuple(reversed(hows)), tuple(reversed(ms))) for ds, hows, ms, _ in paths]
    out.sort(key=lambda c: (not c.primary, c.hows.count("alternative")))
    # the same digits can come out of two routes (both ends of an unknown band): keep the first
    unique: dict[tuple[int, ...], Candidate] = {}
    for c in out:
        unique.setdefault(c.digits, c)
    return list(unique.values())


def primary(positions: Sequence[float], ambiguity: float = 0.0) -> tuple[int, ...]:
    """The digits the wheels show when every wheel is readable (no alternatives): a convenience for tests."""
    cands = candidates(positions, [True] * len(positions), ambiguity)
    return next(itertools.chain((c.digits for c in cands if c.primary), [()]))
