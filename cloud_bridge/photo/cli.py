"""`meter-bridge photo read PHOTO`: what the bridge reads on a resident's meter photo, for scripts and checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cloud_bridge.photo import PHOTO_EXTRA_HINT


def _box(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give x,y,w,h in pixels of the photo, e.g. 120,340,600,110") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise click.BadParameter(f"{text!r}: x and y must be >= 0, width and height > 0")
    return x, y, w, h


@click.group("photo")
def photo() -> None:
    """Residents' meter photos: read one as the portal does (`photo read`)."""


@photo.command("read")
@click.argument("photo_path", metavar="PHOTO", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--digits", type=click.IntRange(1, 12), default=5, show_default=True,
              help="Integer (black) wheels the meter has, as registered.")
@click.option("--decimals", type=click.IntRange(0, 6), default=3, show_default=True,
              help="Decimal (red) wheels the meter has, as registered.")
@click.option("--counter-box", "counter_box", metavar="X,Y,W,H", default=None,
              help="Read only here: the counter's box (pixels of the upright photo scaled as the portal keeps it, "
                   "the JSON's size), as a resident drags it.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .tflite digit model with its .json sidecar beside it [default: the bundled model].")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: value, status, confidence, reason, boxes, counter_box, wheels, seconds.")
def read(photo_path: Path, digits: int, decimals: int, counter_box: str | None, model_path: Path | None,
         as_json: bool) -> None:
    """Read the meter on PHOTO as the portal reads an upload: JPEG, PNG or HEIC of at most 10 MB, turned
    upright as its EXIF says and scaled to at most 2000 px on the long side (cloud_bridge.photo.upload).

    \b
    status: ok         every wheel read confidently, one value
            unsure     a value is proposed, but a person must check it (reason says why)
            no_counter no row of digits found: take the photo again, or give --counter-box
    value carries every wheel, e.g. 00123.456 for --digits 5 --decimals 3.
    boxes are the wheels' windows (x,y,w,h in pixels of that upright, scaled photo, its "size"),
    each turned by angle_deg about its centre; --counter-box is in the same pixels.

    Exits 0 when the photo was read (whatever the status), 1 when it was refused (not an image, too
    large, too small) or the photo extra is not installed.
    """
    from cloud_bridge.cli_common import fail
    from cloud_bridge.photo.upload import MAX_UPLOAD_BYTES, PhotoRefused, normalise

    box = _box(counter_box)
    try:
        from meter_vision.infer import DigitModel, InferenceError
        from meter_vision.photo import read_photo
    except ImportError as exc:
        fail(f"reading photos needs OpenCV and the digit model's runtime ({exc.name or exc}): {PHOTO_EXTRA_HINT}")
    if not photo_path.is_file():
        fail(f"{photo_path} does not exist or is not a file")
    try:
        size = photo_path.stat().st_size
        if size > MAX_UPLOAD_BYTES:  # before reading it into memory
            fail(f"{photo_path} is {size:,} bytes, more than {MAX_UPLOAD_BYTES:,}: send a photo of at most 10 MB")
        upload = normalise(photo_path.read_bytes())
        image = upload.bgr()
        model = DigitModel(model_path) if model_path is not None else None
        result = read_photo(image, digits=digits, decimals=decimals, model=model, counter_box=box)
    except OSError as exc:
        fail(f"cannot read {photo_path}: {exc.strerror or exc}")
    except PhotoRefused as exc:
        fail(f"{photo_path} refused ({exc.code}): {exc.detail}")
    except InferenceError as exc:
        fail(str(exc))
    except ValueError as exc:  # a counter box outside the photo, or an image the reader refuses
        fail(str(exc))
    data = result.to_json()
    data["photo"] = str(photo_path)
    data["size"] = [int(image.shape[1]), int(image.shape[0])]
    data["upload_size"] = list(upload.upload_size)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    _print(data)


def _print(d: dict[str, Any]) -> None:
    colour = {"ok": "green", "unsure": "yellow"}.get(d["status"], "red")
    value = d["value"] if d["value"] is not None else "-"
    click.echo(f"{d['photo']} ({d['size'][0]} × {d['size'][1]}): ", nl=False)
    click.secho(f"{value} {d['status']}", fg=colour, bold=True, nl=False)
    click.echo(f" (confidence {d['confidence']:.2f}, {d['seconds']:.1f} s)")
    if d["reason"]:
        click.echo(f"  reason: {d['reason']}")
    if d["counter_box"]:
        click.echo(f"  counter box: {','.join(map(str, d['counter_box']))}, turned {d['angle_deg']:g} deg")
        for i, w in enumerate(d["wheels"], 1):
            digit = "N" if w["digit"] is None else w["digit"]
            click.echo(f"  wheel {i}: {digit} (position {w['position']:.1f}, confidence {w['confidence']:.2f}) "
                       f"box {','.join(map(str, w['box']))}")
    for note in d["notes"]:
        click.echo(f"  note: {note}")
