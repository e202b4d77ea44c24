"""Periods, windows and time zones (pure), backoff and Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from cloud_bridge.delivery import RetryPolicy
from cloud_bridge.gateways.http import parse_retry_after
from cloud_bridge.submission.periods import Period, WindowRule, parse_instant

MSK = WindowRule()  # 15th → 3rd, Europe/Moscow (UTC+3, no DST)


def utc(text: str) -> datetime:
    return parse_instant(text)


@pytest.mark.parametrize(("instant", "period"), [
    ("2026-10-31T20:59:59Z", "2026-10"),  # 23:59:59 in Moscow
    ("2026-10-31T21:00:00Z", "2026-11"),  # midnight in Moscow: already November there
    ("2026-12-31T21:00:00Z", "2027-01"),
    ("2026-11-30T12:00:00+03:00", "2026-11"),
])
def test_period_is_the_month_in_the_utilities_zone(instant: str, period: str) -> None:
    assert str(Period.of(utc(instant), MSK.tz)) == period


def test_window_bounds_default() -> None:
    opens, closes = MSK.window(Period.parse("2026-11"))
    assert opens == utc("2026-11-14T21:00:00Z")  # 15 Nov 00:00 MSK
    assert closes == utc("2026-12-03T21:00:00Z")  # end of 3 Dec MSK


@pytest.mark.parametrize(("instant", "expected"), [
    ("2026-11-14T20:59:59Z", None),  # 14 Nov 23:59:59 MSK: before the window
    ("2026-11-14T21:00:00Z", "2026-11"),
    ("2026-11-30T23:00:00Z", "2026-11"),  # 1 Dec MSK: period December, window still November's
    ("2026-12-03T20:59:59Z", "2026-11"),  # 3 Dec 23:59:59 MSK
    ("2026-12-03T21:00:00Z", None),
    ("2026-12-15T00:00:00Z", "2026-12"),
])
def test_open_period(instant: str, expected: str | None) -> None:
    p = MSK.open_period(utc(instant))
    assert (str(p) if p else None) == expected


def test_same_month_window_and_clamped_days() -> None:
    rule = WindowRule(start_day=20, end_day=31, timezone="UTC")
    opens, closes = rule.window(Period.parse("2026-02"))
    assert opens == utc("2026-02-20T00:00:00Z") and closes == utc("2026-03-01T00:00:00Z")
    assert rule.open_period(utc("2026-02-28T23:59:00Z")) == Period(2026, 2)
    assert rule.open_period(utc("2026-03-01T00:00:00Z")) is None


def test_dst_zone_window_is_local_midnight() -> None:
    berlin = WindowRule(timezone="Europe/Berlin")
    opens, closes = berlin.window(Period.parse("2026-10"))
    assert opens == utc("2026-10-14T22:00:00Z")  # CEST, UTC+2
    assert closes == utc("2026-11-03T23:00:00Z")  # CET, UTC+1 after the clocks went back


@pytest.mark.parametrize("bad", ["2026-13", "26-11", "2026-1", ""])
def test_bad_period(bad: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        Period.parse(bad)


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        parse_instant("2026-11-24T10:00:00")


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=8.0)
    rng = random.Random(1)
    waits = [policy.delay(n, rng=rng) for n in range(1, 8)]
    for n, w in enumerate(waits, start=1):
        ceiling = min(8.0, 2 ** (n - 1))
        assert ceiling / 2 <= w <= ceiling
    assert policy.delay(1, retry_after=5, rng=rng) >= 5


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Tue, 24 Nov 2026 12:00:10 GMT", now) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
