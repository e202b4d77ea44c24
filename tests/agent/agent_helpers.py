"""Helpers the agent's tests import: a scripted reader (stands in for camera + pipeline), MQTT
collectors, an in-process agent thread, and broker password entries."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from contract.payloads import Ack, Reading
from edge.agent.core import Agent, ReadResult
from edge.config import EdgeConfig


class ScriptedReader:
    """Reads a meter whose value rises by 0.001 m³ a cycle; its state is the previous accepted value."""

    model_id = "scripted-test"

    def __init__(self, cfg: EdgeConfig) -> None:
        self.device_id = cfg.device_id
        self.closed = False

    def read(self, state: dict[str, Any] | None) -> ReadResult:
        prev = float(state["previous"]) if state else 100.0
        value = f"{prev + 0.001:09.3f}"
        reading = Reading(device_id=self.device_id, seq=0, taken_at=datetime.now(UTC), value=value, status="ok",
                          confidence=0.99, model=self.model_id)
        return ReadResult(reading, {"previous": value}, {"capture": 0.001})

    def set_previous(self, state: dict[str, Any] | None, value: str, at: datetime) -> dict[str, Any]:
        return {"previous": value, "at": at.isoformat()}

    def close(self) -> None:
        self.closed = True


def edge_config(tmp_path: Path, port: int, **over: Any) -> EdgeConfig:
    base: dict[str, Any] = {
        "device_id": "dev-a", "state_dir": tmp_path / "state", "interval_s": 0.05, "telemetry_interval_s": 60,
        "ack_timeout_s": 30, "drain_timeout_s": 5,
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 1, "reconnect_max_s": 1},
    }
    mqtt_over = over.pop("mqtt", {})
    base.update(over)
    base["mqtt"].update(mqtt_over)
    return EdgeConfig(**base)


@dataclass
class Collector:
    """A subscriber that records every message; as `bridge=True` it acks each reading like the bridge."""

    port: int
    subs: list[str]
    bridge: bool = False
    ack_state: str = "stored"  # what the bridge answers, as bridge=True
    user: str | None = None
    password: str | None = None
    client_id: str = "collector"
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    q: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.user:
            self.c.username_pw_set(self.user, self.password)
        self.c.reconnect_delay_set(1, 1)
        self.connected = threading.Event()
        self.subscribed = 0  # SUBACKs received: one per (re)connect
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe([(s, 1) for s in self.subs])
        self.connected.set()

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
        self.subscribed += 1

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(msg)
        self.q.put(msg)
        if self.bridge and msg.topic.endswith("/reading"):
            r = Reading.model_validate_json(msg.payload)
            reason = "unknown_device: not in the registry" if self.ack_state == "rejected" else None
            ack = Ack(seq=r.seq, state=self.ack_state, reason=reason)  # type: ignore[arg-type]
            c.publish(f"meters/{r.device_id}/ack", ack.to_json_bytes(), qos=1)

    def start(self) -> Collector:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600  # keeps its queue while the broker restarts
        self.c.connect_async("127.0.0.1", self.port, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props)
        self.c.loop_start()
        assert self.connected.wait(10), "collector could not connect"
        time.sleep(0.2)  # SUBACK
        return self

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def on(self, suffix: str) -> list[mqtt.MQTTMessage]:
        return [m for m in list(self.messages) if m.topic.endswith(suffix)]

    def seqs(self) -> list[int]:
        return [Reading.model_validate_json(m.payload).seq for m in self.on("/reading")]

    def wait_for(self, pred: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return bool(pred())


class AgentThread:
    """An in-process agent on a thread (the scripted reader), stopped at teardown."""

    def __init__(self, cfg: EdgeConfig, cycles: int | None = None, reader: type = ScriptedReader,
                 config_path: Path | None = None) -> None:
        self.agent = Agent(cfg, reader, config_path=config_path)
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, args=(cycles,), daemon=True)

    def _run(self, cycles: int | None) -> None:
        self.rc = self.agent.run(cycles)

    def start(self) -> AgentThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.agent.request_stop()
        self.thread.join(timeout)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "agent did not finish"


def add_accounts(broker: Any, accounts: dict[str, str]) -> None:
    """Broker accounts with known passwords, through the broker's admin account (dynamic security):
    `bridge`, `operator` and `homeassistant` get that role, every other name is a device."""
    for user, pw in accounts.items():
        broker.add_account(user, user if user in ("bridge", "operator", "homeassistant") else "device", pw)


def simulator_layout(out_dir: Path) -> Path:
    """A layout for the simulator's meter, written by the real `meter-edge calibrate`."""
    import cv2
    from click.testing import CliRunner

    from edge.calibrate.cli import calibrate
    from edge.capture.simulator import SIM_ROIS, render_reference

    out_dir.mkdir(parents=True, exist_ok=True)
    ref = out_dir / "reference-frame.png"
    cv2.imwrite(str(ref), render_reference())
    layout = out_dir / "layout.toml"
    result = CliRunner().invoke(calibrate, ["--image", str(ref), "--rois", SIM_ROIS, "--decimals", "3",
                                            "--out", str(layout)])
    assert result.exit_code == 0, result.output
    return layout


def write_edge_toml(path: Path, *, state_dir: Path, layout: Path, port: int, interval_s: float = 0.1,
                    device_id: str = "dev-sim", **extra: Any) -> Path:
    """An edge.toml for a real `meter-edge run` on the simulator backend."""
    import tomli_w

    doc: dict[str, Any] = {
        "device_id": device_id, "state_dir": str(state_dir), "interval_s": interval_s,
        "telemetry_interval_s": 60, "ack_timeout_s": 600, "drain_timeout_s": 8, "layout": str(layout),
        "capture": {"backend": "simulator", "source": "7"},
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 1, "reconnect_max_s": 1},
    }
    for key, value in extra.items():
        if isinstance(value, dict):
            doc.setdefault(key, {}).update(value)
        else:
            doc[key] = value
    path.write_text(tomli_w.dumps(doc))
    return path


def meter_edge() -> str:
    import sys

    return str(Path(sys.executable).parent / "meter-edge")


def committed_seq(state_dir: Path) -> int:
    """The last seq the agent committed, read from its outbox by a second connection (WAL allows it)."""
    import sqlite3

    db = state_dir / "outbox.sqlite3"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) - 1 if row else 0


def reading_state_previous(state_dir: Path) -> str | None:
    """The previous accepted value the agent keeps in its outbox (what cmd/set-value and the setup page set)."""
    import json
    import sqlite3

    con = sqlite3.connect(f"file:{state_dir / 'outbox.sqlite3'}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'reading_state'").fetchone()
    finally:
        con.close()
    return json.loads(row[0]).get("previous") if row else None


def stop_agent(proc: Any) -> None:
    """SIGTERM an agent process (a subprocess.Popen) that still runs, and wait for it."""
    import os
    import signal

    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
