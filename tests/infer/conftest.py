"""Fixtures for the digit-inference tests: the shared data beside the repo, small crop folders."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import cv2
import pytest
from infer_helpers import synthetic_crop

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    env = os.environ.get("METER_SHARED_DIR")
    return Path(env) if env else (REPO / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def digits_root() -> Path:
    root = shared_dir() / "data" / "digits"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"shared digit data not found at {root} (set METER_SHARED_DIR to the folder holding data/)")
    return root


@pytest.fixture(scope="session")
def val_rows(digits_root: Path) -> list[dict[str, str]]:
    """200 val crops (meters the model never saw), the same ones every run."""
    with open(digits_root / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val" and r["label"] != "N"]
    return sorted(random.Random(4).sample(rows, 200), key=lambda r: r["file"])


@pytest.fixture
def val_folder(tmp_path: Path, digits_root: Path, val_rows: list[dict[str, str]]) -> Path:
    """A folder of links to the sample crops, some in a sub-folder (the CLI recurses)."""
    folder = tmp_path / "crops"
    for i, r in enumerate(val_rows):
        target = folder / ("sub" if i % 3 == 0 else "") / Path(r["file"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(digits_root / r["file"])
    return folder


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "synthetic"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"d{i}.png"), synthetic_crop(i))
    return folder
