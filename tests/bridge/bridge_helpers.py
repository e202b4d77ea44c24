"""Helpers for bridge tests: readings, a device-side publisher that collects acks, bridge runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from cloud_bridge import registry
from cloud_bridge.config import BridgeConfig
from cloud_bridge.service import bridge_worker
from contract.payloads import Reading


def reading(device_id: str, seq: int, value: str = "00012.345", *, status: str = "ok",
            taken_at: str = "2026-11-20T10:00:00Z", reason: str | None = None) -> Reading:
    return Reading.model_validate({
        "device_id": device_id, "seq": seq, "taken_at": taken_at, "value": value if status == "ok" else None,
        "status": status, "reason": reason or (None if status == "ok" else "low_confidence"),
        "confidence": 0.97, "digits": [{"v": 1, "f": 1.2, "p": 0.97}], "model": "test-model"})


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return cond()


@dataclass
class Device:
    """The device side: publishes on any topic (anonymous broker) and collects every message it sees."""

    port: int
    subscribe: Iterable[str] = ("meters/+/ack", "bridge/#")
    acks: list[dict[str, Any]] = field(default_factory=list)
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in self.subscribe])
        assert subscribed.wait(5), "test subscriber got no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            if msg.topic.endswith("/ack"):
                d = json.loads(msg.payload)
                d["device_id"] = msg.topic.split("/")[1]
                self.acks.append(d)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_reading(self, r: Reading) -> mqtt.MQTTMessageInfo:
        return self.publish(f"meters/{r.device_id}/reading", r.to_json_bytes())

    def acks_by_state(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for a in self.acks:
                out[a["state"]] = out.get(a["state"], 0) + 1
            return out

    def on_topic(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def config(db_url: str, port: int, tmp_path: Path, **sections: Any) -> BridgeConfig:
    base: dict[str, Any] = {
        "database_url": db_url,
        "mqtt": {"port": port},
        "broker": {"password_file": tmp_path / "passwd", "acl_file": tmp_path / "acl"},
        "fleet": {"publish_every_s": 0.2, "sweep_every_s": 1.0},
        "metrics": {"port": 0},  # a test that scrapes picks a free port; others never fight over 9464
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return BridgeConfig(**base)


def env_for(cfg: BridgeConfig) -> dict[str, str]:
    """The same config as BRIDGE_* variables, for a `meter-bridge` subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({
        "BRIDGE_DATABASE_URL": cfg.database_url,
        "BRIDGE_MQTT__PORT": str(cfg.mqtt.port),
        "BRIDGE_BROKER__PASSWORD_FILE": str(cfg.broker.password_file),
        "BRIDGE_BROKER__ACL_FILE": str(cfg.broker.acl_file),
        "BRIDGE_FLEET__PUBLISH_EVERY_S": str(cfg.fleet.publish_every_s),
        "BRIDGE_FLEET__SWEEP_EVERY_S": str(cfg.fleet.sweep_every_s),
        "BRIDGE_INGEST__BATCH_SIZE": str(cfg.ingest.batch_size),
        "BRIDGE_MQTT__CLIENT_ID_PREFIX": cfg.mqtt.client_id_prefix,
        "BRIDGE_METRICS__PORT": str(cfg.metrics.port),
        "BRIDGE_METRICS__HOST": cfg.metrics.host,
    })
    return env


def register(engine: Engine, device_ids: Iterable[str], *, bind: bool = True) -> None:
    with engine.begin() as conn:
        for i, d in enumerate(device_ids):
            registry.add_device(conn, d)
            if bind:
                registry.bind(conn, d, meter_serial=f"SN-{d}", kind="cold", payer_code=f"{1000000000 + i}",
                              address=f"Test street {i}")


class InProcessBridge:
    """One ingest worker in a thread of the test process, built by the composition root as `meter-bridge
    run` builds it (cloud_bridge.service), without the timers: a test runs its passes when it means to.
    Fast; the subprocess tests use the CLI. `engine` is the test's own (the worker opens its own)."""

    def __init__(self, engine: Engine, cfg: BridgeConfig, index: int = 0) -> None:
        self._stack = ExitStack()
        built = self._stack.enter_context(bridge_worker(cfg, index=index, timers=False))
        self.source = built.source
        self.worker = built.ingest
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self.stop_event)
        except BaseException as exc:
            self.error = exc
            raise

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self._stack.close()

    def __enter__(self) -> InProcessBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bridge_process(cfg: BridgeConfig, *args: str, log_path: Path) -> subprocess.Popen[bytes]:
    """`meter-bridge run …` as a real process (for kill -9)."""
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "cloud_bridge.cli", "run", *args], env=env_for(cfg),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
