"""From one frame's wheels and the carried state to a decision: pure, ``(state, observation) -> (decision, state)``.

The order of the rules (docs/reading.md has an example of each):

1. a frame that could not be read at all -> ``error`` (state unchanged);
2. rolling wheels resolved from the lower wheels (``meter_vision.wheels``), with alternatives for wheels
   on a rounding boundary and all ten digits for an unreadable (N) wheel;
3. no previous value: the wheels' own reading, if every wheel is readable (``first``);
4. the candidates that fit the previous value (no fall beyond the hysteresis, no rise above the maximum
   rate since the previous value's time): if all that fit leave the value where it is, it stays; else the
   primary reading if it is the only one that fits; with an unreadable wheel, the only value that fits
   (``filled``); several that fit, or only a second-best reading of a boundary wheel -> ``suspect``
   (``unreadable``/``ambiguous``); none -> a refusal (``decrease``/``rate_too_high``), published as
   ``suspect``;
5. a fall within the hysteresis keeps the previous value, ``ok`` (``jitter_hold``);
6. a rise whose changed wheels are read with less than ``change_confidence`` (``low_confidence``), or a
   rise above ``confirm_change_m3`` per hour since the accepted value (more than ordinary use) that moves
   a wheel above the lowest (``unconfirmed_change``), is held as ``suspect`` until a second frame agrees
   with it (``confirmed``);
7. ``confirm_after`` refusals in a row that agree with each other: the device re-anchors by itself
   (``reanchored``, published as ``suspect`` with the reason) when their course goes forward, or fits the
   value accepted before the current one (the current one was a misread); a course below that, or below
   a person's value, is ``needs_confirmation``: the meter changed, an installer must confirm
   (``cmd/set-value``).

Only ``ok`` is billable; the previous value is replaced only by an ``ok`` value, by ``confirm``
or by a re-anchor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from edge.reading.model import Decision, Observation, ReadingState, Refusal, WheelExplain, WheelInput
from edge.reading.rules import Rules
from meter_vision.wheels import MAX_UNREADABLE, Candidate, candidates


def confirm(state: ReadingState, value: Decimal, at: datetime) -> ReadingState:
    """The installer's ``cmd/set-value``: the meter shows ``value`` at ``at``; refusals are forgotten."""
    if value < 0:
        raise ValueError("a meter value is >= 0")
    return ReadingState(previous=value, previous_at=at, by_person=True, reanchors=state.reanchors)


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
        weak = [i for i, w in enumerate(wheels) if w.confidence < rules.change_confidence]
        if weak:
            low = ", ".join(f"{i + 1} ({wheels[i].confidence:.2f})" for i in weak)
            text = (f"low_confidence: no previous value, and wheel{'s' if len(weak) > 1 else ''} {low} "
                    f"(from the left) under {rules.change_confidence:.2f}")
            return _second_frame(state, obs, rules, v, [("low_confidence", text)], decision, primary)
        new = state.accept(v, obs.taken_at)
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

    fitting = [c for c in cands if fits(value_of(c))]
    values = sorted({value_of(c) for c in fitting})
    primary_fits = primary is not None and fits(value_of(primary))
    shown = ", ".join(fmt(v) for v in values[:4]) + (", ..." if len(values) > 4 else "")
    chosen: Candidate | None = None
    if values and values[-1] <= prev + rules.hysteresis:
        # every reading that fits leaves the accepted value where it is (unchanged or jitter)
        chosen = primary if primary_fits else max(fitting, key=value_of)
    elif primary_fits and len(values) == 1:
        chosen = primary
    elif primary is None:
        if len(values) == 1 and not fitting[0].alternative:
            chosen = fitting[0]
        else:
            why = (f"more than {MAX_UNREADABLE} wheels" if not cands else
                   f"no digit fits the previous {fmt(prev)}" if not values else
                   f"{len(values)} values fit the previous {fmt(prev)}: {shown}")
            return decision("suspect", None, f"unreadable: {unreadable_text()}; {why}", "unreadable", None), state
    elif values:
        reason = (f"ambiguous: the wheels read {raw} but wheels on a digit boundary also allow {shown}, "
                  f"and more than one of them fits the previous {fmt(prev)}" if primary_fits else
                  f"ambiguous: the wheels read {raw}, which does not fit the previous {fmt(prev)}; only a "
                  f"second-best reading of a wheel on a digit boundary does ({shown}): not evidence enough")
        return decision("suspect", None, reason, "ambiguous", None), state

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
        new = state.accept(prev, obs.taken_at)
        return decision("ok", prev, None, "unchanged" if v == prev else "jitter_hold", chosen), new

    # 6. more evidence for a change: a wheel that changes the value read with little confidence, or a large
    #    rise that moves a wheel above the lowest, needs a second frame that agrees (a wheel that agrees with
    #    the previous value needs no more than the model's own threshold)
    before, after = fmt(prev).replace(".", "").zfill(n)[-n:], fmt(v).replace(".", "")
    weak = [i for i, (a, b) in enumerate(zip(before, after, strict=True))
            if a != b and chosen.hows[i] != "filled" and wheels[i].confidence < rules.change_confidence]
    rise = v - prev
    top = _highest_changed(fmt(prev), fmt(v))
    waits: list[tuple[str, str]] = []
    if weak:
        low = ", ".join(f"{i + 1} ({before[i]} -> {after[i]}, {wheels[i].confidence:.2f})" for i in weak)
        waits.append(("low_confidence", f"low_confidence: wheel{'s' if len(weak) > 1 else ''} {low} (from the left) "
                                        f"change the value with confidence under {rules.change_confidence:.2f}"))
    ordinary = Decimal(str(round(rules.confirm_change_m3 * max(hours or 0.0, 1.0), 6)))
    if rise > ordinary and top > 0:
        waits.append(("unconfirmed_change", f"unconfirmed_change: {_fmt_m3(rise)} m3 since the accepted {fmt(prev)} "
                                            f"moves wheel {n - top} (from the left), more than the "
                                            f"{rules.confirm_change_m3:g} m3 an hour of ordinary use"))
    if waits:
        return _second_frame(state, obs, rules, v, waits, decision, chosen)
    new = state.accept(v, obs.taken_at)
    return decision("ok", v, None, rule, chosen), new


def _second_frame(state: ReadingState, obs: Observation, rules: Rules, v: Decimal, waits: list[tuple[str, str]],
                  decision: Callable[[str, Decimal | None, str | None, str, Candidate | None], Decision],
                  chosen: Candidate) -> tuple[Decision, ReadingState]:
    """Accept ``v`` if the frame before was held for the same kind of doubt and agrees; else hold this one."""
    if state.pending is not None and _agree(state.pending, v, obs.taken_at, rules):
        return decision("ok", v, None, "confirmed", chosen), state.accept(v, obs.taken_at)
    code = waits[0][0]
    reason = "; ".join(text for _, text in waits) + "; waiting for a second frame that agrees"
    if state.previous is not None:
        reason += f" (the accepted value stays {rules.format(state.previous, len(chosen.digits))})"
    return decision("suspect", v, reason, code, chosen), replace(state, pending=Refusal(v, obs.taken_at, code))


def _refuse(state: ReadingState, obs: Observation, rules: Rules, v: Decimal, code: str, text: str,
            decision: Callable[[str, Decimal | None, str | None, str, Candidate | None], Decision],
            primary: Candidate, fmt: Callable[[Decimal], str]) -> tuple[Decision, ReadingState]:
    """Count a refusal; after ``confirm_after`` that agree, re-anchor by itself or ask for an installer.

    The frames agree with each other on a course the accepted value does not fit. If that course goes
    forward from the accepted value (refused as too fast), or from the value accepted *before* it (the
    accepted one was a misread the frames now outvote), the device takes the latest frame's value as its
    accepted value (``reanchored``, counted for telemetry). A course below both, or below a person's value,
    is the meter itself changing (replaced, reset, wrapped) or a wrong set-value: ``needs_confirmation``.
    """
    last = state.refusals[-1] if state.refusals else None
    if last is not None and _agree(last, v, obs.taken_at, rules):
        run = (*state.refusals, Refusal(v, obs.taken_at, code))[-rules.confirm_after:]
        count = state.refused_run + 1
    else:
        run = (Refusal(v, obs.taken_at, code),)
        count = 1
    new = replace(state, refusals=run, refused_run=count, pending=None)
    if count < rules.confirm_after:
        return decision("suspect", v, text, code, primary), new
    assert state.previous is not None
    prev = state.previous
    first = run[0]
    fits_before = False
    if state.before is not None and state.before_at is not None:
        fits_before = _agree(Refusal(state.before, state.before_at, "before"), first.value, first.at, rules)
    forward = first.value > prev
    if forward or (not state.by_person and (state.before is None or fits_before)):
        why = ("goes forward from it faster than the maximum rate allowed frame by frame" if forward else
               f"fits the value accepted before it, {fmt(state.before)}" if state.before is not None else
               "and nothing before it vouched for it")
        reason = (f"reanchored: {count} frames in a row agree on a course up to {fmt(v)} that the accepted "
                  f"{fmt(prev)} does not fit ({text}); the course {why}, so the device now compares with "
                  f"{fmt(v)}")
        anchored = ReadingState(previous=v, previous_at=obs.taken_at, before=state.before, before_at=state.before_at,
                                reanchors=state.reanchors + 1)
        return decision("suspect", v, reason, "reanchored", primary), anchored
    whose = "a person's value" if state.by_person else f"the value before it, {fmt(state.before)}" \
        if state.before is not None else "it"
    reason = (f"needs_confirmation: {count} frames in a row agree on about {fmt(v)} but each is refused "
              f"({text}), and they fall below {whose}: the meter was replaced, reset or wrapped past its top, "
              f"or the accepted value is wrong; an installer must check the meter and confirm its value "
              f"(cmd/set-value)")
    return decision("suspect", v, reason, "needs_confirmation", primary), new
