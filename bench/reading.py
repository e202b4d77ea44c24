"""Reading benchmark: the whole chain (align, crop, classify, assemble) on simulated weeks and real photos.

    python -m bench.reading [--days 7] [--step-min 60] [--seeds 0,1] [--mix default,heavy] [--model PATH]

For each (seed, fault mix) a simulated household's meter is photographed every ``--step-min`` minutes
for ``--days`` days (frames JPEG-encoded at quality 90, as ``meter-edge simulate`` writes them) and read
frame after frame with the state carried, as the device does. Counted:

* ok-but-wrong: ``status: ok`` with a value more than one step of the lowest wheel away from the meter's
  true position (the lowest wheel is always between two digits; either neighbour is what the meter
  shows). Target 0.
* ok share of fault-free frames (no camera fault drawn). Target >= 95 %.
* what happened to frames with faults (ok / suspect / error), and every rule that decided.
* time per frame per stage (median and mean, ms) and each stage's share of the total.

Then the real AI-on-the-edge demo photos (``../shared/data/frames/ai-on-the-edge-demo``, 5 integer wheels)
when present: the integer part must be right, or the frame held as suspect with a reason.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import click
import cv2
import numpy as np

from edge.pipeline import STAGES, FramePipeline
from edge.reading.model import Decision, ReadingState
from edge.reading.rules import Rules

SIM_START = datetime(2025, 1, 6, tzinfo=UTC)
JPEG_QUALITY = 90


@dataclass
class FrameRecord:
    taken_at: datetime
    truth: float
    tags: tuple[str, ...]
    decision: Decision
    timings: dict[str, float]


@dataclass
class SequenceResult:
    records: list[FrameRecord] = field(default_factory=list)

    def ok_wrong(self, step: float) -> list[FrameRecord]:
        return [r for r in self.records
                if r.decision.status == "ok" and abs(float(Decimal(r.decision.value or "0")) - r.truth) >= step - 1e-9]

    def clean(self) -> list[FrameRecord]:
        return [r for r in self.records if not r.tags]

    def ok_share_clean(self) -> float:
        clean = self.clean()
        return sum(r.decision.status == "ok" for r in clean) / max(len(clean), 1)

    def statuses(self, faulty: bool | None = None) -> Counter[str]:
        return Counter(r.decision.status for r in self.records if faulty is None or bool(r.tags) == faulty)

    def rules(self) -> Counter[str]:
        return Counter(r.decision.rule for r in self.records)


def sim_pipeline(classifier: object, work_dir: Path, rules: Rules | None = None) -> FramePipeline:
    """A pipeline calibrated on the simulator's reference frame (8 wheels, 3 decimals)."""
    from edge.calibrate.layout import Layout, parse_rois, save_layout
    from edge.capture.simulator import SIM_ROIS, render_reference

    work_dir.mkdir(parents=True, exist_ok=True)
    ref = work_dir / "reference.png"
    cv2.imwrite(str(ref), render_reference())
    path = save_layout(Layout(reference_image=ref, digits=parse_rois(SIM_ROIS), decimals=3), work_dir / "layout.toml")
    pipe = FramePipeline.from_files(path, classifier)  # type: ignore[arg-type]
    if rules is not None:
        pipe.rules = rules
    return pipe


def simulated_frames(days: float, step_min: float, seed: int, mix: str,
                     start: datetime = SIM_START) -> Iterator[tuple[datetime, float, tuple[str, ...], np.ndarray]]:
    """(taken_at, true value, fault tags, BGR frame) of a simulated household meter, JPEG round-tripped."""
    from edge.capture.simulator import FaultMix, Household, render_frame, sample_faults

    house = Household(seed=seed, start=start)
    rng = np.random.default_rng([seed, 7])
    faults_mix = FaultMix.named(mix)
    n = int(days * 24 * 60 / step_min)
    for i in range(1, n + 1):
        t = start + timedelta(minutes=step_min * i)
        value = house.value_at(t)
        faults = sample_faults(faults_mix, rng)
        img = render_frame(value, faults, rng)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        decoded = cv2.imdecode(jpg, cv2.IMREAD_COLOR) if ok else None
        yield t, value, faults.tags, img if decoded is None else decoded


def run_sequence(pipe: FramePipeline, days: float, step_min: float, seed: int, mix: str,
                 start_value: str | None = "123.456", progress: object | None = None) -> SequenceResult:
    """Read a simulated sequence frame after frame; the installer set ``start_value`` at the start."""
    state = ReadingState()
    if start_value is not None:
        state = ReadingState(previous=Decimal(start_value), previous_at=SIM_START)
    out = SequenceResult()
    for t, value, tags, img in simulated_frames(days, step_min, seed, mix):
        r = pipe.process(img, t, state)
        state = r.state
        out.records.append(FrameRecord(t, value, tags, r.decision, r.timings))
        if progress is not None:
            progress()  # type: ignore[operator]
    return out


def demo_frames_result(pipe_factory: object, shared: Path) -> list[tuple[str, str, str | None, str | None]]:
    """Read the AI-on-the-edge demo photos in order: (file, status, value, reason) per frame."""
    import tempfile

    from edge.calibrate.examples import aiotedge_demo_layout

    demo = shared / "frames" / "ai-on-the-edge-demo"
    names = (demo / "files.txt").read_text().split()
    with tempfile.TemporaryDirectory() as tmp:
        layout = aiotedge_demo_layout(demo, Path(tmp) / "layout.toml")
        pipe: FramePipeline = pipe_factory(layout)  # type: ignore[operator]
        state = ReadingState()
        t = datetime(2024, 10, 6, 12, tzinfo=UTC)
        out: list[tuple[str, str, str | None, str | None]] = []
        for i, name in enumerate(names):
            img = cv2.imread(str(demo / name))
            r = pipe.process(img, t + timedelta(hours=i), state)
            state = r.state
            out.append((name, r.decision.status, r.decision.value, r.decision.reason))
    return out


def shared_data_dir() -> Path | None:
    """../shared/data beside the repository (METER_SHARED_DIR overrides), or None."""
    import os

    root = Path(os.environ.get("METER_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    data = root / "data"
    return data if data.is_dir() else None


def stage_table(records: list[FrameRecord]) -> list[tuple[str, float, float, float]]:
    """(stage, median ms, mean ms, share of the mean total) over frames that went through every stage."""
    full = [r for r in records if r.timings.get("infer", 0) > 0]
    if not full:
        return []
    total = sum(statistics.fmean(r.timings[s] for r in full) for s in STAGES)
    rows = []
    for s in STAGES:
        vals = [r.timings[s] * 1000 for r in full]
        rows.append((s, statistics.median(vals), statistics.fmean(vals), statistics.fmean(vals) / 1000 / total))
    return rows


@click.command()
@click.option("--days", type=float, default=7.0, show_default=True, help="Simulated days per sequence.")
@click.option("--step-min", type=float, default=60.0, show_default=True, help="Minutes between frames.")
@click.option("--seeds", default="0,1", show_default=True, help="Household/fault seeds, comma-separated.")
@click.option("--mix", default="default,heavy", show_default=True, help="Fault mixes: default, none, heavy.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Digit model [default: the bundled one].")
@click.option("--show-wrong/--no-show-wrong", default=True, show_default=True, help="List ok-but-wrong frames.")
def main(days: float, step_min: float, seeds: str, mix: str, model_path: Path | None, show_wrong: bool) -> None:
    """Whole-chain reading benchmark on simulated weeks with faults, and on the real demo photos."""
    import tempfile

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from edge.infer import DigitModel

    console = Console() if sys.stdout.isatty() else Console(width=150)
    model = DigitModel(model_path)
    mixes = [m.strip() for m in mix.split(",") if m.strip()]
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    results: dict[tuple[int, str], SequenceResult] = {}
    per_seq = int(days * 24 * 60 / step_min)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = sim_pipeline(model, Path(tmp) / "sim")
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("simulated frames", total=per_seq * len(mixes) * len(seed_list))
            for m in mixes:
                for s in seed_list:
                    results[(s, m)] = run_sequence(pipe, days, step_min, s, m,
                                                   progress=lambda: bar.advance(task))
    step = float(pipe.rules.step)

    table = Table(title=f"Simulated sequences: {days:g} days, a frame every {step_min:g} min, model {model.model_id}")
    for col in ("seed", "faults", "frames", "fault-free", "fault-free ok", "ok-but-wrong", "ok / suspect / error",
                "with faults: ok / suspect / error"):
        table.add_column(col, justify="right")
    all_records: list[FrameRecord] = []
    total_wrong = 0
    for (s, m), res in results.items():
        all_records += res.records
        wrong = res.ok_wrong(step)
        total_wrong += len(wrong)
        st, fst = res.statuses(), res.statuses(faulty=True)
        table.add_row(str(s), m, str(len(res.records)), str(len(res.clean())), f"{res.ok_share_clean():.1%}",
                      str(len(wrong)), f"{st['ok']} / {st['suspect']} / {st['error']}",
                      f"{fst['ok']} / {fst['suspect']} / {fst['error']}")
    console.print(table)
    clean = [r for r in all_records if not r.tags]
    share = sum(r.decision.status == "ok" for r in clean) / max(len(clean), 1)
    console.print(f"ok-but-wrong: [bold]{total_wrong}[/] (target 0); fault-free frames ok: [bold]{share:.2%}[/] "
                  f"of {len(clean)} (target >= 95 %)")
    rules = Counter(r.decision.rule for r in all_records)
    console.print("rules that decided: " + ", ".join(f"{k} {v}" for k, v in rules.most_common()))
    not_ok = Counter(r.decision.rule for r in clean if r.decision.status != "ok")
    console.print("fault-free frames not ok, by rule: " + (", ".join(f"{k} {v}" for k, v in not_ok.most_common())
                                                            or "none"))
    if show_wrong:
        for (s, m), res in results.items():
            for r in res.ok_wrong(step):
                console.print(f"  WRONG seed {s} {m} {r.taken_at:%Y-%m-%d %H:%M} truth {r.truth:.4f} "
                              f"read {r.decision.value} ({r.decision.rule}) faults {r.tags} "
                              f"digits {r.decision.digits()}")

    t = Table(title="Time per frame by stage (frames that reached the model)")
    for col in ("stage", "median ms", "mean ms", "share"):
        t.add_column(col, justify="right")
    for name, med, mean, sh in stage_table(all_records):
        t.add_row(name, f"{med:.2f}", f"{mean:.2f}", f"{sh:.1%}")
    console.print(t)
    rows = stage_table(all_records)
    if rows:
        base = rows[STAGES.index("infer")][2]
        console.print("ratio to infer: " + ", ".join(f"{n} {mean / base:.1f}x" for n, _, mean, _ in rows))

    shared = shared_data_dir()
    demo = shared / "frames" / "ai-on-the-edge-demo" if shared else None
    if demo is None or not (demo / "files.txt").is_file():
        console.print("real demo photos: skipped (../shared/data/frames/ai-on-the-edge-demo not found)")
        return
    out = demo_frames_result(lambda lay: FramePipeline.from_files(lay, model), demo.parents[1])
    dt = Table(title="AI-on-the-edge demo photos (5 integer wheels; decimals on dials, not read)")
    for col in ("frame", "true integer", "status", "value", "right", "reason"):
        dt.add_column(col)
    right = 0
    for name, status, value, reason in out:
        true_int = int(float(Path(name).stem))
        good = status == "ok" and value is not None and int(value) == true_int
        held = status != "ok" and bool(reason)
        right += good
        dt.add_row(name, str(true_int), status, str(value), "yes" if good else ("held" if held else "NO"),
                   reason or "")
    console.print(dt)
    console.print(f"demo photos: {right} of {len(out)} ok and right; "
                  f"{sum(1 for _, s, _, _ in out if s != 'ok')} held; "
                  f"{sum(1 for n, s, v, _ in out if s == 'ok' and int(v or -1) != int(float(Path(n).stem)))} wrong")
    if total_wrong:
        sys.exit(1)


if __name__ == "__main__":
    main()
