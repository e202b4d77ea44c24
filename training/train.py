"""Train the digit model, export it to int8 TFLite with its sidecar, and check the int8 model.

    python -m training.train --out models/            # the shipped model (recipe in training/recipe.py)
    python -m training.train --out /tmp/m --epochs 1 --limit 500   # a smoke run

The shipped model trains on every labelled crop (splits ``train`` and ``val``) plus simulated crops.
How well the recipe reads meters it has never seen is measured by the grouped cross-validation
(``python -m training.cv``), not on a split the model trained on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from meter_vision.infer.preprocess import to_model_input
from training.augment import augmented_batch, bar_across, destroy, foreign, straddle, zoomed_out
from training.data import DigitSet, digits_dir, fingerprint, load_split, sampling_weights, soft_targets
from training.metrics import outcome_arrays, summarize
from training.recipe import RECIPES, SHIPPED, Recipe
from training.simdata import SIM_GROUP, simulated_crops, simulated_misplaced

log = logging.getLogger("training")

WIDTH, HEIGHT, CLASSES, COLOR = 20, 32, 100, "RGB"
MODEL_ID = "digits-c100-v3"
DATA_SOURCE = "haverland/Tenth-of-step-of-a-meter-digit @ ebf9b2ba (Apache-2.0)"

__all__ = ["SIM_GROUP", "fit", "load_pool", "main", "simulated_crops"]


def batches(
    data: DigitSet, probs: np.ndarray, targets: np.ndarray, steps: int, recipe: Recipe, seed: int,
    misplaced_pool: list[np.ndarray],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Augmented, group-balanced batches made in a background thread (OpenCV releases the GIL).

    A share ``recipe.trouble`` of each batch is made unreadable (:func:`destroy`) and a share
    ``recipe.misplaced`` becomes a window that is not on one digit (between two wheels, the wrong
    size, or no digit at all); both get a flat target, which teaches the confidence to fall.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=6)
    flat = np.full(targets.shape[1], 1.0 / targets.shape[1], np.float32)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(data.groups):
        by_group[g].append(i)
    batch = recipe.batch

    def misplaced(i: int, rng: np.random.Generator) -> np.ndarray:
        img = data.images[i]
        r = rng.random()
        if misplaced_pool and r < 0.3:
            return misplaced_pool[int(rng.integers(len(misplaced_pool)))]
        if r < 0.75:  # the neighbour wheel of the same meter (or a look-alike from its group)
            peers = by_group[data.groups[i]]
            return straddle(img, data.images[peers[int(rng.integers(len(peers)))]], rng)
        if r < 0.9:
            return zoomed_out(img, rng, small=recipe.small_flat)
        return foreign(img.shape[0], img.shape[1], rng)

    def work() -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(steps):
                idx = rng.choice(len(data), size=batch, p=probs)
                r = rng.random(batch)
                bad = r < recipe.trouble
                moved = (r >= recipe.trouble) & (r < recipe.trouble + recipe.misplaced)
                edge = recipe.trouble + recipe.misplaced
                barred = (r >= edge) & (r < edge + recipe.bar_share)
                crops = [destroy(data.images[i], rng) if b else misplaced(i, rng) if m
                         else bar_across(data.images[i], rng) if z else data.images[i]
                         for i, b, m, z in zip(idx, bad, moved, barred, strict=True)]
                x = augmented_batch(crops, rng, WIDTH, HEIGHT, COLOR, strong=recipe.strong, keep=moved,
                                    zoom_out=recipe.zoom_out, faint=recipe.faint)
                y = targets[idx].copy()
                y[bad | moved | barred] = flat
                q.put((x, y))
        except BaseException as exc:  # surface errors in the consumer
            q.put(exc)
            return
        q.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def load_pool(root: Path, recipe: Recipe, *, limit: int | None = None, splits: tuple[str, ...] = ("train", "val"),
              ) -> tuple[DigitSet, list[str]]:
    """Every labelled crop of ``splits`` (N crops have no position and are left out); returns the set
    and the list of real image files (for the fingerprint)."""
    pool = load_split(splits, root=root, limit=limit, seed=recipe.seed)
    return pool, list(pool.files)


def fit(train: DigitSet, recipe: Recipe, *, threads: int | None = None,
        on_epoch: Callable[[int, Any], None] | None = None, progress: bool = True) -> Any:
    """Train the network of ``recipe`` on ``train`` (real and simulated crops); returns the Keras model.

    An ensemble recipe (``members``) trains each member recipe in turn and returns them as one model
    whose logits are the members' mean (``training.model.ensemble``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if recipe.members:
        from training.model import ensemble

        return ensemble([fit(train, m, threads=threads, on_epoch=on_epoch, progress=progress)
                         for m in recipe.members])
    import keras
    import tensorflow as tf  # type: ignore[import-untyped]
    from tqdm import tqdm

    from training.model import build_model

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(recipe.seed)
    values = np.asarray(train.values)
    targets = soft_targets(values, train.kinds, CLASSES)
    probs = sampling_weights(train.groups, train.values)
    misplaced_pool = simulated_misplaced(recipe.sim_misplaced, recipe.sim_seed + 1000)
    model = build_model(WIDTH, HEIGHT, CLASSES, filters=recipe.filters, dense=recipe.dense, double=recipe.double,
                        normalize=recipe.normalize)
    n_real = sum(1 for g in train.groups if g != SIM_GROUP)
    steps = max(1, n_real // recipe.batch)
    total = steps * recipe.epochs
    warm = min(steps, total // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.lr / 10, decay_steps=max(1, total - warm), alpha=0.01, warmup_target=recipe.lr, warmup_steps=warm,
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.KLDivergence())
    log.info("recipe %s: %d parameters, %d crops, %d steps x %d epochs", recipe.name, model.count_params(),
             len(train), steps, recipe.epochs)
    t0 = time.time()
    for epoch in range(recipe.epochs):
        losses: list[float] = []
        it = batches(train, probs, targets, steps, recipe, recipe.seed + epoch, misplaced_pool)
        bar = tqdm(it, total=steps, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch", file=sys.stderr,
                   disable=not progress)
        for xb, yb in bar:
            losses.append(float(model.train_on_batch(xb, yb)))
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        log.info("epoch %d/%d: loss %.4f (%.0fs)", epoch + 1, recipe.epochs, np.mean(losses), time.time() - t0)
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
    return model


def sidecar_for(recipe: Recipe, *, temperature: float, threshold: float, fp: str, n_real: int, n_sim: int,
                params: int, seconds: float, tf_version: str, cv: dict[str, Any] | None,
                normalize: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": 1,
        "model_id": MODEL_ID,
        "input": {"width": WIDTH, "height": HEIGHT, "channels": 3, "layout": "NHWC", "color": COLOR,
                  "value_range": [0, 255], "dtype": "int8",
                  "preprocess": "meter_vision.infer.preprocess.to_model_input "
                                "(BGR crop -> resize -> RGB float 0..255), "
                                + ("then normalize_windows (each window to mean 0, deviation 1), "
                                   if normalize else "")
                                + "then quantized with the input tensor's scale/zero point",
                  **({"normalize": normalize} if normalize else {})},
        "output": {"kind": "probabilities", "classes": CLASSES, "dtype": "int8",
                   "class_values": [round(k / 10, 1) for k in range(CLASSES)]},
        "decode": {"method": "circular_expectation", "window": 2,
                   "value": "argmax k, then k + sum(p[k+j]*j)/sum(p[k+j]) for j in -2..2 (indices mod 100), "
                            "divided by 10 and rounded to a tenth; digit = floor(value)",
                   "confidence": "sum of p[k+j] for j in -2..2 (probabilities calibrated by temperature "
                                 "scaling on out-of-fold predictions, baked into the model)",
                   "confidence_threshold": threshold},
        "training": {"data": f"{DATA_SOURCE}, splits train + val", "data_fingerprint": fp,
                     "train_crops": n_real, "simulated_crops": n_sim, "recipe": recipe.describe(),
                     "temperature": temperature, "parameters": params, "tensorflow": tf_version,
                     "seconds": round(seconds)},
        "metrics": {"protocol": "grouped cross-validation, whole meters left out (training/cv.py, docs/model.md)",
                    **(cv or {})},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models"), help="folder for digits.tflite + digits.json")
    ap.add_argument("--recipe", default=SHIPPED, choices=sorted(RECIPES), help="training recipe (training/recipe.py)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    ap.add_argument("--limit", type=int, default=None, help="use a random subset of N labelled crops (smoke runs)")
    ap.add_argument("--val-limit", type=int, default=None, help="check the int8 model on N val crops (default all)")
    ap.add_argument("--sim", type=int, default=None, help="override the recipe's simulated crops (0: none)")
    ap.add_argument("--cv", type=Path, default=Path(__file__).with_name("cv_result.json"),
                    help="cross-validation result of this recipe (temperature, threshold, figures)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    recipe = RECIPES[args.recipe]
    for key in ("epochs", "seed", "sim"):
        if getattr(args, key) is not None:
            recipe = recipe.replace(**{key: getattr(args, key)})
    if args.sim == 0:
        recipe = recipe.replace(sim_misplaced=0)
    cv: dict[str, Any] = {}
    if args.cv.is_file():
        cv = json.loads(args.cv.read_text(encoding="utf-8"))
        if cv.get("recipe", {}).get("name") != recipe.name:
            log.warning("%s is for recipe %r, not %r: its temperature and threshold are not used", args.cv,
                        cv.get("recipe", {}).get("name"), recipe.name)
            cv = {}
    temperature = float(cv.get("temperature", 1.0))
    threshold = float(cv.get("threshold", 0.6))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    t0 = time.time()
    root = digits_dir()
    if not (root / "labels.csv").is_file():
        log.error("no digit data at %s (set METER_SHARED_DIR to the folder holding data/digits)", root)
        return 2
    pool, real_files = load_pool(root, recipe, limit=args.limit)
    sim = simulated_crops(recipe.sim, recipe.sim_seed)
    pool.extend(sim)
    log.info("training on %d real + %d simulated crops (%.0fs)", len(real_files), len(sim), time.time() - t0)
    model = fit(pool, recipe, threads=args.threads)

    # Calibrate the int8 ranges on clean, un-augmented crops from every group.
    rng = np.random.default_rng(recipe.seed)
    weights = sampling_weights(pool.groups, pool.values)
    cal_idx = rng.choice(len(pool), size=min(600, len(pool)), replace=False, p=weights)
    calibration = to_model_input([pool.images[i] for i in cal_idx], WIDTH, HEIGHT, COLOR)
    from training.export import device_int8, write_model

    tflite, normalize = device_int8(model, temperature, calibration)
    fp = fingerprint(root, real_files, extra=f"sim:{len(sim)}:seed{recipe.sim_seed}:recipe:{recipe.describe()}")
    keep = ("evaluated", "folds", "groups", "water", "all", "temperature", "threshold", "epochs")
    summary: dict[str, Any] = {k: cv[k] for k in keep if k in cv}
    sidecar = sidecar_for(recipe, temperature=temperature, threshold=threshold, fp=fp, n_real=len(real_files),
                          n_sim=len(sim), params=int(model.count_params()), seconds=time.time() - t0,
                          tf_version=tf.__version__, cv=summary, normalize=normalize)
    path = write_model(args.out, tflite, sidecar)

    # A check that the int8 file reads through the device code (on crops it trained on: not a measure).
    from meter_vision.infer.model import DigitModel

    val = load_split("val", root=root, limit=args.val_limit, seed=recipe.seed)
    preds = DigitModel(path).classify(val.images)
    seen = summarize(outcome_arrays([p.digit for p in preds], [p.value for p in preds], val.values))
    log.info("int8 through the device code on val (seen in training, a check not a measure): %s",
             {k: round(v, 4) for k, v in seen.items()})
    log.info("wrote %s (%d bytes) in %.0fs", path, len(tflite), time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
