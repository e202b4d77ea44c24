"""What the device and the bridge both see with: the digit model (:mod:`meter_vision.infer`), the automatic
digit windows (:mod:`meter_vision.windows`), the rolling-wheel rules (:mod:`meter_vision.wheels`), image
decoding behind the header checks (:mod:`meter_vision.images`) and window geometry
(:mod:`meter_vision.geometry`).

Imports numpy, OpenCV, the TFLite runtime, pydantic and :mod:`contract`; never :mod:`edge` or
:mod:`cloud_bridge` (docs/decisions.md). The bridge installs it with the ``photo`` extra.
"""
