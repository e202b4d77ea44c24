"""The one place that turns text into a UTC time, and the one policy for times without a zone.

Policy: a time must say its zone (`Z` or an offset like `+03:00`). A time without one is refused,
never guessed: on a bill "10:00" in Moscow and "10:00" UTC are three hours and possibly a month apart.
Every parse error is a ValueError with a message a person can act on; nothing here raises anything
else (`0001-01-01T00:00:00+14:00` is a valid ISO string whose UTC form is before year 1: OverflowError
inside `astimezone`, turned into a ValueError here).

`check_sane` is the window the contract accepts for times a device reports: not before 2000 (a Pi
without a real-time clock that lost its time says 1970), not more than a day ahead of the receiver's
clock (a reading dated 9999-12-31 would sort after every real one for ever).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EXAMPLE = "2026-11-24T17:00:00Z"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)


def to_utc(value: datetime) -> datetime:
    """An aware datetime in UTC. Naive ones are refused (see the module's policy)."""
    if value.tzinfo is None:
        raise ValueError(f"time {value.isoformat()} has no time zone: add Z for UTC or an offset, e.g. {EXAMPLE}")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {value.isoformat()} is out of range") from None


def parse_utc(text: str) -> datetime:
    """ISO 8601 with a zone (`Z`, `z` or an offset) → aware UTC datetime; ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"time must be an ISO 8601 string like {EXAMPLE}, not {type(text).__name__}")
    cleaned = text.strip()
    if cleaned[-1:] in ("Z", "z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text[:60]!r} (e.g. {EXAMPLE})") from None
    if value.tzinfo is None:
        raise ValueError(f"time {text[:60]!r} has no time zone: add Z for UTC or an offset, e.g. {EXAMPLE}")
    return to_utc(value)


def check_sane(value: datetime, now: datetime | None = None) -> datetime:
    """`value` (aware) if it lies in [2000-01-01, now + 1 day]; ValueError otherwise."""
    value = to_utc(value)
    now = now or datetime.now(UTC)
    if value < EARLIEST:
        raise ValueError(f"time {format_utc(value)} is before {EARLIEST:%Y-%m-%d}: is the device clock set?")
    if value > now + MAX_AHEAD:
        raise ValueError(f"time {format_utc(value)} is more than a day ahead of {format_utc(now)}: "
                         "is the device clock set?")
    return value


def format_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a trailing Z; microseconds only when there are any."""
    v = to_utc(value)
    # Not strftime: its %Y does not pad years before 1000 on glibc, which would break the round trip.
    text = f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    return text + (f".{v.microsecond:06d}Z" if v.microsecond else "Z")
