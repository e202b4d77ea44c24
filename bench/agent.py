"""Agent benchmark: resident memory of a running `meter-edge run`, and one cycle split by stage.

    python -m bench.agent [--cycles 40] [--rss-seconds 8]

Everything is real except the camera, which is the folder backend replaying real-size frames: the
simulator's meter rendered and scaled to 1280 × 960, the agent's default capture size (a Pi camera
frame, not the simulator's 640 × 480 and not its textures, which a device never holds). The bundled
model, a layout written by `meter-edge calibrate` on the scaled reference, the SQLite outbox
(synchronous=FULL) and a private Mosquitto with the project's config. Memory is compared with a bare
Python interpreter; each stage with the whole cycle, both measured here in the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cloud_bridge.broker import MosquittoBroker

STAGES = ("capture", "align", "infer", "assemble", "commit", "publish")
console = Console()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


FRAME_SIZE = (1280, 960)  # edge.config's capture width × height
TARGET_MIB = 100  # a Pi Zero 2 W has 512 MB for everything (issue 20)


def real_size_frames(out_dir: Path, frames: int = 12) -> tuple[Path, Path]:
    """(folder of frames, layout): the simulator's meter at the agent's capture size, JPEG as a camera
    writes it, and a layout calibrated on the scaled reference frame."""
    import cv2
    from click.testing import CliRunner

    from edge.calibrate.cli import calibrate
    from edge.capture.simulator import SIM_ROIS
    from edge.capture.simulator.cli import simulate

    raw = out_dir / "sim"
    res = CliRunner().invoke(simulate, ["--days", str(frames / 24), "--out", str(raw), "--seed", "3",
                                        "--start", "2026-11-20T00:00:00Z"])
    if res.exit_code != 0:
        raise SystemExit(f"simulate failed: {res.output}")
    folder = out_dir / "frames"
    folder.mkdir()
    for src in sorted(raw.glob("*.jpg")):
        small = cv2.imread(str(src))
        if small is None:
            raise SystemExit(f"the simulator wrote an unreadable {src}")
        img = cv2.resize(small, FRAME_SIZE, interpolation=cv2.INTER_CUBIC)
        dest = (out_dir if src.name == "reference.jpg" else folder) / src.name
        cv2.imwrite(str(dest), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    sx = FRAME_SIZE[0] / 640
    rois = ";".join(",".join(str(round(int(v) * sx)) for v in roi.split(",")) for roi in SIM_ROIS.split(";"))
    layout = out_dir / "layout.toml"
    res = CliRunner().invoke(calibrate, ["--image", str(out_dir / "reference.jpg"), "--rois", rois,
                                         "--decimals", "3", "--out", str(layout)])
    if res.exit_code != 0:
        raise SystemExit(f"calibrate failed: {res.output}")
    return folder, layout


def write_config(path: Path, *, state: Path, layout: Path, frames: Path, port: int, interval_s: float) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps({
        "device_id": "bench-agent", "state_dir": str(state), "interval_s": interval_s, "layout": str(layout),
        "telemetry_interval_s": 5, "drain_timeout_s": 3,
        "capture": {"backend": "folder", "source": str(frames), "loop": True},
        "mqtt": {"host": "127.0.0.1", "port": port},
    }))
    return path


def measure_rss(conf: Path, seconds: float) -> tuple[int, int, int]:
    """(bare python KiB, agent median KiB while running, agent peak KiB)."""
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    time.sleep(0.5)
    bare_kib = rss_kib(bare.pid) or 0
    bare.wait()
    exe = Path(sys.executable).parent / "meter-edge"
    proc = subprocess.Popen([str(exe), "run", "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    samples: list[int] = []
    try:
        time.sleep(3.0)  # imports, model and camera loaded, first cycles done
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            kib = rss_kib(proc.pid)
            if kib:
                samples.append(kib)
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    if not samples:
        raise SystemExit("the agent exited before its memory could be measured")
    return bare_kib, int(statistics.median(samples)), max(samples)


def measure_cycles(conf: Path, cycles: int) -> list[dict[str, float]]:
    from edge.agent.core import Agent
    from edge.agent.pipeline_reader import PipelineReader
    from edge.config import load_edge_config

    agent = Agent(load_edge_config(conf), PipelineReader.from_config, config_path=conf)
    timings: list[dict[str, float]] = []
    real_cycle = agent.cycle

    def timed_cycle() -> int | None:
        seq = real_cycle()
        if agent.stats.last_timings and agent.link.connected:
            timings.append(dict(agent.stats.last_timings))
        return seq

    agent.cycle = timed_cycle  # type: ignore[method-assign]
    agent.run(cycles)
    return timings[2:]  # the first cycles warm caches up


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[int(0.9 * (len(ordered) - 1))] * 1000


@click.command()
@click.option("--cycles", default=40, show_default=True, help="Cycles timed in-process.")
@click.option("--rss-seconds", default=12.0, show_default=True, help="How long the agent process is sampled.")
def main(cycles: int, rss_seconds: float) -> None:
    """Resident memory of a running agent and the time of one cycle by stage."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        with console.status(f"rendering frames at {FRAME_SIZE[0]} × {FRAME_SIZE[1]} and calibrating"):
            frames, layout = real_size_frames(work)
        with MosquittoBroker(work / "broker") as broker:
            # A cycle every 2 s (a device's default is one an hour): the median is the agent between
            # cycles, where it spends its life; the peak is the top of a cycle (the ECC refinement).
            conf = write_config(work / "rss.toml", state=work / "state-rss", layout=layout, frames=frames,
                                port=broker.port, interval_s=2.0)
            with console.status(f"sampling a running agent's memory for {rss_seconds:.0f}s"):
                bare, median_kib, peak_kib = measure_rss(conf, rss_seconds)
            conf = write_config(work / "cycles.toml", state=work / "state-cycles", layout=layout, frames=frames,
                                port=broker.port, interval_s=0.02)
            with console.status(f"timing {cycles} cycles"):
                timings = measure_cycles(conf, cycles)
    if not timings:
        raise SystemExit("no cycle was timed while connected")

    mem = Table(title="meter-edge run: resident memory (RSS)")
    for col in ("process", "RSS MiB", "× bare python"):
        mem.add_column(col, justify="right" if col != "process" else "left")
    mem.add_row("bare python interpreter", f"{bare / 1024:.1f}", "1.00")
    mem.add_row("agent, median while running", f"{median_kib / 1024:.1f}", f"{median_kib / max(bare, 1):.2f}")
    mem.add_row("agent, peak (inside a cycle)", f"{peak_kib / 1024:.1f}", f"{peak_kib / max(bare, 1):.2f}")
    console.print(mem)
    verdict = "within" if median_kib <= TARGET_MIB * 1024 else "ABOVE"
    console.print(f"running agent {median_kib / 1024:.1f} MiB: {verdict} the {TARGET_MIB} MiB target "
                  f"({median_kib / max(bare, 1):.1f}× a bare python; frames {FRAME_SIZE[0]} × {FRAME_SIZE[1]})")

    totals = [t["total"] for t in timings]
    total_med, total_p90 = _ms(totals)
    table = Table(title=f"one cycle by stage (median of {len(timings)} cycles; {FRAME_SIZE[0]} × {FRAME_SIZE[1]} "
                        "frames from the folder camera, bundled model)")
    for col in ("stage", "median ms", "p90 ms", "share of cycle"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    rows: list[tuple[str, Any, Any, Any]] = []
    for stage in STAGES:
        med, p90 = _ms([t.get(stage, 0.0) for t in timings])
        rows.append((stage, f"{med:.2f}", f"{p90:.2f}", f"{med / total_med:.1%}"))
    for row in rows:
        table.add_row(*row)
    table.add_row("whole cycle", f"{total_med:.2f}", f"{total_p90:.2f}", "100.0%", style="bold")
    console.print(table)
    console.print("[dim]commit = SQLite insert + seq + reading state, synchronous=FULL (one fsync); publish = "
                  "handing the reading to paho (the PUBACK arrives later, off the cycle's path).[/]")


if __name__ == "__main__":
    main()
