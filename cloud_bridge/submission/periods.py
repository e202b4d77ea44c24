"""Billing periods and submission windows, in the utility's time zone.

A period is a calendar month in `window.timezone` (default Europe/Moscow): a reading belongs to the
month in which it was taken, local time. Period P's window opens on `start_day` of P at 00:00 local and
closes at the end (23:59:59.999…) of `end_day`: of the next month when end_day < start_day (the
default 15th → 3rd), else of P itself. A day past the month's end means its last day (31 → 30 Nov).
All instants handed in and out are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from contract.times import parse_utc, to_utc

_PERIOD_RE = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, order=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        m = _PERIOD_RE.match(text.strip())
        if not m:
            raise ValueError(f"a period is YYYY-MM, e.g. 2026-11 (got {text!r})")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, at: datetime, tz: ZoneInfo) -> Period:
        """The period an instant belongs to, in the utility's time zone."""
        local = _aware(at).astimezone(tz)
        return cls(local.year, local.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def local_day(self, day: int, tz: ZoneInfo) -> datetime:
        """00:00 local of `day` in this month (clamped to its last day), as UTC."""
        last = calendar.monthrange(self.year, self.month)[1]
        return datetime(self.year, self.month, min(day, last), tzinfo=tz).astimezone(UTC)

    def starts_at(self, tz: ZoneInfo) -> datetime:
        return self.local_day(1, tz)

    def ends_at(self, tz: ZoneInfo) -> datetime:
        """The first instant after the period (exclusive end)."""
        return self.next().starts_at(tz)


@dataclass(frozen=True)
class WindowRule:
    start_day: int = 15
    end_day: int = 3
    timezone: str = "Europe/Moscow"

    def __post_init__(self) -> None:
        for name in ("start_day", "end_day"):
            if not 1 <= getattr(self, name) <= 31:
                raise ValueError(f"window.{name} must be 1-31 (got {getattr(self, name)})")
        ZoneInfo(self.timezone)  # raises ZoneInfoNotFoundError for a bad name

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def window(self, period: Period) -> tuple[datetime, datetime]:
        """[opens, closes) of the period's submission window, UTC."""
        tz = self.tz
        opens = period.local_day(self.start_day, tz)
        end_month = period.next() if self.end_day < self.start_day else period
        last = calendar.monthrange(end_month.year, end_month.month)[1]
        closes_local = datetime(end_month.year, end_month.month, min(self.end_day, last), tzinfo=tz) + timedelta(days=1)
        closes = datetime(closes_local.year, closes_local.month, closes_local.day, tzinfo=tz).astimezone(UTC)
        return opens, closes

    def is_open(self, period: Period, at: datetime) -> bool:
        opens, closes = self.window(period)
        return opens <= _aware(at) < closes

    def open_period(self, at: datetime) -> Period | None:
        """The period whose window contains `at`, if any (windows of consecutive periods never overlap)."""
        current = Period.of(at, self.tz)
        for candidate in (current.previous(), current):
            if self.is_open(candidate, at):
                return candidate
        return None


_aware = to_utc
parse_instant = parse_utc  # ISO 8601 with a zone; a time without one is refused (contract.times)
