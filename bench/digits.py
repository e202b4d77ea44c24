"""Digit benchmark: our model against the public anchor models, on meters it has never seen.

    python -m bench.digits [--model models/digits.tflite] [--out bench-out] [--threads 1]

The judgement is the grouped cross-validation of the shipped recipe (``training/cv_oof.csv``, made by
``python -m training.cv --int8``): for each left-out meter, what the model trained without it read
there, int8 through the device code. The anchors read the same crops here (they were trained on most
of them, so their figures flatter them). Speed and size are measured on the shipped model file.

Every model runs in this process on the same runtime (ai_edge_litert) with the same thread count.
Each anchor gets its own preprocessing (PIL bicubic resize to 20x32, RGB float 0..255, as its
training code did) and decoding (from ``../shared/anchors/README.md``); ours goes through the device
code (``meter_vision.infer``). Writes a contact sheet of our errors and a confusion matrix into ``--out``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from meter_vision.infer.backends import create_interpreter
from meter_vision.infer.model import DigitModel, bundled_model_path
from training.data import DigitSet, digits_dir, load_split, shared_dir
from training.metrics import outcome_arrays, summarize

Pred = tuple[int | None, float | None]  # (digit or None for N, position or None)
CV_OOF = Path(__file__).resolve().parents[1] / "training" / "cv_oof.csv"
MIN_GROUP = 20  # smaller groups are listed but not the "worst" (one crop is 5 %)


@dataclass
class Runner:
    """One model as the benchmark drives it."""

    name: str
    path: Path
    prepare: Callable[[Sequence[np.ndarray]], np.ndarray]  # BGR crops -> model-ready float batch
    run: Callable[[np.ndarray], np.ndarray]  # float batch (any size) -> outputs, one invoke
    decode: Callable[[np.ndarray], list[Pred]]
    results: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- anchors


def pil_input(crops: Sequence[np.ndarray]) -> np.ndarray:
    """The anchors' training preprocessing: PIL bicubic resize to 20x32, RGB, float 0..255."""
    from PIL import Image

    out = np.empty((len(crops), 32, 20, 3), np.float32)
    for i, c in enumerate(crops):
        rgb = c[:, :, ::-1] if c.ndim == 3 else np.repeat(c[:, :, None], 3, axis=2)
        img = Image.fromarray(np.ascontiguousarray(rgb)).resize((20, 32), Image.Resampling.BICUBIC)
        out[i] = np.asarray(img, np.float32)
    return out


def decode_class11(out: np.ndarray) -> list[Pred]:
    """argmax; class 10 is N. An all-equal output (these models give one on many val crops, in every
    TFLite op resolver) says nothing, so it counts as N rather than as a confident 0."""
    preds: list[Pred] = []
    for row in out:
        k = int(row.argmax())
        flat = float(row.max() - row.min()) < 1e-6
        preds.append((None, None) if (k == 10 or flat) else (k, float(k)))
    return preds


def decode_class100(out: np.ndarray) -> list[Pred]:
    return [(int(k) // 10, int(k) / 10.0) for k in out.argmax(axis=1)]


def decode_cont(out: np.ndarray, good: float = 0.5) -> list[Pred]:
    preds: list[Pred] = []
    for p in out:
        n = int(p.argmax())
        up, down = p[(n + 1) % 10], p[(n - 1) % 10]
        if up > down:
            value, fit = n + up / (p[n] + up), p[n] + up
        else:
            value, fit = n - down / (p[n] + down), p[n] + down
        value = float(value) % 10.0
        preds.append((None, None) if fit < good else (math.floor(value) % 10, value))
    return preds


def anchor_runner(path: Path, threads: int | None) -> Runner | None:
    name = path.stem.removesuffix("_q")
    if "class100" in name:
        decode: Callable[[np.ndarray], list[Pred]] = decode_class100
    elif "class11" in name:
        decode = decode_class11
    elif "cont" in name:
        decode = decode_cont
    else:
        return None
    interp, _ = create_interpreter(path, backend="ai_edge_litert", num_threads=threads)
    state = {"batch": 1}
    inp, outd = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape[0] != state["batch"]:
            interp.resize_tensor_input(inp["index"], list(x.shape))
            interp.allocate_tensors()
            state["batch"] = x.shape[0]
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return np.asarray(interp.get_tensor(outd["index"]))

    return Runner(name, path, pil_input, run, decode)


def our_runner(path: Path, threads: int | None) -> tuple[Runner, DigitModel]:
    model = DigitModel(path, backend="ai_edge_litert", num_threads=threads)

    def decode(probs: np.ndarray) -> list[Pred]:
        return [(p.digit, p.value if p.digit is not None else None) for p in model.decode(probs)]

    return Runner(f"ours {model.model_id}", path, model.prepare, model.probabilities, decode), model


# ---------------------------------------------------------------- measuring


def predict(r: Runner, crops: Sequence[np.ndarray], chunk: int = 64) -> list[Pred]:
    x = r.prepare(crops)
    preds: list[Pred] = []
    for i in range(0, len(x), chunk):
        preds.extend(r.decode(r.run(x[i : i + chunk])))
    return preds


def time_us(fn: Callable[[], object], reps: int) -> float:
    for _ in range(max(3, reps // 10)):
        fn()
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - t) / reps * 1e6)
    return min(samples)


def timing(r: Runner, x8: np.ndarray, reps: int) -> dict[str, float]:
    """Inference only (preprocessing excluded, the same for every model): batch 1, 8 singles, batch 8."""
    singles = [x8[i : i + 1] for i in range(8)]
    r.run(singles[0])
    one = time_us(lambda: r.run(singles[0]), reps)

    def eight_singles() -> None:
        for s in singles:
            r.run(s)

    eight = time_us(eight_singles, reps // 4)
    r.run(x8)
    batched = time_us(lambda: r.run(x8), reps // 4)
    r.run(singles[0])
    return {"one_us": one, "eight_single_us": eight, "batch8_us": batched}


def outcomes_for(preds: list[Pred], truth: Sequence[float]) -> dict[str, np.ndarray]:
    return outcome_arrays([d for d, _ in preds], [v for _, v in preds], truth)


# ---------------------------------------------------------------- pictures


def contact_sheet(path: Path, crops: list[np.ndarray], captions: list[str], title: str, cols: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(crops))
    cols = min(cols, max(n, 4))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.55 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, crops, captions, strict=False):
        ax.imshow(img[:, :, ::-1])
        ax.set_title(cap, fontsize=6.5)
    if not crops:
        axes[0, 0].text(0, 0.5, "no errors", fontsize=10)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def confusion_picture(path: Path, true_labels: Sequence[int], preds: Sequence[int | None], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.zeros((10, 11), int)
    for t, p in zip(true_labels, preds, strict=True):
        m[t, 10 if p is None else p] += 1
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(np.log1p(m), cmap="Blues")
    for i in range(10):
        for j in range(11):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 3 else "black")
    ax.set_xticks(range(11), [*map(str, range(10)), "N"])
    ax.set_yticks(range(10), [str(i) for i in range(10)])
    ax.set_xlabel("predicted digit (floor of position)")
    ax.set_ylabel("true digit (floor of label)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---------------------------------------------------------------- main


def pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.2f}%"


@click.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Our model [default: the bundled models/digits.tflite].")
@click.option("--anchors", "anchors_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of anchor .tflite files [default: ../shared/anchors].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-out"),
              show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Interpreter threads, every model.")
@click.option("--reps", type=int, default=400, show_default=True, help="Timing repetitions.")
@click.option("--sim", "sim_n", type=int, default=1000, show_default=True,
              help="Fresh simulated crops to read as an extra line (0: skip).")
@click.option("--sim-seed", type=int, default=424242, show_default=True)
@click.option("--cv", "cv_path", type=click.Path(dir_okay=False, path_type=Path), default=CV_OOF, show_default=True,
              help="Out-of-fold predictions of the shipped recipe (python -m training.cv --int8).")
def main(model_path: Path | None, anchors_dir: Path | None, out_dir: Path, threads: int, reps: int,
         sim_n: int, sim_seed: int, cv_path: Path) -> None:
    """Benchmark our digit model against the anchors on meters it has never seen, and time them."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    root = digits_dir()
    if not (root / "labels.csv").is_file():
        raise click.ClickException(f"no digit data at {root} (set METER_SHARED_DIR)")
    anchors_dir = anchors_dir or shared_dir() / "anchors"
    out_dir.mkdir(parents=True, exist_ok=True)
    val = load_split("val", root=root, with_n=True)
    truth = val.values

    ours, our_model = our_runner(model_path or bundled_model_path(), threads)
    runners = [ours]
    for p in sorted(anchors_dir.glob("*.tflite")):
        a = anchor_runner(p, threads)
        if a is not None:
            runners.append(a)

    x8_source = val.images[:8]
    for r in runners:
        preds = predict(r, val.images)
        oc = outcomes_for(preds, truth)
        r.results = {"preds": preds, "outcomes": oc, "summary": summarize(oc), "bytes": r.path.stat().st_size}
    for _ in range(2):  # two interleaved rounds, keep the faster: less noise from a busy machine
        for r in runners:
            t = timing(r, r.prepare(x8_source), reps)
            old = r.results.get("timing")
            r.results["timing"] = t if old is None else {k: min(v, old[k]) for k, v in t.items()}

    anchors = runners[1:]
    best = max(anchors, key=lambda r: (r.results["summary"]["right"], -r.results["summary"]["wrong_confident"]))
    cv_summary = cv_table(console, cv_path, anchors, root)

    table = Table(title=f"Shared val ({len(val)} crops, 5 meters; ours trained on them since v2, the anchors on "
                        f"most: speed and size are the point here), ai_edge_litert, {threads} thread(s)")
    for col in ("model", "right", "strict floor", "±0.1", "held N", "wrong confident", "1 image µs",
                "8 singles µs", "batch 8 µs", "size KB"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in runners:
        s, t = r.results["summary"], r.results["timing"]
        name = r.name + (" (best anchor)" if r is best else "")
        table.add_row(name, pct(s["right"]), pct(s["strict"]), pct(s["within"]), pct(s["held"]),
                      pct(s["wrong_confident"]), f"{t['one_us']:.1f}", f"{t['eight_single_us']:.1f}",
                      f"{t['batch8_us']:.1f}", f"{r.results['bytes'] / 1000:.1f}")
    so, sb = ours.results["summary"], best.results["summary"]
    to, tb = ours.results["timing"], best.results["timing"]
    ratios = {
        "right": so["right"] / sb["right"],
        "wrong_confident": (so["wrong_confident"] / sb["wrong_confident"]) if sb["wrong_confident"] else float("nan"),
        "frame_time": to["batch8_us"] / tb["eight_single_us"],
        "one_image_time": to["one_us"] / tb["one_us"],
        "size": ours.results["bytes"] / best.results["bytes"],
    }
    table.add_section()
    table.add_row(f"ratio ours / {best.name}", f"{ratios['right']:.4f}", "", "", "",
                  f"{ratios['wrong_confident']:.2f}", f"{ratios['one_image_time']:.2f}", "",
                  f"{ratios['frame_time']:.2f}*", f"{ratios['size']:.2f}")
    console.print(table)
    console.print(f"* frame time: ours, one batched call of 8 = {to['batch8_us']:.1f} µs, vs {best.name}, "
                  f"8 single calls = {tb['eight_single_us']:.1f} µs  (ratio {ratios['frame_time']:.2f}; "
                  f"target ≤ 1, aim 0.25). Inference only; decoding and resizing excluded.")

    types = sorted(set(val.meter_types))
    by_type = Table(title="right (and wrong confident) by meter type, val")
    by_type.add_column("model")
    for mt in types:
        by_type.add_column(f"{mt} (n={sum(t == mt for t in val.meter_types)})", justify="right")
    for r in runners:
        cells = []
        for mt in types:
            sel = np.array([t == mt for t in val.meter_types])
            s = summarize({k: v[sel] for k, v in r.results["outcomes"].items()})
            cells.append(f"{pct(s['right'])} ({pct(s['wrong_confident'])})")
        by_type.add_row(r.name, *cells)
    console.print(by_type)

    sim_summary = simulated_line(console, runners, sim_n, sim_seed)
    trouble = trouble_table(console, [ours, best], val.images, truth)

    # pictures of our mistakes
    oc = ours.results["outcomes"]
    bad = np.flatnonzero(~oc["right"])
    probs = our_model.probabilities(our_model.prepare([val.images[i] for i in bad])) if len(bad) else None
    caps, imgs = [], []
    for j, i in enumerate(bad[:144]):
        d, v = ours.results["preds"][i]
        conf = float(our_model.decode(probs[j : j + 1])[0].confidence) if probs is not None else 0.0
        got = "N" if d is None else f"{v:.1f}"
        caps.append(f"true {truth[i]:.1f}\nread {got} p{conf:.2f}")
        imgs.append(val.images[i])
    contact_sheet(out_dir / "digits_errors.png", imgs, caps,
                  f"{ours.name}: {len(bad)} of {len(val)} val crops not right (N or wrong)")
    labels = [math.floor(v + 1e-6) % 10 for v in truth]
    confusion_picture(out_dir / "digits_confusion.png", labels, [d for d, _ in ours.results["preds"]],
                      f"{ours.name} on val: true digit vs predicted digit")
    report = {
        "val_crops": len(val),
        "threads": threads,
        "best_anchor": best.name,
        "models": {r.name: {**r.results["summary"], **r.results["timing"], "bytes": r.results["bytes"]}
                   for r in runners},
        "ratios_ours_over_best_anchor": ratios,
        "cross_validated": cv_summary,
        "simulated": sim_summary,
        "trouble": trouble,
    }
    (out_dir / "digits.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out_dir / 'digits_errors.png'}, {out_dir / 'digits_confusion.png'}, "
                  f"{out_dir / 'digits.json'}")


def cv_table(console: Any, cv_path: Path, anchors: list[Runner], root: Path) -> dict[str, Any]:
    """Per left-out meter: ours out of fold (each crop read by the fold model that never saw its meter)
    beside the anchors on the same crops; then mean and worst group, water meters apart."""
    import csv

    from rich.table import Table

    from meter_vision.infer.preprocess import decode_image

    if not cv_path.is_file():
        console.print(f"[yellow]no cross-validation result at {cv_path}: run python -m training.cv --int8[/]")
        return {}
    with open(cv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    images = [decode_image((root / r["file"]).read_bytes()) for r in rows]
    truth = [float(r["truth"]) for r in rows]
    groups = np.array([r["group"] for r in rows])
    ours = outcome_arrays([None if r["digit"] == "N" else int(r["digit"]) for r in rows],
                          [float(r["value"]) for r in rows], truth)
    models: dict[str, dict[str, np.ndarray]] = {"ours (out of fold)": ours}
    for a in anchors:
        models[a.name] = outcomes_for(predict(a, images), truth)
    names = sorted(set(groups), key=lambda g: (not g.startswith("watermeter/"), g))
    t = Table(title=f"Meters never seen in training: grouped cross-validation ({len(rows)} crops, {len(names)} "
                    "meters/groups); right / held N / wrong confident. Anchors: same crops, but they were trained on "
                    "most of them")
    t.add_column("meter or group")
    t.add_column("n", justify="right")
    for name in models:
        t.add_column(name, justify="right")
    per: dict[str, dict[str, dict[str, float]]] = {m: {} for m in models}
    for g in names:
        sel = groups == g
        cells = []
        for m, oc in models.items():
            s = summarize({k: v[sel] for k, v in oc.items()})
            per[m][g] = s
            cells.append(f"{pct(s['right'])} / {pct(s['held'])} / {pct(s['wrong_confident'])}")
        t.add_row(g, str(int(sel.sum())), *cells)
    out: dict[str, Any] = {"n": len(rows), "groups": {m: per[m] for m in per}}
    t.add_section()
    for label, keep in (("water meters", lambda g: g.startswith("watermeter/")), ("all groups", lambda g: True)):
        sel_groups = [g for g in names if keep(g)]
        big = [g for g in sel_groups if (groups == g).sum() >= MIN_GROUP]
        mean_cells, worst_cells = [], []
        for m in models:
            mean = {k: float(np.mean([per[m][g][k] for g in sel_groups])) for k in ("right", "held", "wrong_confident")}
            worst = {"right": min(per[m][g]["right"] for g in big), "held": max(per[m][g]["held"] for g in big),
                     "wrong_confident": max(per[m][g]["wrong_confident"] for g in big)}
            out.setdefault(label, {})[m] = {"mean": mean, "worst": worst}
            mean_cells.append(f"{pct(mean['right'])} / {pct(mean['held'])} / {pct(mean['wrong_confident'])}")
            worst_cells.append(f"{pct(worst['right'])} / {pct(worst['held'])} / {pct(worst['wrong_confident'])}")
        t.add_row(f"{label}: mean of groups", "", *mean_cells)
        t.add_row(f"{label}: worst group (n≥{MIN_GROUP})", "", *worst_cells)
    console.print(t)
    console.print("worst group: lowest right, highest held and highest wrong confident, each over the groups "
                  f"with at least {MIN_GROUP} crops. Targets for ours on water meters: right ≥ 99.5 %, wrong "
                  "confident ≤ 0.1 %, held ≤ 2 %.")
    return out


def _occlude(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h = img.shape[0]
    out = img.copy()
    y = int(h * rng.uniform(0.2, 0.4))
    out[y : y + int(h * 0.45), :] = rng.integers(0, 256, 3)
    return out


def _glare(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    cy, r = h / 2 + rng.uniform(-h / 6, h / 6), 0.35 * h
    spot = 400 * np.exp(-((yy - cy) ** 2 + (xx - w / 2) ** 2) / (2 * r * r))
    return np.clip(img.astype(np.float32) + spot[:, :, None], 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), img.shape[0] / 10)


def _half_off(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The window 35-65 % of its width beside the digit (a misplaced layout): half of it and half of
    its neighbour (here the same crop again, as neighbouring wheels look alike)."""
    from training.augment import straddle

    return straddle(img, img, rng)


TROUBLE: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "bar over the middle": _occlude,
    "glare": _glare,
    "out of focus": _blur,
    "window half a digit off": _half_off,
}


def trouble_table(
    console: Any, runners: list[Runner], images: list[np.ndarray], truth: Sequence[float]
) -> dict[str, Any]:
    """Val crops made unreadable on purpose: a model should hold them back (N), not guess."""
    from rich.table import Table

    t = Table(title="sanity check: val crops made unreadable (held N / wrong confident); training saw similar "
                    "synthetic damage, so this is no field measure")
    t.add_column("model")
    for name in TROUBLE:
        t.add_column(name, justify="right")
    out: dict[str, Any] = {}
    for r in runners:
        cells = []
        for name, fn in TROUBLE.items():
            rng = np.random.default_rng(5)
            s = summarize(outcomes_for(predict(r, [fn(c, rng) for c in images]), truth))
            out.setdefault(r.name, {})[name] = s
            cells.append(f"{pct(s['held'])} / {pct(s['wrong_confident'])}")
        t.add_row(r.name, *cells)
    console.print(t)
    return out


def simulated_line(console: Any, runners: list[Runner], n: int, seed: int) -> dict[str, Any]:
    """Read fresh simulated crops (a seed training never used): the demo's frames must read too."""
    if n <= 0:
        return {}
    try:
        from edge.capture.simulator import digit_crops  # type: ignore[attr-defined]
    except ImportError as exc:
        console.print(f"[yellow]simulated crops skipped: field simulator not importable ({exc})[/]")
        return {"skipped": str(exc)}
    pairs = digit_crops(n, seed)
    sim = DigitSet(images=[c for c, _ in pairs], values=[float(v) % 10.0 for _, v in pairs])
    from rich.table import Table

    t = Table(title=f"extra: {len(sim)} fresh simulated crops (edge.capture.simulator.digit_crops, seed {seed}); "
                    "not part of the judgement")
    for col in ("model", "right", "strict floor", "±0.1", "held N", "wrong confident"):
        t.add_column(col, justify="left" if col == "model" else "right")
    out: dict[str, Any] = {"n": len(sim), "seed": seed}
    for r in runners:
        s = summarize(outcomes_for(predict(r, sim.images), sim.values))
        out[r.name] = s
        t.add_row(r.name, pct(s["right"]), pct(s["strict"]), pct(s["within"]), pct(s["held"]),
                  pct(s["wrong_confident"]))
    console.print(t)
    return out


if __name__ == "__main__":
    main()
