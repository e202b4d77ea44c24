"""Table-driven tests of the pure reading rules: wheels, plausibility, refusals, confirmation."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from edge.reading.assemble import assemble, confirm
from edge.reading.model import Observation, ReadingState, WheelInput
from edge.reading.rules import Rules, parse_value
from meter_vision.wheels import carry_band, primary

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
RULES = Rules(decimals=3, max_rate_m3_per_h=3.0)


def odometer(value: float, wheels: int = 8, decimals: int = 3) -> list[float]:
    """Wheel positions (left to right) of a pinion odometer at `value`: a wheel moves while the one below
    goes from 9 to 10."""
    units = round(value * 10**decimals, 6)  # no float noise: 171.46 * 1000 is 171459.99999999997
    pos = [units % 10.0]
    for k in range(1, wheels):
        digit = math.floor(units / 10**k + 1e-9) % 10
        pos.append(digit + max(0.0, pos[-1] - 9.0))
    return pos[::-1]


def obs(positions: list[float], at: datetime = T0, conf: float = 0.95,
        low: dict[int, float] | None = None, digits: dict[int, int | None] | None = None) -> Observation:
    """An observation from wheel positions; `low` sets a wheel's confidence (< 0.3 -> N), `digits` overrides."""
    wheels = []
    for i, p in enumerate(positions):
        p = round(p % 10.0, 1) % 10.0
        c = (low or {}).get(i, conf)
        d: int | None = math.floor(p) if c >= 0.3 else None
        if digits and i in digits:
            d = digits[i]
        wheels.append(WheelInput(d, p, c))
    return Observation(tuple(wheels), at)


def state(prev: str | None, at: datetime = T0 - timedelta(hours=1)) -> ReadingState:
    return ReadingState(previous=None if prev is None else Decimal(prev), previous_at=at if prev else None)


# ---------------------------------------------------------------- rolling wheels
@pytest.mark.parametrize(("positions", "expected"), [
    ([2.6, 9.7], (2, 9)),            # the brief's example: 2.6 above 9.7 reads 2 ...
    ([2.6, 0.1], (3, 0)),            # ... and above 0.1 reads 3
    ([2.9, 9.9], (2, 9)),
    ([3.0, 9.9], (2, 9)),            # the model already sees a 3 but the carry is not done
    ([2.95, 0.0], (3, 0)),           # carry done, wheel not quite settled
    ([2.0, 5.0], (2, 5)),
    ([1.9, 3.0], (2, 3)),            # a wheel read a bit low, far from any carry
    ([0.1, 9.95], (9, 9)),           # a 9 rolling to 0 over a lower 9.95 reads 9
    ([9.9, 0.05], (0, 0)),           # a 0 just arrived
    ([0.0, 1.0, 2.9, 9.9, 9.9], (0, 1, 2, 9, 9)),   # 0129.99 mid-carry through three wheels
    ([0.0, 1.0, 3.0, 9.95, 9.95], (0, 1, 2, 9, 9)),  # same, higher wheels a bit ahead
    ([0.0, 1.0, 3.0, 0.0, 0.0], (0, 1, 3, 0, 0)),   # 0130.00
    ([0.0, 1.0, 2.9, 9.9, 0.0], (0, 1, 3, 0, 0)),   # lower wheels done, upper ones lagging
    ([9.9, 9.9, 9.9, 9.9], (9, 9, 9, 9)),
])
def test_rolling_wheels_resolved_from_lower_positions(positions: list[float], expected: tuple[int, ...]) -> None:
    assert primary(positions) == expected


def test_carry_band_spans_early_and_late_pinions() -> None:
    assert carry_band(5.0) == (0.0, 0.0)
    lo, hi = carry_band(9.7)
    assert lo == pytest.approx(0.4) and hi == pytest.approx(0.8)
    assert carry_band(0.1) == (0.0, 0.0)


@pytest.mark.parametrize("value", [129.99, 129.995, 129.999, 130.0, 99.999, 100.0, 9.9993, 10.0, 123.456, 0.0])
def test_odometer_positions_resolve_to_the_displayed_value(value: float) -> None:
    pos = odometer(value, wheels=6, decimals=2)
    digits = primary([round(p, 1) % 10.0 for p in pos])
    assert int("".join(map(str, digits))) == math.floor(value * 100 + 1e-9)


# ---------------------------------------------------------------- one frame against the previous value
@pytest.mark.parametrize(("prev", "hours", "value", "status", "rule", "published"), [
    (None, 1, 123.456, "ok", "first", "00123.456"),
    ("123.456", 1, 123.456, "ok", "unchanged", "00123.456"),
    ("123.456", 1, 123.470, "ok", "increase", "00123.470"),
    ("123.456", 1, 123.455, "ok", "jitter_hold", "00123.456"),       # jitter is not an error
    ("123.456", 1, 123.454, "suspect", "decrease", "00123.454"),     # 2 steps: refused
    ("123.456", 1, 123.000, "suspect", "decrease", "00123.000"),
    ("123.456", 1, 127.456, "suspect", "rate_too_high", "00127.456"),  # 4 m3 in 1 h > 3
    ("123.456", 2, 127.456, "suspect", "unconfirmed_change", "00127.456"),  # fits 2 h, high wheels: 2 frames
    ("123.456", 1, 123.536, "ok", "increase", "00123.536"),            # 80 L: one frame is enough
    # issue 13 changed these: ordinary use (up to confirm_change_m3 = 0.35 m3 an hour) is not held
    ("123.456", 1, 123.556, "ok", "increase", "00123.556"),            # 100 L moves the 0.1 wheel: ordinary
    ("123.456", 1, 123.756, "ok", "increase", "00123.756"),            # 300 L in an hour: ordinary
    ("123.456", 1, 123.856, "suspect", "unconfirmed_change", "00123.856"),  # 400 L in an hour: 2 frames
    ("123.456", 3, 123.856, "ok", "increase", "00123.856"),            # the same over 3 hours: ordinary
    ("123.456", 0, 123.457, "ok", "increase", "00123.457"),            # one step of slack at dt=0
    ("123.456", 0, 123.460, "suspect", "rate_too_high", "00123.460"),
])
def test_one_frame(prev: str | None, hours: float, value: float, status: str, rule: str, published: str) -> None:
    at = T0 + timedelta(hours=hours)
    d, new = assemble(state(prev, T0), obs(odometer(value), at), RULES)
    assert (d.status, d.rule, d.value) == (status, rule, published)
    assert (d.reason is None) == (status == "ok")
    if d.reason:
        assert d.reason.startswith(rule + ":")
    if status == "ok":
        assert new.previous == Decimal(published) and new.previous_at == at
    else:
        assert new.previous == (None if prev is None else Decimal(prev))


def test_failed_frame_is_an_error_and_keeps_the_state() -> None:
    s = state("123.456")
    o = Observation((), T0, failure="alignment failed: 4 of 40 features matched")
    d, new = assemble(s, o, RULES)
    assert (d.status, d.value, d.rule) == ("error", None, "frame_failed")
    assert d.reason == "frame_failed: alignment failed: 4 of 40 features matched"
    assert new == s


# ---------------------------------------------------------------- unreadable wheels
@pytest.mark.parametrize(("prev", "value", "low_wheel", "status", "rule", "published"), [
    ("123.456", 123.470, 2, "ok", "filled", "00123.470"),        # the hundreds wheel can only be 1
    ("123.456", 123.470, 3, "ok", "filled", "00123.470"),        # the tens wheel: only 2 fits 3 m3/h
    ("123.456", 123.470, 4, "suspect", "unreadable", None),      # the units wheel: 3, 4 and 5 fit 3 m3/h
    ("123.456", 123.470, 7, "suspect", "unreadable", None),      # lowest wheel: 0..9 all fit
    ("123.456", 123.470, 6, "suspect", "unreadable", None),      # 10 L wheel: several fit in an hour
    (None, 123.470, 3, "suspect", "unreadable", None),           # nothing to fill it from
])
def test_unreadable_wheel_filled_only_when_one_answer(prev: str | None, value: float, low_wheel: int,
                                                       status: str, rule: str, published: str | None) -> None:
    d, _ = assemble(state(prev), obs(odometer(value), T0, low={low_wheel: 0.1}), RULES)
    assert (d.status, d.rule, d.value) == (status, rule, published)
    if status != "ok":
        assert d.reason and d.reason.startswith("unreadable:") and f"wheel {low_wheel + 1} " in d.reason
    assert d.wheels[low_wheel].digit is None


def test_threshold_from_config_makes_a_wheel_unreadable() -> None:
    rules = Rules(decimals=3, confidence_threshold=0.9)
    d, _ = assemble(state(None), obs(odometer(123.456), low={7: 0.8}), rules)
    assert d.status == "suspect" and "under the confidence threshold 0.90" in (d.reason or "")


# ---------------------------------------------------------------- 1/7 and 6/8 confusions on a high digit
@pytest.mark.parametrize(("true", "misread_wheel", "misread_digit"), [
    (121.456, 4, 7),     # units 1 -> 7: +6 m3 in an hour
    (126.456, 4, 8),     # units 6 -> 8: +2 m3, under the max rate, but it moves a high wheel
    (171.456, 3, 1),     # tens 7 -> 1: a fall
    (128.456, 4, 6),     # units 8 -> 6: a fall
    (123.156, 5, 7),     # tenths 1 -> 7: +0.6 m3
])
def test_confusion_on_a_high_digit_is_never_ok(true: float, misread_wheel: int, misread_digit: int) -> None:
    pos = odometer(true)
    pos[misread_wheel] = float(misread_digit)
    s = state(f"{true:.3f}")
    d, new = assemble(s, obs(pos, T0), RULES)
    assert d.status == "suspect", d
    assert new.previous == s.previous
    # the next frame reads right and is ok again
    d2, _ = assemble(new, obs(odometer(true + 0.004), T0 + timedelta(hours=1)), RULES)
    assert (d2.status, d2.value) == ("ok", f"{true + 0.004:09.3f}")


def test_a_confusion_within_ordinary_use_is_ok_on_the_device_and_outvoted_by_settlement() -> None:
    """Tenths 6 -> 8 (+0.2 m3 in an hour) looks like ordinary use to one frame (issue 13 stopped holding
    ordinary use, which held most true frames). The frames after it are lower: settlement, which sees them,
    makes it an outlier, and the device re-anchors if it must."""
    from contract.settlement import Observation as SObs
    from contract.settlement import settle

    truth = [123.640, 123.648, 123.656, 123.660, 123.671, 123.690]
    s = state("123.632", T0)
    decisions = []
    for i, v in enumerate(truth):
        pos = odometer(v)
        if i == 2:
            pos[5] = 8.0
        d, s = assemble(s, obs(pos, T0 + timedelta(hours=i + 1)), RULES)
        decisions.append(d)
    assert decisions[2].status == "ok" and decisions[2].value == "00123.856"
    settled = settle([SObs(i, T0 + timedelta(hours=i + 1), Decimal(d.value) if d.value else None, d.status,
                           decimals=3) for i, d in enumerate(decisions)], max_rate_m3_per_h=Decimal(3))
    assert settled[2].state == "outlier" and settled[2].code == "higher_than_later"
    assert [r.state for r in settled[1:2] + settled[3:4]] == ["settled", "settled"]


# ---------------------------------------------------------------- sequences (golden vectors)
def run(values: list[float | None], start: str | None, rules: Rules = RULES, step_h: float = 1.0,
        prepared: list[Observation] | None = None) -> list[tuple[str, str | None, str]]:
    s = state(start, T0)
    out = []
    frames = prepared or [obs(odometer(v) if v is not None else [0.0] * 8, T0 + timedelta(hours=step_h * (i + 1)))
                          for i, v in enumerate(values)]
    for o in frames:
        d, s = assemble(s, o, rules)
        out.append((d.status, d.value, d.rule))
    return out


def test_99_99_to_100_00_with_wheels_mid_roll() -> None:
    rules = Rules(decimals=2, max_rate_m3_per_h=3.0)
    values = [99.95, 99.97, 99.985, 99.993, 99.997, 99.9993, 100.0, 100.004, 100.01]
    frames = [obs(odometer(v, wheels=7, decimals=2), T0 + timedelta(minutes=10 * (i + 1)))
              for i, v in enumerate(values)]
    got = run([], "99.94", rules, prepared=frames)
    expect = ["00099.95", "00099.97", "00099.98", "00099.99", "00099.99", "00099.99", "00100.00", "00100.00",
              "00100.01"]
    assert [g[1] for g in got] == expect
    assert all(g[0] == "ok" for g in got), got


def test_one_outlier_then_recovery() -> None:
    pos = odometer(123.470)
    pos[2] = 7.0  # a 1 read as 7 on the hundreds wheel
    frames = [obs(odometer(123.460), T0 + timedelta(hours=1)),
              obs(pos, T0 + timedelta(hours=2)),
              obs(odometer(123.480), T0 + timedelta(hours=3)),
              obs(odometer(123.490), T0 + timedelta(hours=4))]
    got = run([], "123.456", prepared=frames)
    assert got == [("ok", "00123.460", "increase"), ("suspect", "00723.470", "rate_too_high"),
                   ("ok", "00123.480", "increase"), ("ok", "00123.490", "increase")]


def test_a_week_of_jitter_on_the_last_digit() -> None:
    """A meter standing still at a lowest wheel caught between 6 and 7: the model reads 6.9 or 7.0."""
    import random
    rnd = random.Random(7)
    s = state("123.456", T0)
    published = []
    for i in range(7 * 24):
        pos = odometer(123.4569)
        pos[-1] = rnd.choice([6.9, 7.0, 6.95, 7.05])
        d, s = assemble(s, obs(pos, T0 + timedelta(hours=i + 1)), RULES)
        assert d.status == "ok", d
        published.append(Decimal(d.value or "0"))
    assert all(b >= a for a, b in itertools.pairwise(published))
    assert set(published) <= {Decimal("123.456"), Decimal("123.457")}


def test_decrease_by_one_step_on_the_lowest_wheel_is_jitter() -> None:
    got = run([123.455, 123.456, 123.455], "123.456")
    assert got == [("ok", "00123.456", "jitter_hold"), ("ok", "00123.456", "unchanged"),
                   ("ok", "00123.456", "jitter_hold")]


def test_large_rise_confirmed_by_a_second_frame() -> None:
    got = run([124.456, 124.460, 124.470], "123.456")
    assert got == [("suspect", "00124.456", "unconfirmed_change"), ("ok", "00124.460", "confirmed"),
                   ("ok", "00124.470", "increase")]


def test_ordinary_use_hour_after_hour_is_ok_every_frame() -> None:
    """Issue 13: 0.1-0.3 m3 between hourly frames waited for a second frame that seldom agreed."""
    got = run([123.556, 123.806, 123.956, 124.206, 124.306], "123.456")
    assert [g[0] for g in got] == ["ok"] * 5, got


def test_large_rise_not_confirmed_is_dropped() -> None:
    pos = odometer(123.460)
    pos[5] = 8.0  # tenths 4 read as 8
    frames = [obs(pos, T0 + timedelta(hours=1)), obs(odometer(123.461), T0 + timedelta(hours=2))]
    got = run([], "123.456", prepared=frames)
    assert got == [("suspect", "00123.860", "unconfirmed_change"), ("ok", "00123.461", "increase")]


# ---------------------------------------------------------------- never stuck
def test_agreeing_refusals_ask_for_an_installer_then_confirm_clears() -> None:
    """The accepted value is a person's and 5 m3 too high (an installer typo): every frame is a decrease.
    The device never moves a person's value down by itself (issue 13 kept this for a person's value only)."""
    s = confirm(ReadingState(), Decimal("128.456"), T0)
    rules = Rules(decimals=3, confirm_after=3)
    rules_seen = []
    for i in range(5):
        d, s = assemble(s, obs(odometer(123.456 + 0.001 * i), T0 + timedelta(hours=i + 1)), rules)
        rules_seen.append(d.rule)
        assert d.status == "suspect" and s.previous == Decimal("128.456")
    assert rules_seen == ["decrease", "decrease", "needs_confirmation", "needs_confirmation", "needs_confirmation"]
    assert "cmd/set-value" in (d.reason or "") and "5 frames" in (d.reason or "")
    s = confirm(s, Decimal("123.460"), T0 + timedelta(hours=5, minutes=30))
    d, s = assemble(s, obs(odometer(123.461), T0 + timedelta(hours=6)), rules)
    assert (d.status, d.value, s.refusals) == ("ok", "00123.461", ())


def test_a_misread_the_device_accepted_is_outvoted_and_the_device_reanchors() -> None:
    """Issue 13: 00160.37 read as 00160.87 was accepted, and every true frame after it refused as a decrease
    for days. Now three agreeing frames that fit the value accepted before the misread re-anchor the device.
    (Here a 5 read as 8 on the tenths wheel, +0.30 m3: within ordinary use, so accepted from one frame.)"""
    rules = Rules(decimals=2, confirm_after=3)
    s = confirm(ReadingState(), Decimal("160.44"), T0)
    truth = [160.50, 160.52, 160.55, 160.58, 160.61, 160.64, 160.70]
    out = []
    for i, v in enumerate(truth):
        pos = odometer(v, wheels=7, decimals=2)
        if i == 1:
            pos[5] = 8.0
        d, s = assemble(s, obs(pos, T0 + timedelta(hours=i + 1)), rules)
        out.append((d.status, d.value, d.rule))
    assert out == [("ok", "00160.50", "increase"), ("ok", "00160.82", "increase"),
                   ("suspect", "00160.55", "decrease"), ("suspect", "00160.58", "decrease"),
                   ("suspect", "00160.61", "reanchored"), ("ok", "00160.64", "increase"),
                   ("ok", "00160.70", "increase")]
    assert s.previous == Decimal("160.70") and s.reanchors == 1
    assert ReadingState.from_dict(s.to_dict()) == s


def test_a_fall_below_the_value_before_is_a_changed_meter_not_a_reanchor() -> None:
    s = ReadingState(previous=Decimal("1234.567"), previous_at=T0, before=Decimal("1234.500"),
                     before_at=T0 - timedelta(hours=1))
    rules = Rules(decimals=3, confirm_after=3)
    seen = []
    for i in range(4):
        d, s = assemble(s, obs(odometer(0.012 + 0.001 * i), T0 + timedelta(hours=i + 1)), rules)
        seen.append(d.rule)
    assert seen == ["decrease", "decrease", "needs_confirmation", "needs_confirmation"]
    assert "replaced, reset or wrapped" in (d.reason or "") and s.previous == Decimal("1234.567")


def test_a_rise_refused_as_too_fast_that_frames_keep_reanchors() -> None:
    """The device's value is a day old and low (it was offline, then a wrong first read): the frames go
    forward, agree with each other, and the device takes them rather than waiting for the rate to allow."""
    s = ReadingState(previous=Decimal("100.000"), previous_at=T0)
    rules = Rules(decimals=3, confirm_after=3)
    seen = []
    for i in range(4):
        d, s = assemble(s, obs(odometer(150.0 + 0.01 * i), T0 + timedelta(hours=1 + i)), rules)
        seen.append(d.rule)
    assert seen == ["rate_too_high", "rate_too_high", "reanchored", "increase"]


def test_disagreeing_refusals_do_not_ask_for_an_installer() -> None:
    s = state("123.456", T0)
    for i, v in enumerate([173.456, 120.111, 623.456, 100.0]):
        d, s = assemble(s, obs(odometer(v), T0 + timedelta(hours=i + 1)), RULES)
        assert d.rule in ("rate_too_high", "decrease")
    assert s.refused_run == 1


def test_rate_refusal_heals_itself_as_time_passes() -> None:
    """A real rise refused as too fast at first is accepted once enough time has passed: no loop."""
    s = state("123.456", T0)
    out = []
    for h in (1, 2, 3):
        d, s = assemble(s, obs(odometer(130.0), T0 + timedelta(hours=h)), Rules(decimals=3, confirm_after=5))
        out.append(d.rule)
    assert out == ["rate_too_high", "rate_too_high", "unconfirmed_change"]
    d, s = assemble(s, obs(odometer(130.001), T0 + timedelta(hours=4)), RULES)
    assert (d.status, d.rule) == ("ok", "confirmed")


def test_state_round_trips_through_a_dict() -> None:
    s = state("123.456", T0)
    for i, v in enumerate([100.0, 100.001, 123.756]):
        _, s = assemble(s, obs(odometer(v), T0 + timedelta(hours=i + 1)), RULES)
    assert ReadingState.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(("value", "wheels", "decimals", "text"), [
    ("123.456", 8, 3, "00123.456"), ("530.07077", 5, 0, "00530"), ("0", 6, 2, "0000.00"), ("99.999", 5, 3, "99.999"),
])
def test_format(value: str, wheels: int, decimals: int, text: str) -> None:
    assert Rules(decimals=decimals).format(parse_value(value), wheels) == text


@pytest.mark.parametrize("bad", ["abc", "-1", "nan", ""])
def test_parse_value_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_value(bad)


# ---------------------------------------------------------------- evidence for a change
def test_low_confidence_change_waits_for_a_second_frame() -> None:
    """A wheel that changes the value with little confidence is held once, then confirmed: never stuck."""
    s = state("124.998", T0)
    out = []
    for i, v in enumerate([125.040, 125.075, 125.085]):
        d, s = assemble(s, obs(odometer(v), T0 + timedelta(hours=i + 1), low={4: 0.58}), RULES)
        out.append((d.status, d.value, d.rule))
    assert out == [("suspect", "00125.040", "low_confidence"), ("ok", "00125.075", "confirmed"),
                   ("ok", "00125.085", "increase")]  # the units wheel no longer changes: its 0.58 is enough


def test_low_confidence_misread_is_not_confirmed_by_a_lower_frame() -> None:
    pos = odometer(125.121)
    pos[7] = 7.0  # lowest wheel 1 read as 7, unsure
    frames = [obs(pos, T0 + timedelta(hours=1), low={7: 0.48}), obs(odometer(125.123), T0 + timedelta(hours=2))]
    got = run([], "125.120", prepared=frames)
    assert got == [("suspect", "00125.127", "low_confidence"), ("ok", "00125.123", "increase")]


def test_first_reading_with_a_weak_wheel_needs_two_frames() -> None:
    frames = [obs(odometer(123.456), T0, low={3: 0.6}), obs(odometer(123.457), T0 + timedelta(hours=1), low={3: 0.6})]
    got = run([], None, prepared=frames)
    assert got == [("suspect", "00123.456", "low_confidence"), ("ok", "00123.457", "confirmed")]


def test_second_best_reading_that_changes_the_value_is_not_taken() -> None:
    """Lowest wheel misread (3 -> 9.6) drags the wheel above onto a boundary; its neighbour would fit."""
    pos = odometer(123.6936)
    pos[6], pos[7] = 8.9, 9.6
    d, s = assemble(state("123.693", T0), obs(pos, T0 + timedelta(hours=1)), RULES)
    assert (d.status, d.rule) == ("suspect", "ambiguous") and s.previous == Decimal("123.693")
