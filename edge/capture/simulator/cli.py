"""`meter-edge simulate`: days of a virtual meter's photos, named by UTC time, with the truth beside them."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import cv2

from contract.times import parse_utc
from edge.capture.backends.simulator import SimulatorCamera
from edge.capture.frametime import frame_name
from edge.capture.simulator.faults import FaultMix
from edge.capture.simulator.meter import N_DEC, SIM_ROIS, format_value, render_reference, wheel_positions

TRUTH_COLUMNS = ["file", "taken_at", "value", "value_exact", "faults", "wheels"]


def _utc(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("simulate")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), required=True, help="Simulated days to render.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the frames, truth.csv and reference.jpg (created if missing).")
@click.option("--interval-min", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Simulated minutes between two frames.")
@click.option("--seed", type=int, default=0, show_default=True, help="Household and camera randomness.")
@click.option("--start", callback=_utc, default=None,
              help="UTC time of the first frame (ISO 8601 with a zone); default: DAYS before today 00:00 UTC, "
                   "so the frames end today (readings dated more than a day ahead are refused).")
@click.option("--start-value", type=click.FloatRange(0, 99999), default=123.456, show_default=True,
              help="Meter value (m³) at the first frame.")
@click.option("--faults", "fault_mix", type=click.Choice(["default", "none", "heavy"]), default="default",
              show_default=True, help="Camera faults: default (~1 frame in 5), none, heavy (~2 in 3).")
def simulate(days: float, out_dir: Path, interval_min: float, seed: int, start: datetime | None,
             start_value: float, fault_mix: str) -> None:
    """Render photos of a virtual water meter in a household over DAYS days.

    \b
    Writes OUT/YYYYMMDDTHHMMSSZ.jpg (one per interval, named by simulated UTC time), OUT/truth.csv
    (file, taken_at, value shown, exact value, fault tags, wheel positions) and OUT/reference.jpg, a clean
    frame to calibrate on. Replay the frames with `capture.backend = "folder"` or `meter-edge read`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    start = start or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    n = max(1, math.floor(days * 24 * 60 / interval_min + 1e-9))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create {out_dir}: {exc}") from exc
    cam = SimulatorCamera(seed, start, interval_min * 60, FaultMix.named(fault_mix), start_value=start_value)
    cv2.imwrite(str(out_dir / "reference.jpg"), render_reference(start_value), [cv2.IMWRITE_JPEG_QUALITY, 95])
    faulty = 0
    with (out_dir / "truth.csv").open("w", newline="", encoding="utf-8") as fh, Progress(
            TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as progress:
        writer = csv.writer(fh)
        writer.writerow(TRUTH_COLUMNS)
        task = progress.add_task("frames", total=n)
        for _ in range(n):
            frame = cam.capture()
            name = frame_name(frame.taken_at)
            if not cv2.imwrite(str(out_dir / name), frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                raise click.ClickException(f"could not write {out_dir / name} (disk full or not writable?)")
            value = cam.last_truth or 0.0
            tags = cam.last_faults.tags if cam.last_faults else ()
            faulty += bool(tags)
            writer.writerow([name, frame.taken_at.strftime("%Y-%m-%dT%H:%M:%SZ"), format_value(value),
                             f"{value:.{N_DEC + 4}f}", "+".join(tags),
                             " ".join(f"{p:.3f}" for p in wheel_positions(value))])
            progress.advance(task)
    click.echo(f"wrote {n} frames ({faulty} with camera faults) to {out_dir}, truth in {out_dir / 'truth.csv'}")
    click.echo(f"meter went from {format_value(start_value)} to {format_value(cam.last_truth or 0.0)} m³")
    click.echo(f"digit windows (SIM_ROIS): {SIM_ROIS}")
    click.echo(f'calibrate: meter-edge calibrate --image {out_dir / "reference.jpg"} --rois "{SIM_ROIS}" '
               f"--decimals {N_DEC} --out layout.toml")
