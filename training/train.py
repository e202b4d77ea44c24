"""Train the digit model, export it to int8 TFLite with its sidecar, and evaluate the int8 model.

    python -m training.train --out models/            # the shipped model (5-10 min on 2 cores)
    python -m training.train --out /tmp/m --epochs 1 --limit 500   # a smoke run

Judged on the shared ``val`` split only (whole meters that are not in ``train``); simulated crops,
when the field simulator is installed, go into training only.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge.infer.preprocess import to_model_input
from training.augment import augmented_batch, destroy
from training.data import DigitSet, digits_dir, fingerprint, load_split, sampling_weights, soft_targets
from training.metrics import outcome_arrays, summarize

log = logging.getLogger("training")

WIDTH, HEIGHT, CLASSES, COLOR = 20, 32, 100, "RGB"
MODEL_ID = "digits-c100-v1"
SIM_GROUP = "simulator"


def simulated_crops(n: int, seed: int) -> DigitSet:
    """Digit crops cut from the field simulator's frames, if the simulator is installed."""
    out = DigitSet()
    if n <= 0:
        return out
    try:
        from edge.capture.simulator import digit_crops  # type: ignore[attr-defined]
    except ImportError as exc:
        log.warning("field simulator not available (%s): training on real crops only", exc)
        return out
    for i, (img, value) in enumerate(digit_crops(n, seed)):
        v = float(value) % 10.0
        out.images.append(img)
        out.values.append(round(v, 1) % 10.0)
        out.labels.append(str(int(np.floor(v + 1e-6)) % 10))
        out.kinds.append("sim")
        out.groups.append(SIM_GROUP)
        out.meter_types.append(SIM_GROUP)
        out.files.append(f"sim:{seed}:{i}")
    return out


def batches(
    data: DigitSet, probs: np.ndarray, targets: np.ndarray, steps: int, batch: int, seed: int, trouble: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Augmented, group-balanced batches made in a background thread (OpenCV releases the GIL).

    A share ``trouble`` of each batch is made unreadable (:func:`destroy`) and gets a flat target.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=6)
    flat = np.full(targets.shape[1], 1.0 / targets.shape[1], np.float32)

    def work() -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(steps):
                idx = rng.choice(len(data), size=batch, p=probs)
                bad = rng.random(batch) < trouble
                crops = [destroy(data.images[i], rng) if b else data.images[i] for i, b in zip(idx, bad, strict=True)]
                x = augmented_batch(crops, rng, WIDTH, HEIGHT, COLOR)
                y = targets[idx].copy()
                y[bad] = flat
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


def predict_positions(model: Any, x: np.ndarray) -> tuple[list[int | None], list[float]]:
    from edge.infer.decode import decode_positions, position_to_reading

    probs = model.predict(x, batch_size=256, verbose=0)
    pos, _ = decode_positions(probs)
    readings = [position_to_reading(float(p), CLASSES) for p in pos]
    return [d for _, d in readings], [v for v, _ in readings]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models"), help="folder for digits.tflite + digits.json")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--limit", type=int, default=None, help="use a random subset of N train crops (smoke runs)")
    ap.add_argument("--val-limit", type=int, default=None, help="use a random subset of N val crops")
    ap.add_argument("--sim", type=int, default=8000, help="simulated crops to add to training (0: none)")
    ap.add_argument("--sim-seed", type=int, default=7)
    ap.add_argument("--trouble", type=float, default=0.03, help="share of each batch made unreadable, flat target")
    ap.add_argument("--threshold", type=float, default=0.6, help="confidence under which a digit is N")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--filters", default="24,48,64")
    ap.add_argument("--dense", type=int, default=192)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf  # type: ignore[import-untyped]
    from tqdm import tqdm

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)
    t0 = time.time()

    root = digits_dir()
    if not (root / "labels.csv").is_file():
        log.error("no digit data at %s (set METER_SHARED_DIR to the folder holding data/digits)", root)
        return 2
    train = load_split("train", root=root, limit=args.limit, seed=args.seed)
    val = load_split("val", root=root, limit=args.val_limit, seed=args.seed)
    real_files = list(train.files)
    sim = simulated_crops(args.sim, args.sim_seed)
    train.extend(sim)
    log.info("train: %d real + %d simulated crops; val: %d crops (%.0fs)", len(real_files), len(sim), len(val),
             time.time() - t0)

    values = np.asarray(train.values)
    targets = soft_targets(values, train.kinds, CLASSES)
    probs = sampling_weights(train.groups, train.values)
    x_val = to_model_input(val.images, WIDTH, HEIGHT, COLOR)
    y_val = soft_targets(np.asarray(val.values), val.kinds, CLASSES)

    filters = tuple(int(f) for f in args.filters.split(","))
    from training.model import build_model

    model = build_model(WIDTH, HEIGHT, CLASSES, filters=filters, dense=args.dense)
    steps = max(1, len(real_files) // args.batch)
    total = steps * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr / 10, decay_steps=total - min(steps, total // 4), alpha=0.01,
        warmup_target=args.lr, warmup_steps=min(steps, total // 4),
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.KLDivergence())
    log.info("model: %d parameters, filters %s, dense %d", model.count_params(), filters, args.dense)

    history = []
    for epoch in range(args.epochs):
        losses = []
        bar = tqdm(batches(train, probs, targets, steps, args.batch, args.seed + epoch, args.trouble), total=steps,
                   desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", file=sys.stderr)
        for xb, yb in bar:
            losses.append(float(model.train_on_batch(xb, yb)))
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        val_loss = float(model.evaluate(x_val, y_val, batch_size=256, verbose=0))
        digits, vals = predict_positions(model, x_val)
        m = summarize(outcome_arrays(digits, vals, val.values))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_loss": val_loss, **m})
        log.info("epoch %d: loss %.4f  val loss %.4f  right %.4f  within %.4f  strict %.4f  (%.0fs)",
                 epoch + 1, np.mean(losses), val_loss, m["right"], m["within"], m["strict"], time.time() - t0)

    # Calibrate the int8 ranges on clean, un-augmented training crops from every group.
    rng = np.random.default_rng(args.seed)
    cal_idx = rng.choice(len(train), size=min(600, len(train)), replace=False, p=probs)
    calibration = to_model_input([train.images[i] for i in cal_idx], WIDTH, HEIGHT, COLOR)
    from training.export import to_int8_tflite, write_model

    tflite = to_int8_tflite(model, calibration)
    fp = fingerprint(root, real_files, extra=f"sim:{len(sim)}:seed{args.sim_seed}")
    sidecar: dict[str, Any] = {
        "schema": 1,
        "model_id": MODEL_ID,
        "input": {"width": WIDTH, "height": HEIGHT, "channels": 3, "layout": "NHWC", "color": COLOR,
                  "value_range": [0, 255], "dtype": "int8",
                  "preprocess": "edge.infer.preprocess.to_model_input (BGR crop -> resize -> RGB float 0..255), "
                                "then quantized with the input tensor's scale/zero point"},
        "output": {"kind": "probabilities", "classes": CLASSES, "dtype": "int8",
                   "class_values": [round(k / 10, 1) for k in range(CLASSES)]},
        "decode": {"method": "circular_expectation", "window": 2,
                   "value": "argmax k, then k + sum(p[k+j]*j)/sum(p[k+j]) for j in -2..2 (indices mod 100), "
                            "divided by 10 and rounded to a tenth; digit = floor(value)",
                   "confidence": "sum of p[k+j] for j in -2..2",
                   "confidence_threshold": args.threshold},
        "training": {"data": "haverland/Tenth-of-step-of-a-meter-digit @ ebf9b2ba (Apache-2.0), split=train",
                     "data_fingerprint": fp, "train_crops": len(real_files), "simulated_crops": len(sim),
                     "epochs": args.epochs, "batch": args.batch, "seed": args.seed, "filters": list(filters),
                     "dense": args.dense, "trouble_share": args.trouble, "parameters": int(model.count_params()),
                     "tensorflow": tf.__version__, "seconds": round(time.time() - t0)},
        "metrics": {},
    }
    path = write_model(args.out, tflite, sidecar)

    # Judge the int8 model through the device code, exactly as the device will run it.
    import json

    from edge.infer.model import DigitModel

    dm = DigitModel(path)
    preds = dm.classify(val.images)
    outcomes = outcome_arrays([p.digit for p in preds], [p.value for p in preds], val.values)
    metrics = {k: round(v, 5) for k, v in summarize(outcomes).items()}
    by_type = {}
    for mt in sorted(set(val.meter_types)):
        sel = np.array([t == mt for t in val.meter_types])
        by_type[mt] = {k: round(v, 5) for k, v in summarize({k: a[sel] for k, a in outcomes.items()}).items()}
    sidecar_path = path.with_suffix(".json")
    data = json.loads(sidecar_path.read_text())
    data["metrics"] = {"split": "val (int8, device code)", **metrics, "by_meter_type": by_type,
                       "float_last_epoch": history[-1] if history else {}}
    sidecar_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    conf = np.array([p.confidence for p in preds])
    log.info("int8 on val: %s; confidence quantiles 0.1/1/5%%: %s", metrics,
             np.round(np.quantile(conf, [0.001, 0.01, 0.05]), 3) if len(conf) else [])
    log.info("wrote %s (%d bytes) in %.0fs", path, len(tflite), time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
