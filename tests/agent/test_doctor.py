"""`meter-edge doctor` against a real Mosquitto (with the project's accounts), a real bridge worker, and
configs broken one way at a time."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tomli_w
from agent_helpers import add_accounts, simulator_layout
from click.testing import CliRunner
from gpiozero.pins.mock import MockFactory

from cloud_bridge.broker import MosquittoBroker, free_port
from contract.payloads import Reading
from edge.config import EdgeConfig, load_edge_config
from edge.doctor import doctor, run_checks
from edge.transport.outbox import Outbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bridge"))
from bridge_helpers import InProcessBridge, register
from bridge_helpers import config as bridge_config

pytestmark = pytest.mark.mosquitto


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulator_layout(tmp_path_factory.mktemp("layout"))


def write_toml(tmp_path: Path, port: int, layout: Path, **over: Any) -> Path:
    doc: dict[str, Any] = {
        "device_id": "dev-a", "state_dir": str(tmp_path / "state"), "layout": str(layout),
        "capture": {"backend": "simulator", "source": "7"},
        "mqtt": {"host": "127.0.0.1", "port": port},
    }
    for key, value in over.items():
        if isinstance(value, dict):
            doc.setdefault(key, {}).update(value)
        else:
            doc[key] = value
    path = tmp_path / "edge.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def by_name(checks: list[Any]) -> dict[str, tuple[str, str, str]]:
    return {c["name"]: (c["status"], c["detail"], c["fix"]) for c in checks}


def invoke(cfg: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(doctor, ["--config", str(cfg), "--json", "--bridge-timeout", "2", *extra])
    return result.exit_code, json.loads(result.output.strip().splitlines()[-1])


def done_reading(cfg: EdgeConfig) -> int:
    """A reading the agent stored, published and had acknowledged: what doctor sends again."""
    outbox = Outbox(cfg.state_dir)
    draft = Reading.model_validate({
        "device_id": cfg.device_id, "seq": 0, "taken_at": "2026-11-20T10:00:00Z", "value": "00123.456",
        "status": "ok", "reason": None, "confidence": 0.97, "digits": [{"v": 6, "f": 6.0, "p": 0.97}],
        "model": "test-model"})
    seq = outbox.add(draft).seq
    outbox.mark_published(seq)
    outbox.mark_acked(seq, "stored")
    outbox.close()
    return seq


def test_everything_passes_with_the_device_account_led_and_simulator(auth_broker: MosquittoBroker, layout: Path,
                                                                     tmp_path: Path) -> None:
    add_accounts(auth_broker, {"dev-a": "pw-a"})
    (tmp_path / "pw").write_text("pw-a")
    cfg = load_edge_config(write_toml(tmp_path, auth_broker.port, layout, led={"pin": 17, "warmup_s": 0.01},
                                      mqtt={"password_file": str(tmp_path / "pw")}))
    factory = MockFactory()
    checks = {c.name: c for c in run_checks(cfg, bridge_timeout_s=1, pin_factory=factory)}
    assert {n: c.status for n, c in checks.items()} == {
        "clock": "pass", "disk": "pass", "model": "pass", "layout": "pass", "led": "pass", "camera": "pass",
        "resolution": "pass", "broker": "pass", "publish": "pass", "bridge": "skip"}, checks
    assert "logged in as dev-a" in checks["broker"].detail
    assert "8 wheels (3 decimals)" in checks["layout"].detail
    assert "aligns" in checks["resolution"].detail
    # the LED test, then the capture: each lit once and off again
    factory.pin(17).assert_states([False, True, False, True, False])


def test_wrong_password_fails_and_says_where_to_look(auth_broker: MosquittoBroker, layout: Path,
                                                      tmp_path: Path) -> None:
    add_accounts(auth_broker, {"dev-a": "pw-a"})
    (tmp_path / "pw").write_text("not-the-password")
    code, out = invoke(write_toml(tmp_path, auth_broker.port, layout, mqtt={"password_file": str(tmp_path / "pw")}))
    checks = by_name(out["checks"])
    assert code == 1 and out["ok"] is False
    assert checks["broker"][0] == "fail" and "password_file" in checks["broker"][2]
    assert checks["publish"][0] == "skip" and checks["bridge"][0] == "skip"
    assert checks["camera"][0] == "pass"  # the rest was still checked


def test_the_bridge_answers_the_last_acknowledged_reading(broker: MosquittoBroker, layout: Path,
                                                         tmp_path: Path) -> None:
    from cloud_bridge.store.engine import open_store

    cfg_path = write_toml(tmp_path, broker.port, layout)
    seq = done_reading(load_edge_config(cfg_path))
    # no bridge connected: a warning with a bounded wait, not a failure
    code, out = invoke(cfg_path)
    assert code == 0, out
    status, detail, fix = by_name(out["checks"])["bridge"]
    assert status == "warn" and "within 2 s" in detail and "meter-bridge status" in fix

    db_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    engine = open_store(db_url)
    register(engine, ["dev-a"])
    with InProcessBridge(engine, bridge_config(db_url, broker.port, tmp_path)):
        first = by_name(invoke(cfg_path)[1]["checks"])["bridge"]
        second = by_name(invoke(cfg_path)[1]["checks"])["bridge"]
    engine.dispose()
    assert first[0] == "pass" and f"seq {seq}: stored" in first[1]
    assert second[0] == "pass" and f"seq {seq}: duplicate" in second[1]  # doctor adds nothing to the store


def test_broken_configs_fail_with_what_to_do(layout: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "01.png"), np.full((360, 640, 3), 120, np.uint8))  # 16:9 against a 4:3 reference
    code, out = invoke(write_toml(tmp_path, port, layout, capture={"backend": "folder", "source": str(frames)}))
    checks = by_name(out["checks"])
    assert code == 1
    assert checks["resolution"][0] == "fail" and "another aspect ratio" in checks["resolution"][1]
    assert "capture.width/height" in checks["resolution"][2]
    assert checks["broker"][0] == "fail" and "cannot reach" in checks["broker"][1]
    assert "mqtt.host" in checks["broker"][2]

    code, out = invoke(write_toml(tmp_path, port, tmp_path / "missing.toml", model=str(tmp_path / "none.tflite"),
                                  capture={"backend": "folder", "source": str(tmp_path / "nowhere")}))
    checks = by_name(out["checks"])
    assert checks["layout"][0] == "fail" and "meter-edge calibrate" in checks["layout"][2]
    assert checks["model"][0] == "fail" and "missing" in checks["model"][1]
    assert checks["camera"][0] == "fail" and "does not exist" in checks["camera"][1]
    assert checks["resolution"][0] == "skip"

    bad = tmp_path / "bad.toml"
    bad.write_text('device_id = "a b"\n')
    result = CliRunner().invoke(doctor, ["--config", str(bad)])
    assert result.exit_code == 1 and "[FAIL] config" in result.output and "device_id" in result.output


def test_a_command_queued_for_the_stopped_agent_is_still_delivered_after_doctor(broker: MosquittoBroker,
                                                                                layout: Path, tmp_path: Path) -> None:
    """doctor uses the agent's client id but resumes its session and acknowledges nothing meant for the agent."""
    import threading
    import time

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    def device_session() -> tuple[mqtt.Client, list[bytes], threading.Event]:
        got: list[bytes] = []
        seen = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-a", protocol=mqtt.MQTTv5)

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            got.append(bytes(msg.payload))
            seen.set()

        c.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        c.loop_start()
        return c, got, seen

    agent, _, _ = device_session()
    agent.subscribe("meters/dev-a/cmd/+", qos=1)
    time.sleep(0.5)
    agent.disconnect()
    agent.loop_stop()
    operator = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="op", protocol=mqtt.MQTTv5)
    operator.connect("127.0.0.1", broker.port)
    operator.loop_start()
    operator.publish("meters/dev-a/cmd/capture", b'{"id": "c1"}', qos=1).wait_for_publish(5)
    operator.disconnect()
    operator.loop_stop()

    code, _ = invoke(write_toml(tmp_path, broker.port, layout))
    assert code == 0

    agent, got, seen = device_session()
    try:
        assert seen.wait(5), "the queued command was lost"
        assert got == [b'{"id": "c1"}']
    finally:
        agent.disconnect()
        agent.loop_stop()
