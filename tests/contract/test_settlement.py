"""Golden tables and properties of settlement (contract/settlement.py): a reading is billable only when
the readings before and after it agree with it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.settlement import Digit, Observation, Settlement, digits_from_wire, plausible_range, settle

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
RATE = Decimal(3)


def wheels_of(text: str) -> tuple[Digit, ...]:
    """Digits of a pinion odometer showing ``text`` exactly (wheels at rest, read with confidence 0.95)."""
    return tuple(Digit(int(c), float(c), 0.95) for c in text.replace(".", ""))


def odometer(text: str, lowest_frac: float = 0.0) -> tuple[Digit, ...]:
    """Digits of an odometer at ``text`` with the lowest wheel ``lowest_frac`` past its digit: wheels above
    move while the wheel below rolls from 9 to 0 (a carry in progress)."""
    digits = [int(c) for c in text.replace(".", "")]
    pos = [digits[-1] + lowest_frac]
    for d in reversed(digits[:-1]):
        below = pos[-1]
        pos.append(d + max(0.0, below - 9.0))
    return tuple(Digit(d, round(p, 2), 0.95) for d, p in zip(digits, reversed(pos), strict=True))


def seq(values: Sequence[str | None], *, hours: Sequence[float] | None = None, status: dict[int, str] | None = None,
        decimals: int | None = None, trusted: Sequence[int] = (), digits: bool = True) -> list[Observation]:
    """Observations of hourly readings (keys 0, 1, ...) from the values as the meter shows them."""
    out = []
    for i, v in enumerate(values):
        at = T0 + timedelta(hours=hours[i] if hours is not None else i)
        dec = decimals if decimals is not None else (len(v.split(".")[1]) if v and "." in v else 0)
        out.append(Observation(
            key=i, taken_at=at, value=None if v is None else Decimal(v),
            status=(status or {}).get(i, "ok" if v is not None else "error"),
            digits=wheels_of(v) if (digits and v is not None) else (), decimals=dec, trusted=i in trusted))
    return out


def states(results: Sequence[Settlement]) -> list[str]:
    return [r.state if r.state != "settled" else "S" for r in results]


def codes(results: Sequence[Settlement]) -> list[str | None]:
    return [r.code for r in results]


def run(obs: list[Observation], **kw: object) -> list[Settlement]:
    return settle(obs, max_rate_m3_per_h=kw.pop("rate", RATE), **kw)  # type: ignore[arg-type]


def shown(value: Decimal, wheels: int = 8, decimals: int = 3) -> str:
    units = int(value.scaleb(decimals))
    text = str(units).zfill(wheels)
    return f"{text[:-decimals]}.{text[-decimals:]}"


# ------------------------------------------------------------------ lone misreads on every wheel
TRUTH = [Decimal("45454.542") + Decimal("0.001") * i for i in range(7)]


@pytest.mark.parametrize("wheel", range(8))
@pytest.mark.parametrize("kind", ["high", "low"])
def test_a_lone_misread_on_any_wheel_is_an_outlier_and_the_rest_settle(wheel: int, kind: str) -> None:
    values = [shown(v) for v in TRUTH]
    digits = list(values[3].replace(".", ""))
    digits[wheel] = "9" if kind == "high" else "0"
    text = "".join(digits)
    values[3] = f"{text[:5]}.{text[5:]}"
    res = run(seq(values))
    assert states(res) == ["pending", "S", "S", "outlier", "S", "pending", "pending"], [r.reason for r in res]
    assert codes(res)[0] == "first_reading" and codes(res)[5:] == ["awaiting_later", "awaiting_later"]
    reason = res[3].reason or ""
    expected = ("higher_than_later", "too_fast") if kind == "high" else ("lower_than_earlier", "too_fast")
    assert res[3].code in expected, reason
    assert f"wheel {wheel + 1} from the left reads {'9' if kind == 'high' else '0'}" in reason, reason
    # the settled ones say which readings vouched for them
    assert res[4].before == 2 and res[4].after == (5, 6)


@pytest.mark.parametrize(("before", "misread", "after"), [
    (["00160.21", "00160.29"], "00160.87", ["00160.44", "00160.52", "00160.60"]),   # true 00160.37
    (["00162.18", "00162.25"], "00162.82", ["00162.39", "00162.45", "00162.51"]),   # true 00162.32
    (["0998.95", "0998.95"], "0998.92", ["0998.95", "0998.96", "0998.96"]),         # true 0998.95
])
def test_the_three_misreads_of_the_issue_are_outliers(before: list[str], misread: str, after: list[str]) -> None:
    res = run(seq([*before, misread, *after]))
    assert res[2].state == "outlier", res[2].reason
    assert res[3].state == "settled" and res[1].state == "settled"
    if misread.endswith("87") or misread.endswith("82"):
        assert res[2].code == "higher_than_later"
        assert "wheel 6 from the left reads 8" in (res[2].reason or "")
    else:
        assert res[2].code == "lower_than_earlier"
        assert "wheel 6 from the left reads 2 where the readings around it show 5" in (res[2].reason or "")


def test_a_misread_the_device_accepted_does_not_stick_the_truth_it_refused_settles() -> None:
    # the device accepted 00160.87 and refused the true frames after it as a decrease (suspect with the value)
    values = ["00160.21", "00160.29", "00160.87", "00160.44", "00160.52", "00160.60", "00160.61"]
    res = run(seq(values, status={3: "suspect", 4: "suspect", 5: "suspect", 6: "suspect"}))
    assert states(res) == ["pending", "S", "outlier", "S", "S", "pending", "pending"]


def test_the_same_misread_twice_then_the_truth() -> None:
    values = ["00160.21", "00160.29", "00160.87", "00160.87", "00160.40", "00160.41", "00160.42"]
    # while only one true frame follows, the misreads are not settled
    early = run(seq(values[:5]))
    assert [r.state for r in early[2:4]] == ["pending", "pending"]
    res = run(seq(values))
    assert states(res) == ["pending", "S", "outlier", "outlier", "S", "pending", "pending"]
    assert res[2].code == res[3].code == "higher_than_later"


def test_a_carry_through_several_wheels_settles() -> None:
    values = ["0099.97", "0099.98", "0099.99", "0100.00", "0100.01", "0100.02", "0100.03"]
    obs = seq(values)
    # the wheels mid-roll at 0099.99 (the lowest at 9.6, the wheels above turning with it)
    obs[2] = Observation(2, obs[2].taken_at, obs[2].value, "ok", odometer("0099.99", 0.6), 2)
    res = run(obs)
    assert states(res) == ["pending", "S", "S", "S", "S", "pending", "pending"]


def test_a_wheel_that_does_not_fit_the_wheel_below_is_an_outlier() -> None:
    obs = seq(["0123.41", "0123.42", "0123.43", "0123.44", "0123.45", "0123.46"])
    # the units wheel stands half-way between 3 and 4 while the wheel below is at rest at 4
    d = list(wheels_of("0123.43"))
    d[3] = Digit(3, 3.5, 0.9)
    obs[2] = Observation(2, obs[2].taken_at, obs[2].value, "ok", tuple(d), 2)
    res = run(obs)
    assert res[2].state == "outlier" and res[2].code == "wheels_inconsistent", res[2].reason
    assert "wheel 4 (from the left)" in (res[2].reason or "")
    assert states(res)[3] == "S"


def test_the_counter_wrapping_past_99999_waits_for_a_person() -> None:
    values = ["99999.95", "99999.96", "99999.97", "99999.98", "99999.99"] + [f"00000.{i:02d}" for i in range(8)]
    res = run(seq(values))
    assert states(res)[:3] == ["pending", "S", "S"]
    assert all(r.state == "pending" and r.code == "meter_wrapped" for r in res[5:]), [r.reason for r in res[5:]]
    assert "passed 99999.99" in (res[6].reason or "") and "a person must confirm" in (res[6].reason or "")
    # before the wrap nothing was misjudged as an outlier
    assert not any(r.state == "outlier" for r in res)
    # a person confirms the new count: the readings after it settle
    obs = seq(values, trusted=[6])
    res = run(obs)
    assert res[6].state == "settled"
    assert [r.state for r in res[7:10]] == ["settled", "settled", "settled"]


def test_a_replaced_meter_waits_for_a_person_then_settles_from_their_value() -> None:
    old = [f"01234.{i:03d}" for i in range(500, 510)]
    new = [f"00000.{i:03d}" for i in range(12, 24)]
    res = run(seq(old + new))
    assert all(r.state == "settled" for r in res[1:8])
    after = res[len(old):]
    assert all(r.state == "pending" and r.code == "meter_changed" for r in after)
    assert "replaced" in (after[0].reason or "") and "a person must confirm" in (after[0].reason or "")
    # the installer's set-value (a trusted observation) at the new meter's fourth reading
    res = run(seq(old + new, trusted=[len(old) + 3]))
    assert res[len(old) + 3].state == "settled"
    assert all(r.state == "settled" for r in res[len(old) + 4:-2])


def test_a_week_offline_then_a_jump_within_the_rate_settles() -> None:
    values = ["00123.100", "00123.120", "00123.140", "00128.700", "00128.720", "00128.750", "00128.760"]
    hours = [0, 1, 2, 2 + 24 * 7, 3 + 24 * 7, 4 + 24 * 7, 5 + 24 * 7]
    res = run(seq(values, hours=hours))
    assert states(res) == ["pending", "S", "S", "S", "S", "pending", "pending"]
    # but the same jump an hour later, on a meter that turns at most 1 m3/h, is not settled
    res = run(seq(values, hours=list(range(7))), rate=Decimal(1))
    assert not any(r.state == "settled" for r in res[3:]), [r.reason for r in res]


def test_jitter_on_the_lowest_wheel_settles() -> None:
    values = ["00123.545", "00123.546", "00123.545", "00123.546", "00123.545", "00123.546", "00123.546", "00123.547"]
    res = run(seq(values))
    assert states(res) == ["pending", "S", "S", "S", "S", "S", "pending", "pending"]


def test_two_steps_back_is_not_jitter() -> None:
    values = ["00123.545", "00123.546", "00123.547", "00123.545", "00123.548", "00123.548", "00123.549"]
    res = run(seq(values))
    assert res[3].state == "outlier" and res[3].code == "lower_than_earlier"


def test_unreadable_frames_are_outliers_without_a_value_and_do_not_break_the_course() -> None:
    values = ["00123.545", None, "00123.546", None, "00123.547", "00123.548", "00123.549"]
    res = run(seq(values))
    assert res[1].code == res[3].code == "no_value"
    assert [res[i].state for i in (2, 4)] == ["settled", "settled"]


def test_suspect_only_is_never_settled() -> None:
    values = ["00123.545", "00123.546", "00123.547", "00123.548", "00123.549"]
    res = run(seq(values, status=dict.fromkeys(range(5), "suspect")))
    assert not any(r.state == "settled" for r in res)
    assert res[1].code == "suspect_only"


def test_a_person_value_is_an_anchor_and_settles_the_first_reading_after_it() -> None:
    values = ["00123.500", "00123.545", "00123.546", "00123.547"]
    res = run(seq(values, status={0: "corrected"}, trusted=[0]))
    assert states(res) == ["S", "S", "pending", "pending"]


def test_billing_value_is_an_anchor() -> None:
    values = ["00123.545", "00123.546", "00123.547", "00123.548"]
    res = run(seq(values), billed=Decimal("123.5"), billed_at=T0 - timedelta(days=20))
    assert states(res) == ["S", "S", "pending", "pending"]
    assert res[0].before is None


def test_an_absurd_billed_value_holds_everything_until_a_person_confirms() -> None:
    values = ["00123.545", "00123.546", "00123.547", "00123.548", "00123.549", "00123.550", "00123.551",
              "00123.552"]
    res = run(seq(values), billed=Decimal("999999999999"), billed_at=T0 - timedelta(days=20))
    assert all(r.state == "pending" and r.code == "meter_changed" for r in res), [r.reason for r in res]
    res = run(seq(values, status={2: "corrected"}, trusted=[2]), billed=Decimal("999999999999"),
              billed_at=T0 - timedelta(days=20))
    assert states(res)[2:6] == ["S", "S", "S", "S"]


def test_an_absurd_reading_among_good_ones_is_an_outlier() -> None:
    values = ["00123.545", "00123.546", "999999999999.000000", "00123.547", "00123.548", "00123.549"]
    obs = seq(values, digits=False)
    res = run(obs)
    assert res[2].state == "outlier" and res[2].code in ("too_fast", "higher_than_later")
    assert [r.state for r in res[3:4]] == ["settled"]


def test_results_come_back_in_the_order_given_even_when_times_are_not() -> None:
    obs = seq(["00123.545", "00123.546", "00123.547", "00123.548", "00123.549"])
    shuffled = [obs[3], obs[0], obs[4], obs[2], obs[1]]
    res = run(shuffled)
    assert [r.key for r in res] == [3, 0, 4, 2, 1]
    assert [r.state for r in res] == ["pending", "pending", "pending", "settled", "settled"]


def test_more_later_readings_can_be_asked_for() -> None:
    values = [f"00123.{i:03d}" for i in range(545, 552)]
    res = run(seq(values), min_after=4)
    assert states(res) == ["pending", "S", "S", "pending", "pending", "pending", "pending"]


def test_observations_refuse_what_is_not_a_reading() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Observation(1, datetime(2026, 1, 1), Decimal(1), "ok")
    with pytest.raises(ValueError, match="meter value"):
        Observation(1, T0, Decimal(-1), "ok")
    with pytest.raises(ValueError, match="needs a value"):
        Observation(1, T0, None, "corrected", trusted=True)
    with pytest.raises(ValueError, match="max_rate"):
        settle([], max_rate_m3_per_h=Decimal(0))


def test_digits_from_wire() -> None:
    assert digits_from_wire([{"v": 3, "f": 3.2, "p": 0.9}, {"v": "N", "f": None, "p": 0.1}]) == (
        Digit(3, 3.2, 0.9), Digit(None, None, 0.1))
    assert digits_from_wire([object()]) == (Digit(None, None, 0.0),)
    assert digits_from_wire(5) == ()  # type: ignore[arg-type]


# ------------------------------------------------------------------ plausible range of a person's value
def test_a_correction_far_above_the_neighbours_is_out_of_range() -> None:
    values = ["00123.600", "00123.650", "00123.693", "00123.700", "00123.720", "00123.730"]
    obs = seq(values)
    at = obs[2].taken_at + timedelta(minutes=30)
    low, high = plausible_range(obs, at, max_rate_m3_per_h=RATE)
    assert low is not None and high is not None
    assert low == Decimal("123.692")  # the settled 00123.693 before it, less one step of jitter
    assert high == Decimal("123.701")  # the settled 00123.700 after it, plus one step
    assert not low <= Decimal("99999999") <= high


def test_a_correction_after_the_last_reading_is_bounded_by_the_rate() -> None:
    values = ["00123.600", "00123.650", "00123.693", "00123.700", "00123.720"]
    obs = seq(values)
    at = obs[-1].taken_at + timedelta(hours=2)
    low, high = plausible_range(obs, at, max_rate_m3_per_h=RATE)
    # the latest settled is 00123.693 (four hours before `at`): 4 h at 3 m3/h, plus one step
    assert low == Decimal("123.692") and high == Decimal("123.693") + 4 * 3 + Decimal("0.001")


def test_a_correction_for_a_replaced_meter_is_measured_against_the_new_meter() -> None:
    old = [f"01234.{i:03d}" for i in range(500, 510)]
    new = [f"00000.{i:03d}" for i in range(12, 24)]
    obs = seq(old + new)
    at = obs[len(old) + 5].taken_at + timedelta(minutes=30)
    low, high = plausible_range(obs, at, max_rate_m3_per_h=RATE)
    assert low is not None and high is not None and low <= Decimal("0.0175") <= high
    assert high < Decimal(1)


def test_no_readings_no_bounds() -> None:
    assert plausible_range([], T0, max_rate_m3_per_h=RATE) == (None, None)


# ------------------------------------------------------------------ properties
times = st.integers(0, 24 * 90).map(lambda h: T0 + timedelta(minutes=h * 20))
wire_digits = st.lists(st.builds(Digit, v=st.none() | st.integers(0, 9),
                                 f=st.none() | st.floats(0, 9.99), p=st.floats(0, 1)), max_size=9)


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    decimals = draw(st.integers(0, 6))
    value = draw(st.none() | st.decimals(min_value=0, max_value=10**12, places=decimals, allow_nan=False,
                                         allow_infinity=False))
    trusted = value is not None and draw(st.booleans())
    return Observation(draw(st.integers()), draw(times), value,
                       draw(st.sampled_from(["ok", "suspect", "error", "corrected", "photo"])),
                       tuple(draw(wire_digits)), decimals, trusted)


@settings(max_examples=200, deadline=None)
@given(st.lists(observations(), max_size=40), st.integers(0, 4),
       st.none() | st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False, allow_infinity=False),
       st.none() | times, st.sampled_from([Decimal("0.5"), Decimal(3), Decimal(100)]))
def test_settle_never_raises_and_answers_each_observation_once(
        obs: list[Observation], min_after: int, billed: Decimal | None, billed_at: datetime | None,
        rate: Decimal) -> None:
    res = settle(obs, max_rate_m3_per_h=rate, min_after=min_after, billed=billed, billed_at=billed_at)
    assert [r.key for r in res] == [o.key for o in obs]
    for o, r in zip(obs, res, strict=True):
        assert r.state in ("settled", "outlier", "pending")
        assert (r.reason is None) == (r.state == "settled")
        if o.trusted:
            assert r.state == "settled"
        if o.value is None:
            assert r.state == "outlier"
    if obs:
        low, high = plausible_range(obs, obs[0].taken_at, max_rate_m3_per_h=rate)
        assert low is None or isinstance(low, Decimal)
        assert high is None or isinstance(high, Decimal)


@st.composite
def monotone(draw: st.DrawFn) -> list[Observation]:
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(st.floats(0.05, 200.0), min_size=n, max_size=n))
    units = draw(st.integers(0, 10**7))
    out = []
    t = T0
    for i in range(n):
        t = t + timedelta(hours=gaps[i])
        # a rise of at most the rate over the gap, in litres (3 decimals)
        units += draw(st.integers(0, math.floor(3000 * gaps[i])))
        value = Decimal(units).scaleb(-3)
        out.append(Observation(i, t, value, "ok", odometer(shown(value, 8, 3)) if units < 10**8 else (), 3))
    return out


@settings(max_examples=200, deadline=None)
@given(monotone(), st.integers(0, 3))
def test_a_forward_course_within_the_rate_settles_all_but_its_first_and_its_tail(
        obs: list[Observation], min_after: int) -> None:
    res = settle(obs, max_rate_m3_per_h=RATE, min_after=min_after)
    for i, r in enumerate(res):
        if i == 0:
            assert r.code == "first_reading"
        elif i >= len(obs) - min_after:
            assert r.code == "awaiting_later", r.reason
        else:
            assert r.state == "settled", r.reason


@settings(max_examples=200, deadline=None)
@given(monotone().filter(lambda o: len(o) >= 6), st.data())
def test_a_lone_spike_is_never_settled(obs: list[Observation], data: st.DataObject) -> None:
    """A reading above the two after it (or below the two before it) by two steps or more is never settled:
    taking it would cost more readings on the course than leaving it out. (Above only the next one, it
    is one reading against one: settlement cannot tell which of the two is the misread.)"""
    high = data.draw(st.booleans())
    i = data.draw(st.integers(1, len(obs) - 3) if high else st.integers(2, len(obs) - 3))
    around = [obs[i + 1].value, obs[i + 2].value] if high else [obs[i - 1].value, obs[i - 2].value]
    jump = Decimal(data.draw(st.integers(2, 10**6))).scaleb(-3)
    wrong = max(v for v in around if v is not None) + jump if high else min(v for v in around if v is not None) - jump
    if wrong < 0:
        return
    spiked = [*obs[:i], Observation(i, obs[i].taken_at, wrong, "ok", (), 3), *obs[i + 1:]]
    res = settle(spiked, max_rate_m3_per_h=RATE)
    assert res[i].state != "settled", res[i]
