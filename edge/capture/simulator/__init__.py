"""The field simulator: photos of a virtual water meter with a known value (demo, tests, training crops)."""

from edge.capture.simulator.consumption import Household
from edge.capture.simulator.crops import digit_crops
from edge.capture.simulator.faults import FaultMix, Faults, sample_faults
from edge.capture.simulator.meter import (
    ROIS,
    SIM_ROIS,
    MeterStyle,
    format_value,
    render_clean,
    render_frame,
    render_reference,
    render_wheel,
    wheel_positions,
)

__all__ = [
    "ROIS",
    "SIM_ROIS",
    "FaultMix",
    "Faults",
    "Household",
    "MeterStyle",
    "digit_crops",
    "format_value",
    "render_clean",
    "render_frame",
    "render_reference",
    "render_wheel",
    "sample_faults",
    "wheel_positions",
]
