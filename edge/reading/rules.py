"""The tunable numbers of the reading rules, and the value arithmetic they share (exact decimals).

`Rules` is built from the device config (`ReadingConfig`) and the layout (how many decimals); every
rule in `edge.reading.assemble` reads its thresholds from here. docs/reading.md explains each key.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import ReadingConfig


@dataclass(frozen=True)
class Rules:
    """Thresholds of the reading rules for one layout.

    decimals: how many wheels are after the decimal point (the lowest wheel's step is 10**-decimals m³).
    max_rate_m3_per_h: a rise faster than this since the previous accepted value is refused.
    confidence_threshold: a wheel under it is unreadable (N); None: only the model's own N counts.
    change_confidence: a wheel whose digit differs from the previous value needs at least this confidence.
    hysteresis_steps: a fall of up to this many lowest-wheel steps is jitter: the previous value stands, ok.
    ambiguity: a wheel this close (in digit positions) to its rounding boundary also offers its neighbour.
    confirm_change_m3: a rise of more than this per hour since the accepted value (ordinary use stays under
        it) that moves a wheel above the lowest needs two frames that agree.
    confirm_after: this many refused frames in a row that agree with each other re-anchor the device (or ask
        for an installer when the meter itself changed).
    """

    decimals: int = 0
    max_rate_m3_per_h: float = 3.0
    confidence_threshold: float | None = None
    change_confidence: float = 0.8
    hysteresis_steps: int = 1
    ambiguity: float = 0.15
    confirm_change_m3: float = 0.35
    confirm_after: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.decimals <= 6:
            raise ValueError(f"decimals must be 0..6, not {self.decimals}")
        if self.max_rate_m3_per_h <= 0:
            raise ValueError("max_rate_m3_per_h must be > 0")
        if self.confirm_after < 1:
            raise ValueError("confirm_after must be >= 1")
        if self.hysteresis_steps < 0:
            raise ValueError("hysteresis_steps must be >= 0")

    @classmethod
    def from_config(cls, cfg: ReadingConfig, decimals: int, max_rate_m3_per_h: float | None = None) -> Rules:
        return cls(
            decimals=decimals,
            max_rate_m3_per_h=cfg.max_rate_m3_per_h if max_rate_m3_per_h is None else max_rate_m3_per_h,
            confidence_threshold=cfg.confidence_threshold,
            change_confidence=cfg.change_confidence,
            hysteresis_steps=cfg.hysteresis_steps,
            ambiguity=cfg.ambiguity,
            confirm_change_m3=cfg.confirm_change_m3,
            confirm_after=cfg.confirm_after,
        )

    @property
    def step(self) -> Decimal:
        """One step of the lowest wheel in m³."""
        return Decimal(1).scaleb(-self.decimals)

    @property
    def hysteresis(self) -> Decimal:
        return self.step * self.hysteresis_steps

    def from_units(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.decimals)

    def quantize(self, value: Decimal) -> Decimal:
        """Down to the layout's decimals (never up: a meter shows the digit a wheel has reached)."""
        return value.quantize(self.step, rounding=ROUND_FLOOR)

    def format(self, value: Decimal, wheels: int) -> str:
        """"00123.456": the layout's decimals, zero-padded to the wheel count."""
        units = int(self.quantize(value).scaleb(self.decimals))
        text = str(units).zfill(wheels)
        return text if self.decimals == 0 else f"{text[:-self.decimals]}.{text[-self.decimals:]}"


def parse_value(text: str) -> Decimal:
    """A meter value given by a person ("123.456", "530,07"): a non-negative Decimal, or ValueError."""
    try:
        value = Decimal(text.strip().replace(",", "."))
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not a number (write a meter value like 123.456)") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a meter value (a number >= 0)")
    return value
