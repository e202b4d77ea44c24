"""Check a value someone wants to put in place of what a meter's device read, before it can reach billing.

One function for every way a person sets a value: a resident's correction (`meter-bridge correct`, the
residents' portal), an operator's or installer's (`correct --by operator`, `meter-bridge cmd ID
set-value V`). The value goes through the same checks as a device's reading:

- it is a meter value with no more digits than a meter has (`settlement.max_integer_digits`,
  `max_decimals`);
- the meter's readings around `taken_at` allow it: not below what the meter showed before, not above
  what it showed after, and no faster rise than `settlement.max_rate_m3_per_h` since the last reading
  before it (`contract.settlement.plausible_range`, outliers left out);
- not below what billing already holds for the meter (a meter does not run backwards).

The answer is a `Verdict`: `accepted` (may be used for billing), `refused` (never used; the reason says
which range is plausible), or `review` (nothing around it to check against: an operator must confirm).
A refused or held correction is still recorded by `correct_reading` so the resident sees why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, and_, select

from cloud_bridge.settlement import (
    billed_for,
    billed_problem,
    digit_problem,
    meter_rows,
    observation,
    parse_value,
    settle_rows,
)
from cloud_bridge.settlement.settings import SettlementSection
from cloud_bridge.store.tables import bindings
from contract import settlement as rules
from contract.payloads import VALUE_PATTERN, format_utc

if TYPE_CHECKING:
    from cloud_bridge.config import BridgeConfig

VerdictState = Literal["accepted", "refused", "review"]


@dataclass(frozen=True)
class Verdict:
    """What the checks say about a value. `plausible_low`/`plausible_high`: the range the meter's readings
    around that time allow (None: unbounded on that side), for the person to see."""

    state: VerdictState
    reason: str | None
    plausible_low: Decimal | None = None
    plausible_high: Decimal | None = None

    @property
    def accepted(self) -> bool:
        return self.state == "accepted"

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason,
                "plausible_low": None if self.plausible_low is None else str(self.plausible_low),
                "plausible_high": None if self.plausible_high is None else str(self.plausible_high)}


def _limits(config: BridgeConfig | SettlementSection | None) -> SettlementSection:
    if isinstance(config, SettlementSection):
        return config
    return SettlementSection() if config is None else config.settlement


def _fmt(value: Decimal, like: str, rounding: str = ROUND_HALF_EVEN) -> str:
    """A bound in the meter's own format (`like`: one of its values, e.g. 00123.456), rounded inwards."""
    whole, _, frac = like.partition(".")
    q = value.quantize(Decimal(1).scaleb(-len(frac)), rounding=rounding) if frac else value
    text = f"{q:f}"
    head, dot, tail = text.partition(".")
    return head.zfill(len(whole)) + dot + tail


def describe_range(low: Decimal | None, high: Decimal | None, like: str) -> str:
    """`00123.693 – 00125.100 m3`, `at least …`, `at most …`, or `anything` (nothing around to bound it)."""
    if low is not None and high is not None:
        return f"{_fmt(low, like, ROUND_CEILING)} – {_fmt(high, like, ROUND_FLOOR)} m3"
    if low is not None:
        return f"at least {_fmt(low, like, ROUND_CEILING)} m3"
    if high is not None:
        return f"at most {_fmt(high, like, ROUND_FLOOR)} m3"
    return "anything (no readings around it)"


def plausible_range_for(conn: Connection, meter_serial: str, taken_at: datetime,
                        config: BridgeConfig | SettlementSection | None = None, *,
                        exclude_reading: int | None = None) -> tuple[Decimal | None, Decimal | None]:
    """The range the meter's readings around `taken_at` allow (outliers and the reading itself left out)."""
    limits = _limits(config)
    since = taken_at - timedelta(days=limits.lookback_days)
    rows = meter_rows(conn, meter_serial, since, exclude_reading=exclude_reading)
    billed = billed_for(conn, meter_serial)
    if billed is not None and billed.reading_id is not None and billed.reading_id == exclude_reading:
        billed = None  # the value billing holds is the one being corrected: it cannot vouch for itself
    results = {r.reading_id: r.state for r in settle_rows(rows, billed, limits)}
    obs = [observation(r) for r in rows if results.get(r.reading_id) != "outlier"]
    return rules.plausible_range(obs, taken_at, max_rate_m3_per_h=limits.max_rate_m3_per_h,
                                 min_after=limits.min_after, billed=billed.value if billed else None,
                                 billed_at=billed.taken_at if billed else None)


def check_correction(conn: Connection, meter_serial: str, value: str, taken_at: datetime,
                     config: BridgeConfig | SettlementSection | None = None, *,
                     reading_id: int | None = None) -> Verdict:
    """May `value` stand as what meter `meter_serial` showed at `taken_at`? Reads only; changes nothing.

    `reading_id`: the reading being corrected (left out of its own neighbours). For a device's
    `set-value`, pass the device's meter (`meter_of_device`) and the time the installer read it."""
    limits = _limits(config)
    if not re.match(VALUE_PATTERN, value):
        return Verdict("refused", f"{value!r} is not a meter value: digits with an optional decimal part, "
                       "e.g. 00123.456")
    problem = digit_problem(value, None, limits)
    number = parse_value(value)
    assert number is not None
    rows = meter_rows(conn, meter_serial, taken_at - timedelta(days=limits.lookback_days))
    like = next((r.value for r in reversed(rows)  # the meter's own format, from a value it could show
                 if r.value is not None and digit_problem(r.value, None, limits) is None), value)
    low, high = plausible_range_for(conn, meter_serial, taken_at, limits, exclude_reading=reading_id)
    where = f"at {format_utc(taken_at)}"
    span = describe_range(low, high, like)
    if problem is not None:
        return Verdict("refused", f"{value} has {problem}; plausible is {span}", low, high)
    if low is not None and high is not None and low > high:
        return Verdict("review", f"meter {meter_serial}'s readings around {format_utc(taken_at)} contradict each "
                       f"other (the meter may have been changed); an operator must confirm {value}", low, high)
    if (low is not None and number < low) or (high is not None and number > high):
        side = "below" if low is not None and number < low else "above"
        return Verdict("refused", f"{value} is {side} what meter {meter_serial}'s readings allow {where}: "
                       f"plausible is {span}", low, high)
    billed = billed_problem(number, taken_at, billed_for(conn, meter_serial), limits, reading_id)
    if billed is not None:
        return Verdict("refused", f"{value} is {billed}", low, high)
    if low is None and high is None:
        return Verdict("review", f"meter {meter_serial} has no readings around {format_utc(taken_at)} to check "
                       f"{value} against; an operator must confirm it", low, high)
    return Verdict("accepted", None, low, high)


def meter_of_device(conn: Connection, device_id: str, at: datetime | None = None) -> str | None:
    """The meter a device is bound to now (or at `at`), for checking a `set-value`."""
    q = select(bindings.c.meter_serial).where(bindings.c.device_id == device_id)
    if at is None:
        q = q.where(bindings.c.valid_to.is_(None))
    else:
        q = q.where(and_(bindings.c.valid_from <= at, (bindings.c.valid_to.is_(None)) | (bindings.c.valid_to > at)))
    return conn.execute(q.order_by(bindings.c.valid_from.desc()).limit(1)).scalar()
