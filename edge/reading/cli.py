"""``meter-edge read``: read meter photos with a layout, one JSON reading per frame per line."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from contract.times import check_sane, parse_utc
from edge.capture.frametime import frame_time, time_from_name
from edge.reading.assemble import confirm
from edge.reading.model import ReadingState
from edge.reading.rules import parse_value

__all__ = ["frame_time", "read"]


def _write_picture(out: Path, aligned: Any, raw: Any, layout: Any, decision: Any) -> None:
    """The calibration picture of one read frame: windows, per-wheel reading, status and reason as title."""
    import cv2

    from edge.calibrate.picture import CropReading, render_picture

    readings = [CropReading(w.digit if w.resolved is None else w.resolved, w.position, w.confidence)
                for w in decision.wheels] or None
    title = f"{decision.status} {decision.value or '-'}  {decision.reason or decision.rule}"
    picture = render_picture(aligned if aligned is not None else raw, layout.digits, decimals=layout.decimals,
                             readings=readings, model_note="" if readings else "not read", title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), picture):
        click.echo(f"warning: could not write {out}", err=True)


class SetupError(click.ClickException):
    """A layout, model or config problem found before any frame is read: exit status 2, as --help says."""

    exit_code = 2


@click.command("read")
@click.argument("frames", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--layout", "layout_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="layout.toml written by `meter-edge calibrate`.")
@click.option("--previous", default=None, metavar="VALUE",
              help="The meter's last accepted value (e.g. 123.456); without it the first readable frame is taken.")
@click.option("--previous-at", default=None, metavar="ISO_TIME",
              help="When --previous was read (UTC ISO 8601); without it the first frame's rise is not rate-checked.")
@click.option("--max-rate", type=click.FloatRange(min=0, min_open=True), default=None, metavar="M3_PER_H",
              help="Highest plausible flow in m3/h [default: reading.max_rate_m3_per_h of the config, 3.0].")
@click.option("--interval", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Frames without a time in their name are taken SECONDS apart, from the first one's file time "
                   "[default: each file's modification time].")
@click.option("--explain", is_flag=True, help="Add each wheel's prediction, the deciding rule and stage timings.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .tflite digit model with its .json sidecar [default: the config's, else the bundled one].")
@click.option("--pictures", "pictures_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write DIR/<frame>.png: the aligned frame with the digit windows, what was read and the "
                   "status (the raw frame when alignment failed).")
@click.option("--device-id", default="cli", show_default=True, help="device_id written into each reading.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Edge config for the reading rules [default: config/edge.toml when present].")
@click.option("--settle-after", "settle_after", type=click.IntRange(min=0), default=2, show_default=True,
              metavar="N", help="Later frames that must agree with a frame before it is ok (settled).")
def read(frames: tuple[Path, ...], layout_path: Path, previous: str | None, previous_at: str | None,
         max_rate: float | None, interval: float | None, explain: bool, model_path: Path | None,
         pictures_dir: Path | None, device_id: str, config_path: Path | None, settle_after: int) -> None:
    """Read meter photos FRAMES in the order given, as the device would, settle them, and print one JSON
    line each.

    \b
    Each line is a Reading (v, device_id, seq = frame index, taken_at, value, unit, status, reason,
    confidence, digits, model) plus "frame" (the path), "settlement" (settled, outlier or pending),
    "settlement_reason", and what the device alone decided ("device_status", "device_reason");
    --explain adds "explain" (wheels, deciding rule, timings, and which frames corroborate it).
    Frames are read one by one as on the device (each accepted value carried forward), then the whole
    sequence is settled (docs/reading.md): a frame is "ok" only when the frames before and after it
    agree with it (settled; --settle-after later ones), so the last frames wait ("suspect", reason
    "awaiting_later: ..."). Only "ok" would be billed; "suspect" carries a reason starting with a code;
    "error" means the frame could not be read (not an image, alignment failed). Lines are printed
    once every frame is read.
    A frame's time comes from a YYYYMMDDTHHMMSSZ in its name (e.g. 20261124T170000Z.jpg), else from
    --interval, else from the file's modification time.

    \b
    Exit status: 0 when every frame gave an ok or suspect reading; 1 when at least one frame was an
    error (unreadable file, alignment failed: check the calibration); 2 for a usage or setup problem
    (layout, model or config missing or invalid), before any frame is read.
    """

    from contract.settings import ConfigError
    from contract.topics import is_valid_device_id
    from edge.calibrate.align import AlignError
    from edge.calibrate.layout import LayoutError
    from edge.config import load_edge_config
    from edge.pipeline import FramePipeline
    from edge.reading.assemble import assemble
    from edge.reading.model import Decision, Observation
    from edge.reading.payload import to_reading
    from edge.reading.rules import Rules
    from edge.reading.settled import settle_decisions
    from meter_vision.images import ImageRefused, read_bgr
    from meter_vision.infer import DigitModel, InferenceError

    if not is_valid_device_id(device_id):
        raise click.BadParameter("a device id is 1-64 of A-Z a-z 0-9 _ -", param_hint="--device-id")
    try:
        cfg = load_edge_config(config_path)
    except ConfigError as exc:
        raise click.UsageError(f"edge config: {exc}") from exc
    try:
        model_file = model_path or (Path(cfg.model) if cfg.model else None)
        classifier = DigitModel(model_file)
    except InferenceError as exc:
        raise SetupError(f"{exc}; pass --model PATH or run `make train`") from exc
    try:
        pipe = FramePipeline.from_files(layout_path, classifier)
    except (LayoutError, AlignError) as exc:
        raise SetupError(str(exc)) from exc
    pipe.rules = Rules.from_config(cfg.reading, pipe.layout.decimals, max_rate)

    state = ReadingState()
    if previous is not None:
        try:
            value = pipe.rules.quantize(parse_value(previous))
            at = parse_utc(previous_at) if previous_at else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--previous/--previous-at") from exc
        state = confirm(state, value, at) if at else ReadingState(previous=value)

    first_time: datetime | None = None
    read_frames: list[tuple[int, Path, datetime, Decision, dict[str, Any]]] = []
    for seq, path in enumerate(frames):
        fallback = None
        if interval is not None and time_from_name(path) is None:
            if first_time is None:
                first_time = frame_time(path) if path.exists() else datetime.now(UTC)
            fallback = first_time + timedelta(seconds=interval * seq)
        try:
            taken_at = frame_time(path, fallback)
            image, problem = read_bgr(path), None
        except ImageRefused as exc:  # empty, not an image, a PNG bomb: this frame is an error, the rest go on
            taken_at, image, problem = taken_at, None, str(exc)
        except OSError as exc:
            taken_at, image, problem = fallback or datetime.now(UTC), None, f"cannot read {path}: {exc.strerror}"
        try:
            check_sane(taken_at)
        except ValueError as exc:  # the contract refuses this time: an error line now, not a traceback later
            taken_at, image, problem = datetime.now(UTC), None, f"frame time refused: {exc}"
        if problem is not None:
            decision, state = assemble(state, Observation((), taken_at, failure=problem), pipe.rules)
            extra: dict[str, Any] = {"explain": decision.explain()} if explain else {}
        else:
            result = pipe.process(image, taken_at, state)
            decision, state = result.decision, result.state
            extra = {}
            if pictures_dir is not None:
                _write_picture(pictures_dir / f"{path.stem}.png", result.aligned, image, pipe.layout, decision)
            if explain:
                extra["explain"] = {**result.explain,
                                    "timings_ms": {k: round(v * 1000, 2) for k, v in result.timings.items()}}
        read_frames.append((seq, path, taken_at, decision, extra))

    anchor = None if previous is None else pipe.rules.quantize(parse_value(previous))
    anchor_at = parse_utc(previous_at) if previous is not None and previous_at else None
    settled = settle_decisions([(t, d) for _, _, t, d, _ in read_frames], decimals=pipe.layout.decimals,
                               max_rate_m3_per_h=pipe.rules.max_rate_m3_per_h, previous=anchor,
                               previous_at=anchor_at, min_after=settle_after)
    errors = 0
    for (seq, path, taken_at, decision, extra), frame in zip(read_frames, settled, strict=True):
        errors += frame.status == "error"
        shown = replace(decision, status=frame.status, reason=frame.reason)
        reading = to_reading(shown, device_id=device_id, seq=seq, taken_at=taken_at, model=pipe.model_id)
        if explain:
            extra = {**extra, "explain": {**extra.get("explain", {}), "settlement": frame.explain()}}
        line = {**json.loads(reading.model_dump_json()), "frame": str(path), **frame.fields(), **extra}
        click.echo(json.dumps(line, separators=(",", ":")))
    sys.stdout.flush()
    if errors:
        click.echo(f"{errors} of {len(frames)} frames could not be read (status error); see their reasons", err=True)
        sys.exit(1)
