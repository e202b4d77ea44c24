"""The flash LED, switched through gpiozero, and a capture that always switches it off again."""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any, Self

from edge.capture.base import Camera, CaptureError, Frame

log = logging.getLogger(__name__)


class Flash:
    """An LED on BCM `pin` lit `warmup_s` before each capture; pin 0 means no LED (on/off do nothing).

    `pin_factory` is passed to gpiozero (tests inject `MockFactory()`); None lets gpiozero choose.
    """

    def __init__(self, pin: int, warmup_s: float = 0.3, pin_factory: Any = None) -> None:
        self.pin = pin
        self.warmup_s = warmup_s
        self.led: Any = None
        if pin == 0:
            return
        try:
            from gpiozero import LED
            from gpiozero.exc import GPIOZeroError

            self.led = LED(pin, pin_factory=pin_factory)
        except (GPIOZeroError, OSError, RuntimeError) as exc:
            raise CaptureError(f"flash LED on GPIO{pin} could not be set up ({exc}): on a Pi check the pin and that "
                               "this user is in the `gpio` group; without an LED set led.pin = 0") from exc

    @property
    def is_lit(self) -> bool:
        return bool(self.led is not None and self.led.is_lit)

    def on(self) -> None:
        if self.led is not None:
            self.led.on()

    def off(self) -> None:
        if self.led is not None:
            self.led.off()

    def close(self) -> None:
        if self.led is not None:
            self.led.close()
            self.led = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def capture_with_flash(camera: Camera, flash: Flash) -> Frame:
    """LED on, wait for it to warm up, capture, LED off: off again also when the capture fails."""
    flash.on()
    try:
        if flash.led is not None and flash.warmup_s > 0:
            time.sleep(flash.warmup_s)
        return camera.capture()
    finally:
        flash.off()
