"""From one frame's wheels and the carried state to a decision: pure, ``(state, observation) -> (decision, state)``.

The order of the rules (docs/reading.md has an example of each):

1. a frame that could not be read at all -> ``error`` (state unchanged);
2. rolling wheels resolved from the lower wheels (``edge.reading.wheels``), with alternatives for wheels
   on a rounding boundary and all ten digits for an unreadable (N) wheel;
3. no previous value: the wheels' own reading, if every wheel is readable (``first``);
4. the candidates that fit the previous value (no fall beyond the hysteresis, no rise above the maximum
   rate since the previous value's time): the primary reading if it fits; else the only one that fits
   (``filled``/``alternative``); several that fit -> ``suspect`` (``unreadable``/``ambiguous``);
   none -> a refusal (``decrease``/``rate_too_high``), published as ``suspect``;
5. a fall within the hysteresis keeps the previous value, ``ok`` (``jitter_hold``);
6. a rise of ``confirm_change_m3`` or more that moves a wheel above the lowest needs a second frame that
   agrees (``unconfirmed_change`` then ``confirmed``);
7. ``confirm_after`` refusals in a row that agree with each other -> ``suspect`` ``needs_confirmation``:
   the device asks for an installer (``cmd/set-value``) instead of refusing silently for ever.

Only ``ok`` is billable; the previous value is replaced only by an ``ok`` value or by ``confirm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from edge.reading.model import Decision, Observation, ReadingState, Refusal, WheelExplain, WheelInput
from edge.reading.rules import Rules
from edge.reading.wheels import MAX_UNREADABLE, Candidate, candidates


def confirm(state: ReadingState, value: Decimal, at: datetime) -> ReadingState:
    """The installer's ``cmd/set-value``: the meter shows ``value`` at ``at``; refusals are forgotten."""
    if value < 0:
        raise ValueError("a meter value is >= 0")
    return ReadingState(previous=value, previous_at=at)


def _readable(w: WheelInput, rules: Rules) -> bool:
    if w.digit is None or not math.isfinite(w.position) or not math.isfinite(w.confidence):
        return False
    return rules.confidence_threshold is None or w.confidence >= rules.confidence_threshold


def _explain(wheels: tuple[WheelInput, ...], cand: Candidate | None, readable: list[bool]) -> tuple[WheelExplain, ...]:
    out = []
    for i, w in enumerate(wheels):
        if cand is None:
            how = "own" if readable[i] else "unreadable"
            out.append(WheelExplain(w.digit, w.position, w.confidence, w.digit if readable[i] else None, how))
        else:
            out.append(WheelExplain(w.digit, w.position, w.confidence, cand.digits[i], cand.hows[i], cand.margins[i]))
    return tuple(out)


def _fmt_m3(value: Decimal) -> str:
    return f"{value:+f}"


def _wheel_list(indexes: list[int]) -> str:
    return ", ".join(str(i + 1) for i in indexes)


def _agree(a: Refusal, value: Decimal, at: datetime, rules: Rules) -> bool:
    """Two refused (or pending) frames agree: the later is not lower beyond the hysteresis and not faster
    than the maximum rate from the earlier."""
    hours = max((at - a.at).total_seconds(), 0.0) / 3600.0
    rise = value - a.value
    return -rules.hysteresis <= rise <= Decimal(str(rules.max_rate_m3_per_h * hours)) + rules.step


def _highest_changed(before: str, after: str) -> int:
    """Index of the highest changed wheel counted from the lowest (0), or -1 when nothing changed."""
    a, b = before.replace(".", ""), after.replace(".", "")
    width = max(len(a), len(b))
    a, b = a.zfill(width), b.zfill(width)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return width - 1 - i
    return -1


def assemble(state: ReadingState, obs: Observation, rules: Rules) -> tuple[Decision, ReadingState]:
    """Decide one frame. Pure: the same inputs give the same decision and new state."""
    wheels = obs.wheels
    n = len(wheels)
    if obs.failure is not None:
        reason = obs.failure if obs.failure.startswith("frame_failed") else f"frame_failed: {obs.failure}"
        return Decision("error", None, reason, 0.0, "frame_failed", None, _explain(wheels, None, [False] * n)), state
    if n == 0:
        return Decision("error", None, "frame_failed: the layout has no digit wheels", 0.0, "frame_failed"), state

    readable = [_readable(w, rules) for w in wheels]
    unreadable = [i for i, r in enumerate(readable) if not r]
    cands = candidates([w.position if math.isfinite(w.position) else 0.0 for w in wheels], readable, rules.ambiguity)
    primary = cands[0] if cands and cands[0].primary else None
    conf = min((w.confidence for w, r in zip(wheels, readable, strict=True) if r), default=0.0)

    def value_of(c: Candidate) -> Decimal:
        return rules.from_units(c.units())

    def fmt(v: Decimal) -> str:
        return rules.format(v, n)

    raw = fmt(value_of(primary)) if primary else None

    def decision(status: str, value: Decimal | None, reason: str | None, rule: str,
                 cand: Candidate | None) -> Decision:
        return Decision(status, None if value is None else fmt(value), reason,  # type: ignore[arg-type]
                        round(conf, 4), rule, raw, _explain(wheels, cand, readable))

    def unreadable_text() -> str:
        low = [f"{i + 1} ({wheels[i].confidence:.2f})" for i in unreadable]
        thr = rules.confidence_threshold
        under = f" under the confidence threshold {thr:.2f}" if thr is not None else " marked N by the model"
        return f"wheel{'s' if len(low) > 1 else ''} {', '.join(low)} (from the left){under}"

    prev = state.previous

    # 3. nothing to compare with
    if prev is None:
        if primary is None:
            why = (f"more than {MAX_UNREADABLE} wheels" if not cands else "no previous value to fill them from")
            return decision("suspect", None, f"unreadable: {unreadable_text()}; {why}", "unreadable", None), state
        v = value_of(primary)
        new = ReadingState(previous=v, previous_at=obs.taken_at)
        return decision("ok", v, None, "first", primary), new

    # 4. what fits the previous value
    hours: float | None = None
    upper: Decimal | None = None
    if state.previous_at is not None:
        hours = (obs.taken_at - state.previous_at).total_seconds() / 3600.0
        upper = prev + Decimal(str(round(rules.max_rate_m3_per_h * max(hours, 0.0), 6))) + rules.step
    lower = prev - rules.hysteresis

    def fits(v: Decimal) -> bool:
        return v >= lower and (upper is None or v <= upper)

    chosen: Candidate | None = None
    if primary is not None and fits(value_of(primary)):
        chosen = primary
    else:
        fitting = [c for c in cands if fits(value_of(c))]
        values = sorted({value_of(c) for c in fitting})
        if len(values) == 1:
            chosen = fitting[0]
        elif len(values) > 1:
            shown = ", ".join(fmt(v) for v in values[:4]) + (", ..." if len(values) > 4 else "")
            if primary is None:
                reason = f"unreadable: {unreadable_text()}; {len(values)} values fit the previous {fmt(prev)}: {shown}"
                return decision("suspect", None, reason, "unreadable", None), state
            reason = (f"ambiguous: the wheels read {raw}, which does not fit the previous {fmt(prev)}, "
                      f"and wheels on a boundary allow {len(values)} values that do: {shown}")
            return decision("suspect", None, reason, "ambiguous", None), state
        elif primary is None:
            why = f"more than {MAX_UNREADABLE} wheels" if not cands else f"no digit fits the previous {fmt(prev)}"
            return decision("suspect", None, f"unreadable: {unreadable_text()}; {why}", "unreadable", None), state

    if chosen is None:  # the primary reading is refused
        assert primary is not None
        v = value_of(primary)
        if v < lower:
            code = "decrease"
            text = (f"decrease: {fmt(v)} is {prev - v:f} m3 below the accepted {fmt(prev)} "
                    f"(more than the {rules.hysteresis_steps}-step hysteresis)")
        else:
            code = "rate_too_high"
            text = (f"rate_too_high: {_fmt_m3(v - prev)} m3 in {max(hours or 0.0, 0.0):.2f} h "
                    f"> max {rules.max_rate_m3_per_h:g} m3/h since the accepted {fmt(prev)}")
        return _refuse(state, obs, rules, v, code, text, decision, primary, fmt)

    v = value_of(chosen)
    rule = "filled" if chosen.filled else "alternative" if chosen.alternative else "increase"

    # 5. jitter on the lowest wheel
    if v <= prev:
        new = ReadingState(previous=prev, previous_at=obs.taken_at)
        return decision("ok", prev, None, "unchanged" if v == prev else "jitter_hold", chosen), new

    # 6. a large rise that moves a high wheel needs a second frame
    rise = v - prev
    top = _highest_changed(fmt(prev), fmt(v))
    if rise >= Decimal(str(rules.confirm_change_m3)) and top > 0:
        if state.pending is not None and _agree(state.pending, v, obs.taken_at, rules):
            new = ReadingState(previous=v, previous_at=obs.taken_at)
            return decision("ok", v, None, "confirmed", chosen), new
        pend = Refusal(v, obs.taken_at, "unconfirmed_change")
        reason = (f"unconfirmed_change: {_fmt_m3(rise)} m3 since the accepted {fmt(prev)} moves wheel "
                  f"{n - top} (from the left); waiting for a second frame that agrees")
        return decision("suspect", v, reason, "unconfirmed_change", chosen), replace(state, pending=pend)

    new = ReadingState(previous=v, previous_at=obs.taken_at)
    return decision("ok", v, None, rule, chosen), new


def _refuse(state: ReadingState, obs: Observation, rules: Rules, v: Decimal, code: str, text: str,
            decision: Callable[[str, Decimal | None, str | None, str, Candidate | None], Decision],
            primary: Candidate, fmt: Callable[[Decimal], str]) -> tuple[Decision, ReadingState]:
    """Count a refusal; after ``confirm_after`` that agree, ask for an installer instead of refusing again."""
    last = state.refusals[-1] if state.refusals else None
    if last is not None and _agree(last, v, obs.taken_at, rules):
        run = (*state.refusals, Refusal(v, obs.taken_at, code))[-rules.confirm_after:]
        count = state.refused_run + 1
    else:
        run = (Refusal(v, obs.taken_at, code),)
        count = 1
    new = replace(state, refusals=run, refused_run=count, pending=None)
    if count >= rules.confirm_after:
        assert state.previous is not None
        reason = (f"needs_confirmation: {count} frames in a row agree on about {fmt(v)} but each is refused "
                  f"({text}); an installer must check the meter and confirm its value (cmd/set-value)")
        return decision("suspect", v, reason, "needs_confirmation", primary), new
    return decision("suspect", v, text, code, primary), new
