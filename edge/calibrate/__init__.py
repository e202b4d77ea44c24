"""Installer calibration and per-frame alignment: where the digits are, and putting each frame there.

Public API: :class:`Anchor`, :class:`AlignSettings`, :class:`Layout`, :func:`load_layout`,
:func:`save_layout`, :func:`parse_rois`, :class:`LayoutError`; :class:`Aligner` (``.align(frame) ->
AlignResult``), :class:`AlignResult`, :class:`AlignError`, :func:`crop_rois`. See docs/calibrate.md.
"""

from edge.calibrate.align import Aligner, AlignError, AlignResult, crop_rois
from edge.calibrate.layout import (
    AlignSettings,
    Anchor,
    Layout,
    LayoutError,
    load_layout,
    parse_rois,
    save_layout,
)

__all__ = [
    "AlignError",
    "AlignResult",
    "AlignSettings",
    "Aligner",
    "Anchor",
    "Layout",
    "LayoutError",
    "crop_rois",
    "load_layout",
    "parse_rois",
    "save_layout",
]
