"""`make demo`: the whole flow on the project's own simulated meter, with nothing but this repo.

It drives the real command-line tools the way an installer and an operator would: simulate frames,
calibrate, check a calibration with `meter-edge read`, start a private Mosquitto with the project's
config, the billing sandbox and the bridge, add and bind a device, run the agent, run a submission
pass, and print a summary. Everything it starts is stopped by pid at the end, also on Ctrl-C, and its
work folder (the bridge's database and the broker, bridge and billing passwords) is removed then too,
unless --keep: then it stays, its secret files 0600 in a 0700 folder, and the demo says where.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from cloud_bridge.broker import MosquittoBroker, free_port, write_secret

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
console = Console(stderr=False)

DEVICE_ID = "meter-demo"
PAYER = "0123456789"
METER = "WM-2026-000123"
TOKEN = "demo-token"
RESIDENT = "resident@demo.example"


def step(msg: str) -> None:
    console.print(f"[bold cyan]==>[/] {msg}")


def run(cmd: list[str], *, env: dict[str, str] | None = None, capture: bool = True,
        check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    shown = " ".join(c if " " not in c else repr(c) for c in cmd)
    console.print(f"[dim]$ {shown}[/]")
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, text=True, timeout=timeout,
                          capture_output=capture)
    if check and proc.returncode != 0:
        console.print(proc.stdout or "", proc.stderr or "", style="red")
        raise SystemExit(f"demo: `{shown}` failed with exit code {proc.returncode}")
    return proc


class Services:
    """Background processes the demo starts; all stopped by pid on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.broker: MosquittoBroker | None = None

    def start(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        console.print(f"[dim]$ {' '.join(cmd)}  (background, log: {log})[/]")
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        self.procs.append((name, proc))

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(f"demo: {name} exited early with code {proc.returncode}; see its log")

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    console.print(f"{name} did not stop on SIGTERM; killing pid {proc.pid}")
                    proc.kill()
                    proc.wait(5)
        if self.broker is not None:
            self.broker.stop()


@contextlib.contextmanager
def services() -> Iterator[Services]:
    svc = Services()

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both end the demo through `finally` (also when started with SIGINT ignored,
    # as a background job of a script is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield svc
    finally:
        svc.stop()
        signal.signal(signal.SIGTERM, old)


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise SystemExit(f"demo: {url} did not answer within {timeout}s")


def start_portal(svc: Services, bcfg: list[str], port: int, out: Path) -> str:
    svc.start("portal", [*bcfg, "web", "--port", str(port)], out / "portal.log")
    url = f"http://127.0.0.1:{port}/"
    wait_http(url + "login")
    return url


def keep_portal_up(bcfg: list[str], portal_port: int, sandbox_port: int, work: Path, out: Path) -> None:
    """`make demo-keep`: the portal and the billing sandbox again (same ports, same databases) until Ctrl-C,
    so that a correction made on the page reaches billing."""
    with services() as svc:
        svc.start("sandbox", [*bcfg, "sandbox", "--port", str(sandbox_port), "--db", str(work / "sandbox.db")],
                  out / "sandbox.log")
        wait_http(f"http://127.0.0.1:{sandbox_port}/healthz")
        url = start_portal(svc, bcfg, portal_port, out)
        console.print(f"[bold]The portal is up at {url} - press Ctrl-C to stop it.[/]")
        try:
            while True:
                svc.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping the portal and the sandbox")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "demo-out", help="where pictures and logs go")
    ap.add_argument("--days", type=float, default=1.0, help="simulated days of frames")
    ap.add_argument("--interval-min", type=int, default=60, help="minutes between simulated frames")
    ap.add_argument("--start", default="2026-11-20T00:00:00Z", help="UTC time of the first frame")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder (databases, configs)")
    ap.add_argument("--keep-portal", action="store_true",
                    help="after the summary, keep the residents' portal and the billing sandbox up until Ctrl-C")
    args = ap.parse_args(argv)

    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="meter-demo-"))  # 0700
    try:
        return _demo(args, out, work)
    finally:
        if args.keep:
            console.print(f"work folder kept (secrets in it are 0600): {work}", soft_wrap=True, highlight=False)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _demo(args: argparse.Namespace, out: Path, work: Path) -> int:
    edge_cli, bridge_cli = str(BIN / "meter-edge"), str(BIN / "meter-bridge")
    t0 = time.monotonic()

    # 1. Frames of a virtual meter, and an installer's calibration on its reference frame.
    step(f"Rendering {args.days:g} day(s) of a virtual water meter, a frame every {args.interval_min} min")
    frames = out / "frames"
    run([edge_cli, "simulate", "--days", str(args.days), "--interval-min", str(args.interval_min),
         "--start", args.start, "--out", str(frames)], capture=False)
    from edge.capture.simulator import SIM_ROIS

    step("Calibrating on the reference frame (layout.toml + a picture of the digit windows)")
    layout = out / "layout.toml"
    run([edge_cli, "calibrate", "--image", str(frames / "reference.jpg"), "--rois", SIM_ROIS,
         "--decimals", "3", "--out", str(layout)], capture=False)

    # 2. The installer's check: read every frame with the layout, one JSON reading per line.
    step("Reading every frame with `meter-edge read` (align, crop, classify in one batch, assemble)")
    frame_files = sorted(frames.glob("*Z.jpg"))
    pictures = out / "frames-read"
    proc = run([edge_cli, "read", *map(str, frame_files), "--layout", str(layout),
                "--pictures", str(pictures)], check=False)
    if proc.returncode not in (0, 1):
        console.print(proc.stderr, style="red")
        raise SystemExit(f"demo: meter-edge read failed with exit code {proc.returncode}")
    readings = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    truth = {row["file"]: row for row in csv.DictReader((frames / "truth.csv").open())}
    table = Table(title="meter-edge read: each simulated frame")
    for col in ("frame", "true value", "read", "status", "reason"):
        table.add_column(col)
    wrong_ok = 0
    for r in readings:
        name = Path(r["frame"]).name
        row = truth.get(name, {})
        true_value = row.get("value", "?")
        # The lowest wheel is always between two numbers: one step either side is right (docs/reading.md).
        if r["status"] == "ok" and row and abs(float(r["value"]) - float(row["value_exact"])) > 0.0011:
            wrong_ok += 1
        style = {"ok": "green", "suspect": "yellow", "error": "red"}.get(r["status"], "")
        table.add_row(name, true_value, r["value"] or "-", f"[{style}]{r['status']}[/]", r.get("reason") or "")
    console.print(table)

    with services() as svc:
        # 3. A private broker with the project's config, accounts on.
        step("Starting a private Mosquitto with config/mosquitto (accounts and rights: dynamic security)")
        broker = MosquittoBroker(work / "broker", auth=True)
        svc.broker = broker
        broker.start()
        bridge_password = broker.add_account("bridge", "bridge")
        write_secret(work / "bridge-password", bridge_password + "\n")  # mode 600, like every secret
        write_secret(work / "billing-token", TOKEN + "\n")
        sandbox_port = free_port()
        portal_port = free_port()
        bridge_toml = work / "bridge.toml"
        bridge_toml.write_text(f"""
database_url = "sqlite:///{work / 'bridge.db'}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
username = "bridge"
password_file = "{work / 'bridge-password'}"
[billing]
url = "http://127.0.0.1:{sandbox_port}"
token_file = "{work / 'billing-token'}"
[loyalty]
url = "http://127.0.0.1:{sandbox_port}"
token_file = "{work / 'billing-token'}"
points = 10
[submission]
# The demo forces the submission window open; its one pass runs at the end, after the last frame.
window_always_open = true
pass_every_s = 3600
[broker]
admin_password_file = "{broker.admin_password_file}"
[web]
secret_file = "{work / 'web' / 'session.key'}"
""")
        bcfg = [bridge_cli, "--config", str(bridge_toml)]

        step("Starting the billing + loyalty sandbox")
        svc.start("sandbox", [*bcfg, "sandbox", "--port", str(sandbox_port), "--db", str(work / "sandbox.db")],
                  out / "sandbox.log")
        wait_http(f"http://127.0.0.1:{sandbox_port}/healthz")

        step("Preparing the bridge's database, adding and binding the device")
        run([*bcfg, "db", "upgrade"])
        added = json.loads(run([*bcfg, "devices", "add", DEVICE_ID, "--json"]).stdout)
        device_password = added["password"]
        run([*bcfg, "bind", DEVICE_ID, "--meter", METER, "--kind", "cold", "--payer", PAYER,
             "--address", "1 Demo Street, flat 2"], capture=False)

        step("Starting the bridge (ingest, fleet state)")
        svc.start("bridge", [*bcfg, "run", "--workers", "1"], out / "bridge.log")
        time.sleep(1.0)
        svc.check_alive()

        # 4. The device agent replays the frames as its camera, at a few per second.
        step(f"Running the device agent on {len(frame_files)} frames")
        state = work / "edge-state"
        write_secret(work / "mqtt-password", device_password + "\n")
        edge_env = {
            "EDGE_DEVICE_ID": DEVICE_ID, "EDGE_STATE_DIR": str(state), "EDGE_INTERVAL_S": "0.2",
            "EDGE_LAYOUT": str(layout), "EDGE_CAPTURE__BACKEND": "folder", "EDGE_CAPTURE__SOURCE": str(frames),
            "EDGE_MQTT__PORT": str(broker.port), "EDGE_MQTT__USERNAME": DEVICE_ID,
            "EDGE_MQTT__PASSWORD_FILE": str(work / "mqtt-password"), "EDGE_ACK_TIMEOUT_S": "5",
        }
        run([edge_cli, "run", "--config", str(REPO / "config" / "edge.toml"), "--cycles", str(len(frame_files))],
            env=edge_env, capture=False, timeout=900)

        step("Waiting for the bridge to store every reading")
        status: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.loads(run([*bcfg, "status", "--json"]).stdout)
            if status.get("stored", 0) + status.get("duplicate", 0) >= len(frame_files):
                break
            time.sleep(1)

        # 5. A submission pass with the window open, as of the last frame.
        last_time = datetime.strptime(frame_files[-1].stem, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        period = last_time.strftime("%Y-%m")
        step(f"Submitting period {period} to billing (as of {last_time.isoformat()})")
        run([*bcfg, "submit", "--period", period, "--at", last_time.isoformat()], capture=False)
        history = json.loads(run([*bcfg, "history", "--payer", PAYER, "--json"]).stdout)
        billing = httpx.get(f"http://127.0.0.1:{sandbox_port}/v1/readings", params={"payer": PAYER},
                            headers={"Authorization": f"Bearer {TOKEN}"}).json()
        credits = httpx.get(f"http://127.0.0.1:{sandbox_port}/v1/credits", params={"payer": PAYER},
                            headers={"Authorization": f"Bearer {TOKEN}"}).json()

        # 6. The residents' portal: a demo resident linked to the payer, and a link code for a new account.
        step("Starting the residents' portal and adding a demo resident")
        portal = start_portal(svc, bcfg, portal_port, out)
        resident = json.loads(run([*bcfg, "users", "add", RESIDENT, "--role", "resident", "--json"]).stdout)
        run([*bcfg, "residents", "link", RESIDENT, "--payer", PAYER])
        invite = json.loads(run([*bcfg, "residents", "invite", "--payer", PAYER, "--json"]).stdout)

    statuses = Counter(r["status"] for r in history["readings"])
    summary = Table(title="Demo summary", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("frames rendered", str(len(frame_files)))
    summary.add_row("frames read (meter-edge read)",
                    ", ".join(f"{n} {s}" for s, n in Counter(r["status"] for r in readings).items()))
    summary.add_row("settlement of the frames read",
                    ", ".join(f"{n} {s}" for s, n in Counter(r.get("settlement", "?") for r in readings).items()))
    summary.add_row("ok readings with a wrong value", str(wrong_ok))
    summary.add_row("readings stored by the bridge",
                    f"{len(history['readings'])} ({', '.join(f'{n} {s}' for s, n in statuses.items())})")
    settled = Counter(r["settlement"]["state"] for r in history["readings"])
    outliers = Counter((r["settlement"]["reason"] or "").split(":", 1)[0] for r in history["readings"]
                       if r["settlement"]["state"] == "outlier")
    summary.add_row("settlement on the bridge",
                    ", ".join(f"{settled.get(s, 0)} {s}" for s in ("settled", "outlier", "pending"))
                    + (f" (outliers: {', '.join(f'{n} {c}' for c, n in outliers.items())})" if outliers else ""))
    summary.add_row("submitted to billing (sandbox's own records)",
                    ", ".join(f"{r['period']}: {r['value']}" for r in billing["readings"]) or "none")
    waiting = [s for s in history["submissions"] if s["state"] == "needs_attention"]
    if waiting:
        summary.add_row("needs attention", "; ".join(f"{s['period']}: {s['reason']}" for s in waiting))
    summary.add_row("points credited", f"{credits.get('balance', 0)} "
                    f"({len(credits.get('credits', []))} credit(s))")
    summary.add_row("residents' portal", f"{portal} (Russian; EN at the top)"
                    + ("" if args.keep_portal else " - stopped with the demo; `make demo-keep` keeps it up"))
    summary.add_row("demo resident", f"{RESIDENT}, one-time password {resident['password']} "
                    "(the first sign-in asks for a new one)")
    summary.add_row("or register yourself", f"{portal}register, then link code {invite['link_code']}")
    summary.add_row("took", f"{time.monotonic() - t0:.0f} s")
    console.print(summary)
    print_paths(console, [("calibration picture", str(layout.with_suffix(".png"))),
                          ("per-frame pictures", f"{pictures}/ ({len(list(pictures.glob('*.png')))} files)"),
                          ("logs", f"{out}/*.log")])
    if args.keep_portal:
        keep_portal_up(bcfg, portal_port, sandbox_port, work, out)
    return 0


def print_paths(con: Console, paths: list[tuple[str, str]]) -> None:
    """Paths on lines of their own, never cut or wrapped at the terminal's width: they get copied."""
    for label, path in paths:
        con.print(f"[bold]{label}:[/] {path}", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        console.print("demo: interrupted; everything it started has been stopped")
        sys.exit(130)
