"""``meter-edge classify``: read a folder of digit crops with the model and write a CSV."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

import click

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
CHUNK = 256
PROGRESS_FROM = 500


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursive), sorted by relative path."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@click.command("classify")
@click.argument("folder", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .tflite digit model with its .json sidecar beside it [default: the bundled model].")
@click.option("--out", "out", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), required=True,
              help="CSV to write ('-' for stdout).")
@click.option("--batch", type=click.IntRange(1, 4096), default=CHUNK, show_default=True,
              help="Crops per interpreter call.")
def classify(folder: Path, model_path: Path | None, out: Path, batch: int) -> None:
    """Classify every digit crop under DIR (recursive; .jpg .jpeg .png .bmp; any size) into a CSV.

    \b
    Columns: file (relative to DIR), digit (0-9: the number the wheel has reached,
    or N when the model is not sure), value (wheel position 0.0-9.9), confidence (0-1).

    An image that cannot be decoded is skipped with a warning naming it; the others are still
    written, and the command then exits with status 1. An empty folder or a missing or corrupt
    model exits with status 1 before writing anything.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from meter_vision.infer.backends import InferenceError
    from meter_vision.infer.model import DigitModel
    from meter_vision.infer.preprocess import decode_image

    files = list_images(folder)
    if not files:
        raise click.ClickException(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {folder}")
    try:
        model = DigitModel(model_path)
    except InferenceError as exc:
        raise click.ClickException(str(exc)) from exc

    err = Console(stderr=True)
    rows: list[tuple[str, str, str, str]] = []
    bad: list[tuple[Path, str]] = []
    with Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=len(files) < PROGRESS_FROM) as progress:
        task = progress.add_task("classify", total=len(files))
        for chunk in _chunks(files, batch):
            crops, names = [], []
            for path in chunk:
                try:
                    crops.append(decode_image(path.read_bytes()))
                    names.append(path.relative_to(folder).as_posix())
                except (OSError, ValueError) as exc:
                    bad.append((path, str(exc)))
                    err.print(f"[yellow]warning:[/] skipped {path}: {exc}", highlight=False)
            for name, pred in zip(names, model.classify(crops) if crops else [], strict=True):
                rows.append((name, pred.label, f"{pred.value:.1f}", f"{pred.confidence:.3f}"))
            progress.advance(task, len(chunk))

    fh = sys.stdout if str(out) == "-" else open(out, "w", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("file", "digit", "value", "confidence"))
        writer.writerows(rows)
    finally:
        if fh is not sys.stdout:
            fh.close()
    if bad:
        listed = ", ".join(str(p) for p, _ in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise click.ClickException(f"{len(bad)} unreadable image(s) skipped: {listed}")
    n_held = sum(1 for r in rows if r[1] == "N")
    err.print(f"{len(rows)} crops classified with {model.model_id} ({n_held} held back as N) -> {out}",
              highlight=False)
