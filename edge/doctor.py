"""`meter-edge doctor`: check everything the agent needs, one line each, with what to do about a failure.

Every check runs even when an earlier one failed (an installer wants the whole list at once), except
those that need what failed (no frame: no resolution check). The broker checks connect exactly as the
agent does (its client id, account, TLS), keep the agent's MQTT session as it was (no clean start;
messages queued for the agent are never acknowledged here, so the broker delivers them to the agent
again), and publish only what the agent itself would: its retained `offline` status (true while the
service is stopped) and, to see the bridge answer, the newest reading the bridge already acknowledged,
byte for byte (the bridge answers `duplicate` and stores nothing new).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import click

from contract import topics
from contract.settings import ConfigError
from edge.config import EdgeConfig, load_edge_config

Status = Literal["pass", "warn", "fail", "skip"]

MIN_FREE_BYTES = 50 * 1024 * 1024
EARLIEST_YEAR = 2025  # older: the clock was never set (a Pi without RTC before NTP answered)
LATEST_YEAR = 2100


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What one check leaves for the next (the frame for the resolution check, the layout, …)."""

    cfg: EdgeConfig
    frame: Any = None
    layout: Any = None
    reference: Any = None
    model: Any = None
    bridge_timeout_s: float = 5.0
    pin_factory: Any = None


def check_clock(ctx: Context) -> Check:
    now = datetime.now(UTC)
    local = now.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if not EARLIEST_YEAR <= now.year <= LATEST_YEAR:
        return Check("clock", "fail", f"the clock says {local}",
                     "set the time: enable NTP (`sudo timedatectl set-ntp true`) and check the network; readings "
                     "carry this time and a meter is billed by it")
    return Check("clock", "pass", f"{local}")


def check_disk(ctx: Context) -> Check:
    d = Path(ctx.cfg.state_dir)
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return Check("disk", "fail", f"cannot look at {probe}: {exc.strerror}", "check state_dir")
    mb = free / 1024 / 1024
    if free < MIN_FREE_BYTES:
        return Check("disk", "fail", f"{mb:.0f} MB free for state_dir {d}",
                     f"free at least {MIN_FREE_BYTES // 1024 // 1024} MB (old logs, `journalctl --vacuum-size=50M`)")
    try:
        d.mkdir(parents=True, exist_ok=True)
        test = d / ".doctor-write-test"
        test.write_bytes(b"ok")
        test.unlink()
    except OSError as exc:
        return Check("disk", "fail", f"state_dir {d} is not writable: {exc.strerror}",
                     "create it and give it to the service's user (the systemd unit's StateDirectory does)")
    return Check("disk", "pass", f"{mb:,.0f} MB free, state_dir {d} writable")


def check_model(ctx: Context) -> Check:
    import numpy as np

    from meter_vision.infer import DigitModel, InferenceError

    try:
        model = DigitModel(Path(ctx.cfg.model) if ctx.cfg.model else None)
        model.classify([np.full((40, 24, 3), 128, np.uint8)])
    except InferenceError as exc:
        return Check("model", "fail", str(exc), "set `model` to a .tflite with its .json beside it, or empty for "
                                                "the bundled one; install the `edge` extra (ai-edge-litert)")
    ctx.model = model
    return Check("model", "pass", f"{model.model_id} ({model.path.name}) runs on {model.backend}")


def check_layout(ctx: Context) -> Check:
    from edge.calibrate import Aligner, AlignError, LayoutError, load_layout

    path = ctx.cfg.layout
    if not Path(path).is_file():
        return Check("layout", "fail", f"no layout at {path}",
                     "take a frame (`meter-edge capture --out frame.jpg`) and run `meter-edge calibrate`, or set "
                     "`layout` in the config")
    try:
        layout = load_layout(path)
        aligner = Aligner(layout)
    except (LayoutError, AlignError) as exc:
        return Check("layout", "fail", str(exc), "run `meter-edge calibrate` again")
    ctx.layout, ctx.reference = layout, aligner
    h, w = aligner.reference.shape[:2]
    return Check("layout", "pass", f"{path}: {len(layout.digits)} wheels ({layout.decimals} decimals), reference "
                                   f"{layout.reference_image.name} {w}x{h} px, {len(layout.anchors)} anchors")


def check_led(ctx: Context) -> Check:
    from edge.capture import CaptureError, Flash

    pin = ctx.cfg.led.pin
    if pin == 0:
        return Check("led", "pass", "no LED configured (led.pin = 0)")
    try:
        with Flash(pin, ctx.cfg.led.warmup_s, pin_factory=ctx.pin_factory) as flash:
            flash.on()
            lit = flash.is_lit
            flash.off()
            off = not flash.is_lit
    except CaptureError as exc:
        return Check("led", "fail", str(exc), "check led.pin (a BCM number) and the wiring")
    if not (lit and off):
        return Check("led", "fail", f"GPIO{pin} did not switch", "check led.pin and the wiring")
    return Check("led", "pass", f"GPIO{pin} switches on and off (warm-up {ctx.cfg.led.warmup_s:g} s)")


def check_camera(ctx: Context) -> Check:
    from edge.capture import CaptureError, EndOfFrames
    from edge.capture.cli import take_frame

    cfg = ctx.cfg
    try:
        frame = take_frame(cfg, ctx.pin_factory)
    except ConfigError as exc:
        return Check("camera", "fail", str(exc), "fix the [capture] or [led] section of the config")
    except EndOfFrames as exc:
        return Check("camera", "fail", str(exc), "add frames to capture.source or set capture.loop = true")
    except CaptureError as exc:
        return Check("camera", "fail", f"{cfg.capture.backend}: {exc}",
                     "check the cable and that the service is stopped (the camera has one user)")
    ctx.frame = frame
    h, w = frame.image.shape[:2]
    mean = float(frame.image.mean())
    if mean < 20:
        return Check("camera", "fail", f"{w}x{h} px from {cfg.capture.backend} but black (mean grey {mean:.0f})",
                     "check the LED (led.pin) and that nothing covers the lens")
    return Check("camera", "pass", f"one {w}x{h} px frame from {cfg.capture.backend} (mean grey {mean:.0f})")


def check_resolution(ctx: Context) -> Check:
    from edge.capture.device import size_mismatch

    if ctx.frame is None or ctx.reference is None:
        return Check("resolution", "skip", "needs a frame and a layout (see above)")
    h, w = ctx.frame.image.shape[:2]
    rh, rw = ctx.reference.reference.shape[:2]
    note = size_mismatch(w, h, rw, rh)
    if note and "aspect" in note:
        return Check("resolution", "fail", note.split(": ")[0], note.split(": ", 1)[1])
    if note:
        return Check("resolution", "warn", note.split(": ")[0], note.split(": ", 1)[1])
    result = ctx.reference.align(ctx.frame.image)
    if not result.ok:
        return Check("resolution", "fail", f"{w}x{h} px like the reference, but the frame does not align: "
                                           f"{result.reason}", "check the camera has not moved; else calibrate again")
    return Check("resolution", "pass", f"{w}x{h} px like the reference; the frame aligns (score {result.score:.2f})")


class _Probe:
    """One MQTT 5 connection as the device: the agent's client id, account and TLS; never acks what it gets."""

    def __init__(self, cfg: EdgeConfig) -> None:
        from edge.transport.mqtt import device_client

        self.cfg = cfg
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.connect_error: str | None = None
        self.pubacks: dict[int, int] = {}
        self.acks: list[dict[str, Any]] = []
        self.sent = threading.Event()
        self.sent_seq: int | None = None
        self.lock = threading.Condition()
        c = device_client(cfg.mqtt, cfg.device_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.connect_error = f"{rc.getName()} (0x{rc.value:02x})"
        else:
            self.connected.set()
        self.answered.set()

    def _on_connect_fail(self, c: Any, u: Any) -> None:
        self.connect_error = f"cannot reach {self.cfg.mqtt.host}:{self.cfg.mqtt.port}"
        self.answered.set()

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if not self.answered.is_set():
            self.connect_error = f"disconnected: {rc}"
            self.answered.set()
        self.connected.clear()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        with self.lock:
            self.pubacks[mid] = int(rc.value)
            self.lock.notify_all()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        """Only fresh acks that arrive after the test reading went out count; a redelivered one (`dup`) may be
        an answer from an earlier run. Nothing is acknowledged to the broker except answers to that reading."""
        if msg.topic != topics.ack(self.cfg.device_id) or msg.dup or not self.sent.is_set():
            return
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(data, dict) or data.get("seq") != self.sent_seq:
            return
        self.client.ack(msg.mid, msg.qos)  # the agent has this reading done already: no need to redeliver
        with self.lock:
            self.acks.append(data)
            self.lock.notify_all()

    def connect(self, timeout: float) -> bool:
        from edge.transport.mqtt import connect_args

        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_s,
                                  **connect_args(self.cfg.mqtt))
        self.client.loop_start()
        if not self.answered.wait(timeout) and self.connect_error is None:
            self.connect_error = f"no answer from {self.cfg.mqtt.host}:{self.cfg.mqtt.port} within {timeout:g} s"
        return self.connected.is_set()

    def publish(self, topic: str, payload: bytes, retain: bool, timeout: float) -> int | None:
        """The broker's reason code for a QoS 1 publish (0: accepted), None when it did not answer."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self.lock:
            self.lock.wait_for(lambda: info.mid in self.pubacks, timeout)
            return self.pubacks.get(info.mid)

    def wait_ack(self, seq: int, timeout: float) -> dict[str, Any] | None:
        def found() -> dict[str, Any] | None:
            return next((a for a in self.acks if a.get("seq") == seq), None)

        with self.lock:
            self.lock.wait_for(lambda: found() is not None, timeout)
            return found()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _latest_acknowledged(cfg: EdgeConfig) -> tuple[int, bytes] | None:
    """(seq, payload) of the newest reading the bridge acknowledged, read-only from the agent's outbox."""
    from edge.transport.outbox import DB_NAME

    path = Path(cfg.state_dir) / DB_NAME
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            row = db.execute("SELECT seq, payload FROM readings WHERE state = 'done' AND ack != 'rejected' "
                             "ORDER BY seq DESC LIMIT 1"
                             ).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return None if row is None else (int(row[0]), bytes(row[1]))


def check_broker(ctx: Context) -> list[Check]:
    cfg = ctx.cfg
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}{' (TLS)' if cfg.mqtt.ca_file else ''}"
    try:
        probe = _Probe(cfg)
    except ConfigError as exc:
        return [Check("broker", "fail", str(exc), "fix the [mqtt] section of the config")]
    try:
        if not probe.connect(timeout=10.0):
            err = probe.connect_error or "no connection"
            refused = any(k in err for k in ("0x86", "0x87", "0x85", "0x8c", "Not authorized", "Bad user"))
            fix = ("check mqtt.username (default: device_id) and the password in mqtt.password_file against what "
                   "`meter-bridge devices add` printed" if refused else
                   "check mqtt.host/mqtt.port, the network, and mqtt.ca_file when the broker uses TLS")
            return [Check("broker", "fail", f"{where}: {err}", fix),
                    Check("publish", "skip", "needs a broker connection"),
                    Check("bridge", "skip", "needs a broker connection")]
        user = cfg.mqtt.username or (cfg.device_id if cfg.mqtt.password_file else "anonymous")
        out = [Check("broker", "pass", f"{where}: logged in as {user}, client id {cfg.device_id}")]
        from edge.transport.mqtt import subscription_qos

        probe.client.subscribe(topics.ack(cfg.device_id), qos=subscription_qos(cfg.mqtt))
        rc = probe.publish(topics.status(cfg.device_id), b"offline", retain=True, timeout=5.0)
        if rc is None:
            out.append(Check("publish", "fail", "the broker did not confirm a test publish within 5 s",
                             "check the broker's log"))
        elif rc >= 0x80:
            out.append(Check("publish", "fail", f"the broker refused a publish on {topics.status(cfg.device_id)} "
                                                f"(reason 0x{rc:02x})",
                             "the account may not write meters/<device_id>/…: check that mqtt.username is this "
                             "device's account (`meter-bridge devices add`)"))
            out.append(Check("bridge", "skip", "needs a working publish"))
            return out
        else:
            out.append(Check("publish", "pass", f"test publish on {topics.status(cfg.device_id)} accepted"))
        out.append(_check_bridge(ctx, probe))
        return out
    finally:
        probe.close()


def _check_bridge(ctx: Context, probe: _Probe) -> Check:
    cfg = ctx.cfg
    latest = _latest_acknowledged(cfg)
    if latest is None:
        return Check("bridge", "skip", "no reading acknowledged by the bridge yet, so none to send again",
                     "run the service; after its first reading `doctor` also checks that the bridge answers")
    seq, payload = latest
    probe.sent_seq = seq
    probe.sent.set()
    rc = probe.publish(topics.reading(cfg.device_id), payload, retain=False, timeout=5.0)
    if rc is None or rc >= 0x80:
        why = "no answer" if rc is None else hex(rc)
        return Check("bridge", "fail", f"the broker refused reading seq {seq} ({why})",
                     "the account may not publish readings: check it with the operator")
    ack = probe.wait_ack(seq, ctx.bridge_timeout_s)
    if ack is None:
        return Check("bridge", "warn",
                     f"no answer from the bridge within {ctx.bridge_timeout_s:g} s to reading seq {seq}",
                     "the bridge may be down or not connected to this broker: ask the operator (`meter-bridge status`)")
    if ack.get("state") == "rejected":
        return Check("bridge", "fail", f"the bridge rejected reading seq {seq}: {ack.get('reason')}",
                     "ask the operator: the device may not be registered (`meter-bridge devices add`)")
    return Check("bridge", "pass", f"the bridge answered reading seq {seq}: {ack.get('state')}")


LOCAL_CHECKS: list[Callable[[Context], Check]] = [
    check_clock, check_disk, check_model, check_layout, check_led, check_camera, check_resolution]


def run_checks(cfg: EdgeConfig, *, bridge_timeout_s: float = 5.0, pin_factory: Any = None) -> list[Check]:
    ctx = Context(cfg, bridge_timeout_s=bridge_timeout_s, pin_factory=pin_factory)
    out: list[Check] = []
    for check in LOCAL_CHECKS:
        try:
            out.append(check(ctx))
        except Exception as exc:  # one broken check must not hide the others
            out.append(Check(check.__name__.removeprefix("check_"), "fail", f"unexpected error: {exc!r}"))
    out += check_broker(ctx)
    return out


MARKS = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@click.command("doctor")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config TOML (default: config/edge.toml when it exists); EDGE_* variables override it.")
@click.option("--bridge-timeout", type=click.FloatRange(0.5, 60), default=5.0, show_default=True,
              help="Seconds to wait for the bridge to answer.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {ok, checks: [{name, status, detail, fix}]}.")
def doctor(config_path: Path | None, bridge_timeout: float, as_json: bool) -> None:
    """Check what the agent needs: clock, disk, model and runtime, layout and reference, LED, camera (one
    capture), resolution against the reference, broker login, a test publish, and that the bridge answers.

    \b
    Stop the service first (`sudo systemctl stop meter-edge`): the camera has one user, and the broker
    lets one connection use the device's id.
    Exit status 1 when any check fails; warnings and skipped checks do not fail.
    """
    try:
        cfg = load_edge_config(config_path)
    except ConfigError as exc:
        checks = [Check("config", "fail", str(exc), "fix the config file or the EDGE_* variable it names")]
    else:
        checks = [Check("config", "pass", str(config_path or "defaults and EDGE_* variables")),
                  *run_checks(cfg, bridge_timeout_s=bridge_timeout)]
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        for c in checks:
            click.echo(f"[{MARKS[c.status]}] {c.name:<10} {c.detail}")
            if c.fix and c.status in ("fail", "warn"):
                click.echo(f"{'':17}-> {c.fix}")
        click.echo(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    if failed:
        raise SystemExit(1)
