"""`meter-edge capture`: one frame through the service's own camera, LED and resolution."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click
import cv2

from contract.settings import ConfigError
from edge.capture.base import CaptureError, EndOfFrames, Frame
from edge.capture.device import open_device, size_mismatch
from edge.capture.flash import capture_with_flash
from edge.config import EdgeConfig, load_edge_config

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def take_frame(cfg: EdgeConfig, pin_factory: Any = None) -> Frame:
    """One frame exactly as the agent takes it: the configured backend, LED on for `led.warmup_s`, LED off."""
    camera, flash = open_device(cfg, pin_factory)
    try:
        return capture_with_flash(camera, flash)
    finally:
        camera.close()
        flash.close()


def write_frame(frame: Frame, out: Path) -> None:
    """Write the frame (format from the suffix) through a temporary file, so `out` is never half written."""
    if out.suffix.lower() not in SUFFIXES:
        raise click.BadParameter(f"{out.name}: use a .jpg, .png or .bmp name", param_hint="--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if out.suffix.lower() in {".jpg", ".jpeg"} else []
        if not cv2.imwrite(tmp, frame.image, params):
            raise click.ClickException(f"could not write {out}: is the folder writable?")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def layout_size_note(cfg: EdgeConfig, frame: Frame) -> str | None:
    """How the frame's size compares with the configured layout's reference, when there is one."""
    from edge.calibrate import LayoutError, load_layout

    if not cfg.layout.is_file():
        return None
    try:
        layout = load_layout(cfg.layout)
    except LayoutError:
        return None
    ref = cv2.imread(str(layout.reference_image), cv2.IMREAD_UNCHANGED)
    if ref is None:
        return None
    h, w = frame.image.shape[:2]
    return size_mismatch(w, h, ref.shape[1], ref.shape[0])


@click.command("capture")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the frame (.jpg, .png or .bmp).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config TOML (default: config/edge.toml when it exists); EDGE_* variables override it.")
def capture(out: Path, config_path: Path | None) -> None:
    """Take one frame with the service's own camera backend, flash LED and resolution (capture.*, led.*),
    the same way the agent does, and write it to --out: the frame to calibrate on.

    \b
    Stop the service first on a Pi (the camera has one user).
    With capture.backend = folder or simulator this takes the next frame, as the agent would.
    """
    try:
        cfg = load_edge_config(config_path)
        frame = take_frame(cfg)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except EndOfFrames as exc:
        raise click.ClickException(f"no frame: {exc}") from None
    except CaptureError as exc:
        raise click.ClickException(f"capture ({cfg.capture.backend}) failed: {exc}") from None
    write_frame(frame, out)
    h, w = frame.image.shape[:2]
    led = f"LED on GPIO{cfg.led.pin} for {cfg.led.warmup_s:g} s" if cfg.led.pin else "no LED (led.pin = 0)"
    taken = frame.taken_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    click.echo(f"wrote {out}: {w}x{h} px from {cfg.capture.backend} ({frame.source}), {led}, taken {taken}")
    note = layout_size_note(cfg, frame)
    if note:
        click.echo(f"warning: {note}", err=True)
