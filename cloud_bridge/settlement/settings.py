"""The `settlement` config section: the limits the bridge holds every reading to, whatever the device says."""

from __future__ import annotations

from pydantic import Field

from contract.settings import Section


class SettlementSection(Section):
    max_rate_m3_per_h: float = Field(
        3.0, gt=0, le=1000, description="Highest plausible flow of a meter: a rise faster than this between two "
        "readings (or since what billing holds) rules a reading out.")
    min_after: int = Field(
        2, ge=1, le=20, description="Later readings that must agree before a reading is settled (billable).")
    max_integer_digits: int = Field(
        6, ge=1, le=12, description="Most digits before the point a meter here has; a value with more is an "
        "outlier (e.g. 999999999999.000000).")
    max_decimals: int = Field(
        3, ge=0, le=6, description="Most digits after the point a meter here has.")
    every_s: float = Field(
        10.0, gt=0, description="How often the running bridge settles the meters that got new readings.")
    lookback_days: float = Field(
        45.0, gt=0, description="How much history around a corrected reading (and before the newest when "
        "`history` settles a payer's meters) is read.")
    context_readings: int = Field(
        128, ge=8, le=10_000, description="Readings before the earliest changed one that settlement reads as "
        "context: a bounded cost per change however often the meter is read.")

