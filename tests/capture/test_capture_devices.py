"""Hardware backends off the hardware: clear errors; the flash LED with gpiozero's MockFactory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.capture import Camera, CaptureError, Flash, Frame, capture_with_flash, open_camera
from edge.config import CaptureConfig


def test_opencv_missing_camera_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as err:
        open_camera(CaptureConfig(backend="opencv", source="63"), tmp_path)
    msg = str(err.value)
    assert "/dev/video63" in msg and "ls /dev/video*" in msg and "video" in msg


def test_opencv_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="could not be opened"):
        open_camera(CaptureConfig(backend="opencv", source=str(tmp_path / "no-such-device")), tmp_path)


def test_picamera2_off_a_pi_says_to_install_from_apt(tmp_path: Path) -> None:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CaptureError) as err:
        open_camera(CaptureConfig(backend="picamera2"), tmp_path)
    assert "sudo apt install python3-picamera2" in str(err.value)
    assert "--system-site-packages" in str(err.value)


class PinCheckingCamera(Camera):
    """Records whether the LED was lit while it captured; fails when told to."""

    def __init__(self, flash: Flash, fail: bool = False) -> None:
        self.flash, self.fail = flash, fail
        self.lit_during: list[bool] = []

    def capture(self) -> Frame:
        self.lit_during.append(self.flash.led.pin.state == 1)
        if self.fail:
            raise CaptureError("camera unplugged")
        return Frame(np.zeros((4, 4, 3), np.uint8), datetime.now(UTC), "test")


def test_led_on_during_capture_and_off_after() -> None:
    factory = MockFactory()
    with Flash(17, warmup_s=0.01, pin_factory=factory) as flash:
        cam = PinCheckingCamera(flash)
        frame = capture_with_flash(cam, flash)
        assert frame.source == "test"
        assert cam.lit_during == [True]
        pin = factory.pin(17)
        assert pin.state == 0
        pin.assert_states([False, True, False])


def test_led_off_after_a_failed_capture() -> None:
    factory = MockFactory()
    with Flash(27, warmup_s=0.0, pin_factory=factory) as flash:
        cam = PinCheckingCamera(flash, fail=True)
        with pytest.raises(CaptureError, match="unplugged"):
            capture_with_flash(cam, flash)
        assert cam.lit_during == [True]
        assert factory.pin(27).state == 0 and not flash.is_lit


def test_pin_zero_means_no_led() -> None:
    factory = MockFactory()
    flash = Flash(0, warmup_s=5.0, pin_factory=factory)  # would wait 5 s if it thought an LED were there
    cam = PinCheckingCamera.__new__(PinCheckingCamera)
    cam.fail, cam.lit_during = False, []
    cam.capture = lambda: Frame(np.zeros((2, 2, 3), np.uint8), datetime.now(UTC), "x")  # type: ignore[method-assign]
    assert capture_with_flash(cam, flash).source == "x"
    assert flash.led is None and not flash.is_lit


def test_unknown_backend_names_the_known_ones(tmp_path: Path) -> None:
    cfg = CaptureConfig.model_construct(backend="webcam", source="")  # type: ignore[arg-type]
    with pytest.raises(CaptureError, match=r"folder.*opencv.*picamera2.*simulator"):
        open_camera(cfg, tmp_path)
