"""Commands: parsing is a table of cases; against a broker, good commands act and malformed ones are
refused with a reason in the log and telemetry and change nothing."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentThread, edge_config

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import Reading, Telemetry
from edge.transport.commands import Command, Refused, parse_command


@pytest.mark.parametrize(("topic", "payload", "retained", "expect"), [
    ("meters/d1/cmd/capture", b"", False, "capture"),
    ("meters/d1/cmd/capture", b"{}", False, "capture"),
    ("meters/d1/cmd/reload", b'{"why": "new layout"}', False, "reload"),
    ("meters/d1/cmd/set-value", b'{"value": "00123.456"}', False, "set-value"),
    ("meters/d1/cmd/set-value", b'{"value": "7", "at": "2026-11-24T17:00:00Z"}', False, "set-value"),
    ("meters/d1/cmd/capture", b"{not json", False, "bad JSON"),
    ("meters/d1/cmd/capture", b"[1, 2]", False, "JSON object"),
    ("meters/d1/cmd/reboot", b"", False, "unknown command"),
    ("meters/d1/cmd/set-value", b'{"value": "12a.4"}', False, "decimal string"),
    ("meters/d1/cmd/set-value", b'{"value": 123.4}', False, "decimal string"),
    ("meters/d1/cmd/set-value", b'{"value": "-1"}', False, "decimal string"),
    ("meters/d1/cmd/set-value", b'{"value": "1", "extra": 1}', False, "extra"),
    ("meters/d1/cmd/set-value", b"", False, "needs a payload"),
    ("meters/d1/cmd/set-value", b"\xff\xfe", False, "bad JSON"),
    ("meters/d1/cmd/capture", b"x" * 5000, False, "larger than"),
    ("meters/d1/cmd/capture", b"", True, "retained"),
    ("meters/d2/cmd/capture", b"", False, "not a command topic of this device"),
])
def test_parse_command(topic: str, payload: bytes, retained: bool, expect: str) -> None:
    got = parse_command("d1", topic, payload, retained=retained)
    if isinstance(got, Command):
        assert got.name == expect
        if got.name == "set-value":
            assert got.set_value is not None
    else:
        assert isinstance(got, Refused)
        assert expect in got.reason, got.reason


def _telemetry(col: Any) -> Telemetry:
    return Telemetry.model_validate_json(col.on("/telemetry")[-1].payload)


@pytest.mark.mosquitto
def test_commands_against_a_running_agent(broker: MosquittoBroker, tmp_path: Path, collector_factory: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.agent")
    col = collector_factory(broker.port, ["meters/dev-a/#"], bridge=True)
    cfg = edge_config(tmp_path, broker.port, interval_s=3600)  # one scheduled cycle at start, then commands
    at = AgentThread(cfg).start()
    agent = at.agent
    pub = col.c
    try:
        assert col.wait_for(lambda: col.seqs() == [1])
        state_before = agent.outbox.reading_state()
        assert state_before == {"previous": "00100.001"}

        # capture: one more cycle now
        pub.publish("meters/dev-a/cmd/capture", b"", qos=1)
        assert col.wait_for(lambda: col.seqs() == [1, 2])
        state_before = agent.outbox.reading_state()

        # malformed: each refused, counted, in the log and telemetry; nothing changes
        bad = [("meters/dev-a/cmd/set-value", b"{oops", "bad JSON"),
               ("meters/dev-a/cmd/self-destruct", b"", "unknown command"),
               ("meters/dev-a/cmd/set-value", b'{"value": "twelve"}', "decimal string"),
               ("meters/dev-a/cmd/set-value", b'{"value": 12.5}', "decimal string")]
        for n, (topic, payload, reason) in enumerate(bad, start=1):
            pub.publish(topic, payload, qos=1)
            assert col.wait_for(lambda n=n: _telemetry(col).commands_refused == n), f"{topic} not refused"
            tel = _telemetry(col)
            assert tel.last_error is not None and reason in tel.last_error
            assert any(reason in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
        time.sleep(0.2)
        assert col.seqs() == [1, 2], "a refused command must not run a cycle"
        assert agent.outbox.reading_state() == state_before
        assert agent.outbox.last_seq() == 2

        # set-value: the next reading continues from the installer's value
        pub.publish("meters/dev-a/cmd/set-value", b'{"value": "00200.000"}', qos=1)
        assert col.wait_for(lambda: (agent.outbox.reading_state() or {}).get("previous") == "00200.000")
        pub.publish("meters/dev-a/cmd/capture", b"", qos=1)
        assert col.wait_for(lambda: len(col.seqs()) == 3)
        assert Reading.model_validate_json(col.on("/reading")[-1].payload).value == "00200.001"
        assert _telemetry(col).commands_refused == 4
    finally:
        at.stop()


@pytest.mark.mosquitto
def test_reload_rereads_the_config_and_a_bad_one_is_refused(broker: MosquittoBroker, tmp_path: Path,
                                                            collector_factory: Any) -> None:
    from edge.config import load_edge_config

    conf = tmp_path / "edge.toml"
    body = (f'device_id = "dev-a"\nstate_dir = "{tmp_path / "state"}"\ninterval_s = 3600\n'
            f"[mqtt]\nport = {broker.port}\nreconnect_min_s = 1\nreconnect_max_s = 1\n")
    conf.write_text(body)
    col = collector_factory(broker.port, ["meters/dev-a/#"], bridge=True)
    at = AgentThread(load_edge_config(conf), config_path=conf).start()
    try:
        assert col.wait_for(lambda: col.seqs() == [1])
        conf.write_text(body.replace("interval_s = 3600", "interval_s = 0.05"))
        col.c.publish("meters/dev-a/cmd/reload", b"", qos=1)
        assert col.wait_for(lambda: len(col.seqs()) >= 4), "the new interval did not take effect"
        assert at.agent.cfg.interval_s == 0.05
        conf.write_text(body.replace("interval_s = 3600", "interval_s = -1"))
        col.c.publish("meters/dev-a/cmd/reload", b"", qos=1)
        assert col.wait_for(lambda: _telemetry(col).commands_refused == 1)
        assert "interval_s" in (_telemetry(col).last_error or "")
        assert at.agent.cfg.interval_s == 0.05, "a bad config must leave the old one in force"
    finally:
        at.stop()
