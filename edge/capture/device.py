"""The service's own camera and LED, opened from the config: what the agent and `meter-edge capture` share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contract.settings import ConfigError
from edge.capture.base import Camera, CaptureError, open_camera
from edge.capture.flash import Flash

if TYPE_CHECKING:
    from edge.config import EdgeConfig


def open_device(cfg: EdgeConfig, pin_factory: Any = None) -> tuple[Camera, Flash]:
    """Camera (`capture.*`, resolution `capture.width`×`height`) and flash LED (`led.*`) as configured.

    ConfigError names the section to fix; the camera is closed again when the LED cannot be set up.
    `pin_factory` goes to gpiozero (tests inject `MockFactory()`).
    """
    try:
        camera = open_camera(cfg.capture, cfg.state_dir)
    except CaptureError as exc:
        raise ConfigError(f"capture ({cfg.capture.backend}): {exc}") from None
    try:
        flash = Flash(cfg.led.pin, cfg.led.warmup_s, pin_factory=pin_factory)
    except CaptureError as exc:
        camera.close()
        raise ConfigError(f"led: {exc}") from None
    return camera, flash


def size_mismatch(frame_w: int, frame_h: int, ref_w: int, ref_h: int) -> str | None:
    """Why frames of this size would not fit the layout's reference (the aligner's own rule), else None.

    Another aspect ratio is refused on every frame; the same aspect at another size aligns but costs
    detail, so it is reported too.
    """
    if abs(frame_w / frame_h - ref_w / ref_h) > 0.03 * ref_w / ref_h:
        return (f"frames are {frame_w}x{frame_h} px but the layout's reference is {ref_w}x{ref_h} (another aspect "
                "ratio): the agent refuses every frame; set capture.width/height to the reference's size, or "
                "calibrate again on a frame from `meter-edge capture`")
    if (frame_w, frame_h) != (ref_w, ref_h):
        return (f"frames are {frame_w}x{frame_h} px but the layout's reference is {ref_w}x{ref_h}: they are scaled "
                "to fit; set capture.width/height to the reference's size for the sharpest digits")
    return None
