"""Load the shared digit crops (``labels.csv``), fingerprint them, and sample balanced batches."""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meter_vision.infer.preprocess import decode_image

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the repository, or ``$METER_SHARED_DIR``."""
    env = os.environ.get("METER_SHARED_DIR")
    return Path(env) if env else (REPO_ROOT / ".." / "shared").resolve()


def digits_dir() -> Path:
    return shared_dir() / "data" / "digits"


@dataclass
class DigitSet:
    """Crops (BGR uint8, original sizes) with their wheel positions and where they came from."""

    images: list[np.ndarray] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # 0.0 .. 9.9
    labels: list[str] = field(default_factory=list)  # "0".."9"
    kinds: list[str] = field(default_factory=list)  # fraction / integer / sim
    groups: list[str] = field(default_factory=list)
    meter_types: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def extend(self, other: DigitSet) -> None:
        for name in ("images", "values", "labels", "kinds", "groups", "meter_types", "files"):
            getattr(self, name).extend(getattr(other, name))


def read_rows(root: Path | None = None) -> list[dict[str, str]]:
    root = root or digits_dir()
    with open(root / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_split(
    split: str | tuple[str, ...], *, root: Path | None = None, limit: int | None = None, seed: int = 0,
    with_n: bool = False,
) -> DigitSet:
    """Load one split (or several). ``N`` crops (no position) are left out unless ``with_n``.

    ``limit`` keeps a random, seeded subset (for smoke tests and quick runs).
    """
    root = root or digits_dir()
    splits = (split,) if isinstance(split, str) else split
    rows = [r for r in read_rows(root) if r["split"] in splits and (with_n or r["label"] != "N")]
    if limit is not None and limit < len(rows):
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(len(rows), size=limit, replace=False).tolist())
        rows = [rows[i] for i in keep]
    out = DigitSet()
    for r in rows:
        img = decode_image((root / r["file"]).read_bytes())
        out.images.append(img)
        if r["value"] not in ("", "N"):
            out.values.append(float(r["value"]))
        else:  # integer-only labels read as x.0; N has no position
            out.values.append(float(r["label"]) if r["label"].isdigit() else float("nan"))
        out.labels.append(r["label"])
        out.kinds.append(r["label_kind"])
        out.groups.append(r["meter_or_group"])
        out.meter_types.append(r["meter_type"])
        out.files.append(r["file"])
    return out


def fingerprint(root: Path, files: Sequence[str], extra: str = "") -> str:
    """sha256 over labels.csv and the sorted list of image files used (plus any extra description)."""
    h = hashlib.sha256()
    h.update((root / "labels.csv").read_bytes())
    for f in sorted(files):
        h.update(f.encode() + b"\n")
    h.update(extra.encode())
    return h.hexdigest()


def soft_targets(values: np.ndarray, kinds: Sequence[str], classes: int = 100) -> np.ndarray:
    """Circular soft labels: a Gaussian over neighbouring tenths, 9.9 wrapping to 0.0.

    A hand label is only good to a tenth, so neighbours share the target. Crops labelled with only
    an integer (``kind == "integer"``) get a wider target: the wheel was somewhere near x.0.
    """
    centers = np.round(values * classes / 10.0) % classes
    k = np.arange(classes)[None, :]
    d = np.abs(k - centers[:, None])
    d = np.minimum(d, classes - d)
    sigma = np.where(np.asarray(kinds) == "integer", 1.5, 0.8)[:, None]
    t = np.exp(-0.5 * (d / sigma) ** 2)
    t[d > 3] = 0.0
    out: np.ndarray = (t / t.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def sampling_weights(groups: Sequence[str], values: Sequence[float], group_power: float = 0.5) -> np.ndarray:
    """Per-crop sampling probabilities: each group weighs count**power (big pools stop dominating),
    and within a group the tenths are evened out (x.9 and x.0 are over-represented) with a sqrt."""
    gcount = Counter(groups)
    tenth = [round(v * 10) % 10 for v in values]
    tcount = Counter(zip(groups, tenth, strict=True))
    raw = np.array([1.0 / math.sqrt(tcount[(g, t)]) for g, t in zip(groups, tenth, strict=True)])
    gsum: dict[str, float] = {}
    for g, r in zip(groups, raw, strict=True):
        gsum[g] = gsum.get(g, 0.0) + float(r)
    w = np.array([r * gcount[g] ** group_power / gsum[g] for g, r in zip(groups, raw, strict=True)])
    out: np.ndarray = w / w.sum()
    return out
