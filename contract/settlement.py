"""Settlement: which readings of one meter the readings around them corroborate (pure, stdlib only).

A device decides each frame alone, with only the past to compare against; one misread it accepts
would be billed. Settlement looks at one meter's readings in time order, **before and after** each one,
and marks each reading:

* ``settled``: on the meter's one consistent course (forward only, at a plausible rate, each wheel's
  position consistent with the wheels below), with a reading before it and ``min_after`` after it that
  agree. Only a settled reading is billable.
* ``outlier``: off that course, and ``min_after`` later readings on the course outvote it (or nothing
  was read). ``reason`` says against which readings it failed and, where it can, which wheel.
* ``pending``: not decided yet (not enough readings after it), or never by itself: the first reading
  (nothing before it), or readings after the meter itself changed (replaced, reset, wrapped past
  99999: a person must confirm the new value).

How the course is found: the readings are nodes of a graph with an edge from an earlier to a later
reading when the later one is not lower (beyond ``jitter_steps`` of the lowest wheel) and not higher
than ``max_rate`` allows for the time between them (plus one step). The course is the path with the
most readings (ties: the smoother one), so a lone misread, high or low, is left off because taking
it would cost every reading on one side of it. A *break* (the path jumps to a reading lower or faster
than allowed) costs ``break_after - 0.5`` readings: only a change that ``break_after`` readings in a row
keep is taken as the meter itself changing; everything after a break is ``pending`` until a person's
value (``trusted``) anchors it. A person's value (``trusted``: a checked correction, an installer's
``set-value``) is always on the course and always settled; ``billed`` (the value billing already
holds) is an anchor like one.

The interface (the bridge and ``meter-edge read`` both call it; keep it stable):

``settle(observations, *, max_rate_m3_per_h, min_after=2, billed=None, billed_at=None, jitter_steps=1,
break_after=6) -> list[Settlement]``: one Settlement per observation, in the order given (the
observations may come in any order; they are taken in time order, ties in the order given).

``plausible_range(observations, at, *, max_rate_m3_per_h, ...) -> (low, high)``: what a person's value
at ``at`` may be, from the settled readings (and person's values) nearest before and after ``at``
(``None``: unbounded). Leave out the reading being corrected.

``Settlement.reason`` is ``"code: sentence"`` (``Settlement.code`` is the code) for outlier and pending;
None for settled. Codes: outlier ``no_value``, ``wheels_inconsistent``, ``higher_than_later``,
``lower_than_earlier``, ``too_fast``, ``disagrees``; pending ``awaiting_later``, ``first_reading``,
``suspect_only``, ``disputed``, ``meter_changed``, ``meter_wrapped``.

Limits (docs/reading.md): the same misread on ``min_after + 1`` frames in a row, each agreeing with the
one before, is a course of its own until later readings outnumber it; a misread that stays between its
neighbours (forward, within the rate) cannot be told from the truth.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

State = Literal["settled", "outlier", "pending"]

CARRY_EARLY = 8.5
"""The earliest a wheel's transfer pinion starts to move the wheel above (position of the lower wheel)."""
CARRY_LATE = 9.5
"""The latest it starts (same numbers as the device's wheel resolution, ``meter_vision.wheels``)."""
WHEEL_TOLERANCE = 0.45
"""How far (in digit positions) a wheel may stand off what the wheel below allows before the reading's
wheels are called inconsistent: the model's position estimate is rough, a misplaced wheel is not."""
LOWER_SLACK = 0.2
"""How far off the model's position of the lower wheel may be when judging the wheel above it."""
WHEEL_CONFIDENCE = 0.5
"""Wheels read with less confidence than this are not used for the consistency check."""
WINDOW = 64
"""How many earlier readings a reading may follow directly on the course (longer runs of misreads are a
break, which waits for a person: safe, never wrong)."""

@dataclass(frozen=True)
class Digit:
    """One wheel as the model saw it: ``v`` digit reached (None: unreadable), ``f`` position 0.0-9.9 (None:
    not given), ``p`` confidence 0-1. Left to right, highest wheel first."""

    v: int | None
    f: float | None
    p: float


@dataclass(frozen=True)
class Observation:
    """One reading of one meter.

    ``key``: the caller's id (reading id on the bridge, frame index on the device); ``taken_at``:
    timezone-aware; ``value``: None when nothing could be read; ``status``: the device's word (``ok``,
    ``suspect``, ``error``) or ``corrected`` / ``photo`` for a person's value; ``digits``: per wheel, left
    to right (may be empty); ``decimals``: wheels after the decimal point (the lowest wheel's step is
    10**-decimals m³); ``trusted``: a person's checked value, an anchor that is always on the course.
    """

    key: Any
    taken_at: datetime
    value: Decimal | None
    status: str
    digits: tuple[Digit, ...] = ()
    decimals: int = 3
    trusted: bool = False

    def __post_init__(self) -> None:
        if self.taken_at.tzinfo is None or self.taken_at.utcoffset() is None:
            raise ValueError(f"observation {self.key!r}: taken_at {self.taken_at.isoformat()} has no time zone")
        if not 0 <= self.decimals <= 6:
            raise ValueError(f"observation {self.key!r}: decimals must be 0..6, not {self.decimals}")
        if self.value is not None and (not self.value.is_finite() or self.value < 0):
            raise ValueError(f"observation {self.key!r}: value {self.value} is not a meter value (>= 0)")
        if self.trusted and self.value is None:
            raise ValueError(f"observation {self.key!r}: a trusted (person's) observation needs a value")


@dataclass(frozen=True)
class Settlement:
    """What the readings around one observation say about it.

    ``reason``: ``"code: sentence"`` for outlier and pending, None for settled. ``before`` / ``after``:
    keys of the readings that corroborate a settled one (``before`` is None when billing's value or
    the course's start vouched for it), or, for an outlier, the course readings it was measured against.
    """

    key: Any
    state: State
    reason: str | None
    before: Any = None
    after: tuple[Any, ...] = field(default=())

    @property
    def code(self) -> str | None:
        return None if self.reason is None else self.reason.split(":", 1)[0]

    @property
    def settled(self) -> bool:
        return self.state == "settled"


def digits_from_wire(items: Iterable[Any]) -> tuple[Digit, ...]:
    """The wire's ``[{"v": 3 | "N", "f": 3.2 | None, "p": 0.9}, ...]`` (dicts or objects) as Digits.

    Anything malformed gives an empty tuple (the consistency check is then skipped), never an error.
    """
    out = []
    try:
        for item in items:
            get = item.get if isinstance(item, dict) else (lambda k, _i=item: getattr(_i, k, None))
            v, f, p = get("v"), get("f"), get("p")
            digit = v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9 else None
            pos = float(f) if isinstance(f, (int, float)) and math.isfinite(f) else None
            conf = float(p) if isinstance(p, (int, float)) and math.isfinite(p) else 0.0
            out.append(Digit(digit, pos, conf))
    except (TypeError, ValueError, AttributeError):
        return ()
    return tuple(out)


# ------------------------------------------------------------------------------------------ helpers
@dataclass
class _Node:
    index: int              # position in the caller's list (-1: billing's value)
    obs: Observation | None  # None: billing's value
    units: int              # value in the common smallest unit
    hours: float            # hours since an arbitrary origin (or -inf: before everything)
    step: int               # one step of this reading's lowest wheel, in units
    trusted: bool
    weight: float


def _scale(observations: Sequence[Observation], billed: Decimal | None) -> int:
    """The common number of decimals: enough for every value and every layout."""
    d = 0
    for o in observations:
        d = max(d, o.decimals)
        if o.value is not None:
            exp = o.value.as_tuple().exponent
            if isinstance(exp, int) and exp < 0:
                d = max(d, -exp)
    if billed is not None:
        exp = billed.as_tuple().exponent
        if isinstance(exp, int) and exp < 0:
            d = max(d, -exp)
    return min(d, 12)


def _to_units(value: Decimal, scale: int) -> int:
    try:
        return int(value.scaleb(scale).to_integral_value(rounding="ROUND_FLOOR"))
    except (InvalidOperation, OverflowError, ValueError):
        return 0


def _fmt(units: int, scale: int, decimals: int, wheels: int | None) -> str:
    """A value as the meter shows it: ``decimals`` after the point, zero-padded to ``wheels`` digits."""
    shown = units // 10 ** (scale - decimals) if scale >= decimals else units * 10 ** (decimals - scale)
    text = str(shown).zfill(wheels or (decimals + 1))
    return text if decimals == 0 else f"{text[:-decimals]}.{text[-decimals:]}"


def _wheels_problem(o: Observation) -> str | None:
    """A sentence when a wheel stands where the wheel below it does not allow (a misplaced wheel)."""
    if o.value is None or len(o.digits) < 2:
        return None
    shown = str(_to_units(o.value, o.decimals)).zfill(len(o.digits))
    if len(shown) != len(o.digits):
        return None
    for i in range(len(o.digits) - 1):
        upper, lower = o.digits[i], o.digits[i + 1]
        if upper.f is None or lower.f is None or min(upper.p, lower.p) < WHEEL_CONFIDENCE:
            continue
        if not (math.isfinite(upper.f) and math.isfinite(lower.f)):
            continue
        # the band over the lower wheel's position give or take LOWER_SLACK: a lower wheel read 9.9 that
        # is really at 0.1 (the model's rough position near the wrap) leaves the wheel above at rest
        los, his = [], []
        for d in (-LOWER_SLACK, 0.0, LOWER_SLACK):
            pos = (lower.f + d) % 10.0
            los.append(min(max(pos - CARRY_LATE, 0.0) / (10.0 - CARRY_LATE), 1.0))
            his.append(min(max(pos - CARRY_EARLY, 0.0) / (10.0 - CARRY_EARLY), 1.0))
        lo, hi = min(los), max(his)
        turned = (upper.f - int(shown[i])) % 10.0
        if turned > 5.0:
            turned -= 10.0
        off = max(lo - turned, turned - hi, 0.0)
        if off > WHEEL_TOLERANCE:
            return (f"wheel {i + 1} (from the left) stands at {upper.f:.1f} for a {shown[i]} while the wheel below "
                    f"is at {lower.f:.1f}, which allows it {int(shown[i]) + lo:.1f}-{int(shown[i]) + hi:.1f}: "
                    f"the wheels do not fit each other")
    return None


def _held(node: _Node) -> bool:
    """A reading the device itself held back (suspect): it corroborates, but cannot settle anything alone."""
    return node.obs is not None and not node.trusted and node.obs.status == "suspect"


def _wheel_count(o: Observation | None) -> int | None:
    return len(o.digits) if o is not None and o.digits else None


# ------------------------------------------------------------------------------------------ settle
def settle(observations: Sequence[Observation], *, max_rate_m3_per_h: Decimal | float, min_after: int = 2,
           billed: Decimal | None = None, billed_at: datetime | None = None, jitter_steps: int = 1,
           break_after: int = 6) -> list[Settlement]:
    """Settle one meter's readings; one Settlement per observation, in the order given. Pure, never raises
    for valid Observations (module docstring: the rules and the reason codes).

    ``max_rate_m3_per_h``: the meter's highest plausible flow. ``min_after``: later readings on the
    course needed to settle one. ``billed`` / ``billed_at``: the value billing already holds and when it
    was read (an anchor; without ``billed_at`` it stands before every reading). ``jitter_steps``: a fall
    of this many lowest-wheel steps is the wheel wobbling, not a decrease. ``break_after``: a fall (or a
    jump too fast) that this many readings in a row keep is the meter changing, not a misread.
    """
    rate = Decimal(str(max_rate_m3_per_h))
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"max_rate_m3_per_h must be > 0, not {max_rate_m3_per_h}")
    if min_after < 0 or jitter_steps < 0 or break_after < 1:
        raise ValueError("min_after and jitter_steps must be >= 0, break_after >= 1")
    if billed is not None and (not billed.is_finite() or billed < 0):
        raise ValueError(f"billed {billed} is not a meter value")
    if billed_at is not None and billed_at.utcoffset() is None:
        raise ValueError("billed_at has no time zone")

    scale = _scale(observations, billed)
    rate_units = float(rate.scaleb(scale))
    result: list[Settlement | None] = [None] * len(observations)
    origin = min((o.taken_at for o in observations), default=billed_at)

    def hours(t: datetime) -> float:
        return (t - origin).total_seconds() / 3600.0 if origin is not None else 0.0

    # nodes: readings that may be on the course, in time order (ties: the caller's order)
    order = sorted(range(len(observations)), key=lambda i: (observations[i].taken_at, i))
    nodes: list[_Node] = []
    for i in order:
        o = observations[i]
        if o.value is None or (o.status == "error" and not o.trusted):
            result[i] = Settlement(o.key, "outlier", "no_value: nothing was read from this frame"
                                   + (f" (status {o.status})" if o.status != "ok" else ""))
            continue
        if not o.trusted:
            problem = _wheels_problem(o)
            if problem is not None:
                result[i] = Settlement(o.key, "outlier", f"wheels_inconsistent: {problem}")
                continue
        nodes.append(_Node(i, o, _to_units(o.value, scale), hours(o.taken_at), 10 ** max(scale - o.decimals, 0),
                           o.trusted, 0.0))
    if billed is not None:
        step = 10 ** max(scale - min((o.decimals for o in observations), default=scale), 0)
        node = _Node(-1, None, _to_units(billed, scale), hours(billed_at) if billed_at else -math.inf, step, True, 0.0)
        nodes.insert(0 if billed_at is None else sum(1 for n in nodes if n.hours <= node.hours), node)
    if not nodes:
        return [r for r in result if r is not None]

    penalty = break_after - 0.5
    heavy = (len(nodes) + 1) * (penalty + 1)  # a person's value outweighs every reading and break together
    for n in nodes:
        n.weight = heavy if n.trusted else 1.0

    def fits(a: _Node, b: _Node) -> bool:
        """``b`` (later) may follow ``a`` on the course."""
        jitter = max(a.step, b.step) * jitter_steps
        rise = b.units - a.units
        if rise < -jitter:
            return False
        if math.isinf(a.hours):
            return True
        dt = max(b.hours - a.hours, 0.0)
        return rise <= rate_units * dt + max(a.step, b.step)

    unit = float(10 ** scale)

    # forward dynamic programme: best (score, -roughness) of a course ending at each node
    n_nodes = len(nodes)
    score = [0.0] * n_nodes
    rough = [0.0] * n_nodes
    prev: list[int | None] = [None] * n_nodes
    is_break = [False] * n_nodes
    best_prefix = -1  # the node with the best course so far
    for j, b in enumerate(nodes):
        # a course may start afresh only at the first reading or the second (leaving out a lone first
        # misread); leaving out more at the start is a break like any other, so a short history before a
        # meter change is not thrown away as outliers
        best = (b.weight if j <= 1 else -math.inf, 0.0)
        link: int | None = None
        brk = False
        bu, bh, bstep, bw = b.units, b.hours, b.step, b.weight
        for i in range(max(0, j - WINDOW), j):  # fits() and roughness() inlined: this loop is the cost
            a = nodes[i]
            step = a.step if a.step > bstep else bstep
            rise = bu - a.units
            if rise < -step * jitter_steps:
                continue
            if a.hours == -math.inf:
                dt = 0.0
            else:
                dt = bh - a.hours if bh > a.hours else 0.0
                if rise > rate_units * dt + step:
                    continue
            m3 = rise / unit
            cand = (score[i] + bw, rough[i] - m3 * m3 / (dt + 1.0))
            if cand > best:
                best, link, brk = cand, i, False
        if best_prefix >= 0:
            cand = (score[best_prefix] - penalty + b.weight, rough[best_prefix])
            if cand > best:
                best, link, brk = cand, best_prefix, True
        score[j], rough[j] = best
        prev[j], is_break[j] = link, brk
        if best_prefix < 0 or (score[j], rough[j]) > (score[best_prefix], rough[best_prefix]):
            best_prefix = j

    # the course: back from the best end
    path: list[int] = []
    cur: int | None = best_prefix
    while cur is not None:
        path.append(cur)
        cur = prev[cur]
    path.reverse()
    # segments: runs of the course between breaks
    segment_of: dict[int, int] = {}
    segments: list[list[int]] = []
    for k, j in enumerate(path):
        if k == 0 or is_break[j]:
            segments.append([])
        segments[-1].append(j)
        segment_of[j] = len(segments) - 1
    confirmed = [s == 0 or any(nodes[j].trusted for j in seg) for s, seg in enumerate(segments)]

    def show(node: _Node, wheels: int | None = None) -> str:
        o = node.obs
        decimals = o.decimals if o is not None else min((x.decimals for x in observations), default=0)
        return _fmt(node.units, scale, decimals, wheels or _wheel_count(o))

    def label(node: _Node) -> str:
        if node.obs is None:
            return f"the billed {show(node)}"
        return f"{show(node)} ({node.obs.taken_at.strftime('%Y-%m-%d %H:%M')} UTC)"

    def change_reason(seg: int) -> str:
        first = nodes[segments[seg][0]]
        before = nodes[segments[seg - 1][-1]]
        wheels = _wheel_count(first.obs) or _wheel_count(before.obs)
        decimals = first.obs.decimals if first.obs is not None else 0
        tail = ("; a person must confirm the meter's value (an installer's set-value or a checked correction) "
                "before these readings are billed")
        if wheels is not None:
            capacity = 10 ** (wheels + scale - decimals)
            dt = 0.0 if math.isinf(before.hours) else max(first.hours - before.hours, 0.0)
            wrapped = first.units + capacity - before.units
            if first.units < before.units and 0 <= wrapped <= rate_units * dt + first.step:
                return (f"meter_wrapped: the counter passed {_fmt(capacity - 1, scale, decimals, wheels)} after "
                        f"{label(before)} and started again at {label(first)}" + tail)
        direction = "fell" if first.units < before.units else "jumped"
        return (f"meter_changed: the readings {direction} from {label(before)} to {label(first)} and "
                f"{len(segments[seg])} readings in a row stay there: the meter was replaced, reset or wrapped, "
                f"or the camera reads another meter" + tail)

    # members of the course
    for s, seg in enumerate(segments):
        for k, j in enumerate(seg):
            node = nodes[j]
            if node.obs is None:
                continue
            o = node.obs
            if node.trusted:
                result[node.index] = Settlement(o.key, "settled", None)
                continue
            if not confirmed[s]:
                result[node.index] = Settlement(o.key, "pending", change_reason(s))
                continue
            if k == 0:
                result[node.index] = Settlement(
                    o.key, "pending", "first_reading: nothing earlier to compare it with; it settles when a person "
                    "confirms the meter's value (set-value), later readings supersede it")
                continue
            before = nodes[seg[k - 1]]
            after = [nodes[x] for x in seg[k + 1:k + 1 + min_after]]
            if len(after) < min_after:
                result[node.index] = Settlement(
                    o.key, "pending", f"awaiting_later: {len(after)} of the {min_after} later readings needed to "
                    f"corroborate it so far", before.obs.key if before.obs else None)
                continue
            if o.status == "suspect" and not any(not _held(nodes[x]) for x in seg[:k + 1 + min_after]):
                result[node.index] = Settlement(
                    o.key, "pending", "suspect_only: the device held this reading and every reading on the course "
                    "up to it and the ones that agree after it; not evidence enough to bill",
                    before.obs.key if before.obs else None)
                continue
            result[node.index] = Settlement(o.key, "settled", None, before.obs.key if before.obs else None,
                                            tuple(x.obs.key for x in after if x.obs is not None))

    # readings off the course
    on_path = set(path)
    for j, off in enumerate(nodes):
        if j in on_path or off.obs is None:
            continue
        o = off.obs
        cut = bisect.bisect_left(path, j)
        near = nodes[path[cut - 1]] if cut > 0 else None
        home = segment_of[path[cut - 1]] if cut > 0 else 0  # the segment it would belong to
        later: list[int] = []
        for x in path[cut:]:
            if segment_of[x] != home or len(later) >= max(min_after, 1):
                break
            later.append(x)
        bs = [nodes[x] for x in later]
        reason = _off_course_reason(off, near, bs, fits, show, label, rate, scale)
        if len(later) >= min_after and confirmed[home]:
            result[off.index] = Settlement(o.key, "outlier", reason, near.obs.key if near and near.obs else None,
                                           tuple(x.obs.key for x in bs if x.obs is not None))
        else:
            code, _, text = reason.partition(": ")
            result[off.index] = Settlement(
                o.key, "pending", f"disputed: {text} ({code}); waiting for later readings to decide")
    return [r for r in result if r is not None]


def _off_course_reason(node: _Node, a: _Node | None, bs: list[_Node], fits: Any, show: Any, label: Any,
                       rate: Decimal, scale: int) -> str:
    """Why a reading is off the course, against the course readings just before (``a``) and after (``bs``)."""
    value = show(node)
    b = bs[0] if bs else None
    note = _wheel_note(node, a, b, show)
    if b is not None and node.units > b.units + node.step:
        later = ", ".join(show(x) for x in bs)
        return f"higher_than_later: {value} is above the later {later}{note}: a misread"
    if a is not None and node.units < a.units - node.step:
        return f"lower_than_earlier: {value} is below the earlier {label(a)}{note}: a misread"
    if a is not None and not fits(a, node):
        dt = max(node.hours - a.hours, 0.0)
        return (f"too_fast: {value} is {Decimal(node.units - a.units).scaleb(-scale):f} m3 above {label(a)}, "
                f"in {dt:.1f} h; more than {rate:g} m3/h{note}")
    if b is not None and not fits(node, b):
        return (f"too_fast: from {value} to the later {label(b)} would need more than {rate:g} m3/h{note}: "
                f"{value} is too low")
    return f"disagrees: {value} is off the course that the readings around it agree on{note}"


def _wheel_note(node: _Node, a: _Node | None, b: _Node | None, show: Any) -> str:
    """", wheel 7 (from the left) reads 8 where the readings around it show 3 and 4"."""
    wheels = _wheel_count(node.obs)
    mine = show(node, wheels).replace(".", "")
    around = [show(x, wheels).replace(".", "") for x in (a, b) if x is not None]
    around = [t for t in around if len(t) == len(mine)]
    if not around:
        return ""
    for i, ch in enumerate(mine):
        if all(t[i] != ch for t in around):
            seen = " and ".join(sorted({t[i] for t in around}))
            return f" (wheel {i + 1} from the left reads {ch} where the readings around it show {seen})"
    return ""


def plausible_range(observations: Sequence[Observation], at: datetime, *, max_rate_m3_per_h: Decimal | float,
                    min_after: int = 2, billed: Decimal | None = None, billed_at: datetime | None = None,
                    jitter_steps: int = 1, break_after: int = 6) -> tuple[Decimal | None, Decimal | None]:
    """What a person's value for the meter at ``at`` may be: ``(low, high)``, None where nothing bounds it.

    Bounded by the settled readings and persons' values nearest before and after ``at``: not below the
    one before (less one step), not above it by more than the rate allows for the time between, and the
    same from the one after. When the readings nearest ``at`` are a new course waiting for a person
    (the meter changed), that course bounds it instead, so a person can confirm a replaced meter.
    Leave the reading being corrected out of ``observations``. ``low > high`` means the readings around
    ``at`` contradict each other there (a break): no value fits, hold the person's value for review.
    """
    if at.utcoffset() is None:
        raise ValueError("at has no time zone")
    rate = Decimal(str(max_rate_m3_per_h))
    results = settle(observations, max_rate_m3_per_h=rate, min_after=min_after, billed=billed,
                     billed_at=billed_at, jitter_steps=jitter_steps, break_after=break_after)
    anchors: list[tuple[datetime | None, Decimal, int]] = []
    changed: list[tuple[datetime | None, Decimal, int]] = []
    for o, r in zip(observations, results, strict=True):
        if o.value is None:
            continue
        if r.state == "settled":
            anchors.append((o.taken_at, o.value, o.decimals))
        elif r.code in ("meter_changed", "meter_wrapped"):
            changed.append((o.taken_at, o.value, o.decimals))
    if billed is not None:
        anchors.append((billed_at, billed, min((o.decimals for o in observations), default=0)))
    # which course is nearest in time to `at`: the settled one or a changed meter's
    def gap(items: list[tuple[datetime | None, Decimal, int]]) -> float:
        return min((abs((t - at).total_seconds()) for t, _, _ in items if t is not None), default=math.inf)

    pool = changed if changed and gap(changed) < gap(anchors) else anchors
    before = [x for x in pool if x[0] is None or x[0] <= at]
    after = [x for x in pool if x[0] is not None and x[0] >= at]
    low: Decimal | None = None
    high: Decimal | None = None
    if before:
        t, v, d = max(before, key=lambda x: (x[0] is not None, x[0] or at, x[1]))
        step = Decimal(1).scaleb(-d)
        low = max(v - step * jitter_steps, Decimal(0))
        if t is not None:
            high = v + rate * Decimal(str((at - t).total_seconds() / 3600.0)) + step
    if after:
        t2, v2, d2 = min(after, key=lambda x: (x[0], x[1]))
        step = Decimal(1).scaleb(-d2)
        up = v2 + step * jitter_steps
        high = up if high is None else min(high, up)
        assert t2 is not None
        floor = v2 - rate * Decimal(str((t2 - at).total_seconds() / 3600.0)) - step
        low = floor if low is None else max(low, floor)
        low = max(low, Decimal(0))
    return low, high
