"""Acks that stop coming while the connection stays up (seen on RabbitMQ 3.10 after a node failed:
docs/operate-city-scale.md, "Failure modes"). After `mqtt.stall_rounds` rounds of resends with no ack
at all the agent drops the connection and connects again (new `online`, subscribe, announce), counts
it in telemetry, and settles once the bridge's acks arrive. A bridge whose acks come, even late, never
causes a reconnect; `stall_rounds = 0` switches it off. Real Mosquitto, the bridge a test subscriber."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_helpers import AgentThread, Collector, edge_config

from cloud_bridge.broker import MosquittoBroker
from contract.payloads import Ack, Reading, Telemetry
from edge.transport.outbox import Outbox


def _statuses(col: Collector) -> list[bytes]:
    return [bytes(m.payload) for m in col.on("/status")]


def _telemetry(col: Collector) -> list[Telemetry]:
    return [Telemetry.model_validate_json(m.payload) for m in col.on("/telemetry")]


def _reading_copies_before_second_online(col: Collector) -> int:
    copies = onlines = 0
    for m in list(col.messages):
        if m.topic.endswith("/status") and m.payload == b"online":
            onlines += 1
            if onlines == 2:
                return copies
        elif m.topic.endswith("/reading"):
            copies += 1
    raise AssertionError("no second `online`")


@pytest.mark.mosquitto
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])  # 3.1.1: what the RabbitMQ 3.10 fleet broker speaks
def test_a_bridge_whose_acks_stop_on_a_live_connection_gets_a_reconnect(broker: MosquittoBroker, tmp_path: Path,
                                                                        collector_factory: Any, protocol: str) -> None:
    col = collector_factory(broker.port, ["meters/dev-a/#"], bridge=False)  # connected, not acking
    cfg = edge_config(tmp_path, broker.port, interval_s=3600, ack_timeout_s=0.5,
                      mqtt={"stall_rounds": 2, "protocol": protocol})
    at = AgentThread(cfg).start()
    try:
        assert col.wait_for(lambda: _statuses(col).count(b"online") == 2, timeout=20), \
            f"no reconnect; statuses {_statuses(col)}, {len(col.on('/reading'))} reading copies"
        # the reading went out once, then two rounds of resends went unanswered; then the reconnect
        assert _reading_copies_before_second_online(col) >= 3
        assert b"offline" not in _statuses(col)  # a clean DISCONNECT: no will, the session stays
        assert col.wait_for(lambda: any(t.stall_reconnects == 1 for t in _telemetry(col)))
        col.bridge = True  # the acks come through again
        assert col.wait_for(lambda: len(col.on("/ack")) >= 1, timeout=10)
        copies = len(col.on("/reading"))
        assert not col.wait_for(lambda: len(col.on("/reading")) > copies, timeout=2.0), "resent after its ack"
        assert _statuses(col).count(b"online") == 2  # settled: no further reconnect
        assert at.agent.session.stall_reconnects == 1
    finally:
        at.stop()
    outbox = Outbox(cfg.state_dir)
    try:
        assert outbox.depth() == 0 and outbox.count("done") == 1
    finally:
        outbox.close()


def _copies_between_onlines(col: Collector) -> list[int]:
    """Reading copies the broker passed on during each connection (split at each `online`)."""
    counts: list[int] = []
    for m in list(col.messages):
        if m.topic.endswith("/status") and m.payload == b"online":
            counts.append(0)
        elif m.topic.endswith("/reading") and counts:
            counts[-1] += 1
    return counts


@pytest.mark.mosquitto
def test_a_bridge_silent_across_reconnects_gets_them_ever_rarer(broker: MosquittoBroker, tmp_path: Path,
                                                                collector_factory: Any) -> None:
    """A reconnect that brings back no ack either points at the bridge (down), not the broker: the next
    waits twice as many rounds, so a fleet does not reconnect in step while its bridge is away."""
    col = collector_factory(broker.port, ["meters/dev-a/#"], bridge=False)
    cfg = edge_config(tmp_path, broker.port, interval_s=3600, ack_timeout_s=0.5, mqtt={"stall_rounds": 1})
    at = AgentThread(cfg).start()
    try:
        assert col.wait_for(lambda: _statuses(col).count(b"online") >= 4, timeout=40), _copies_between_onlines(col)
        copies = _copies_between_onlines(col)
        # 1 round, then 2, then 4 (each round one copy; paho may add its own resend after a reconnect)
        assert copies[0] >= 2 and copies[1] >= 2 and copies[2] >= 4, copies
        assert at.agent.session.stall_reconnects >= 3
    finally:
        at.stop()


class SecondCopyBridge(Collector):
    """A slow bridge: answers each reading only when it comes the second time."""

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(msg)
        if msg.topic.endswith("/reading"):
            r = Reading.model_validate_json(msg.payload)
            if sum(1 for m in self.on("/reading") if Reading.model_validate_json(m.payload).seq == r.seq) >= 2:
                c.publish(f"meters/{r.device_id}/ack", Ack(seq=r.seq, state="stored").to_json_bytes(), qos=1)


@pytest.mark.mosquitto
def test_acks_that_come_even_late_never_cause_a_reconnect(broker: MosquittoBroker, tmp_path: Path) -> None:
    col = SecondCopyBridge(broker.port, ["meters/dev-a/#"]).start()
    # every reading is resent once, in every round, and stall_rounds is as small as it gets
    cfg = edge_config(tmp_path, broker.port, interval_s=0.3, ack_timeout_s=0.5, mqtt={"stall_rounds": 1})
    at = AgentThread(cfg).start()
    try:
        assert col.wait_for(lambda: len(col.on("/ack")) >= 8, timeout=20)
        seqs = [Reading.model_validate_json(m.payload).seq for m in col.on("/reading")]
        assert len(seqs) > len(set(seqs)) >= 8  # resends went out
        assert _statuses(col) == [b"online"]
        assert at.agent.session.stall_reconnects == 0
        # telemetry leaves the count out while it is 0: a bridge without the field still takes it
        assert all("stall_reconnects" not in json.loads(m.payload) for m in col.on("/telemetry"))
    finally:
        at.stop()
        col.stop()


@pytest.mark.mosquitto
def test_stall_rounds_zero_never_reconnects(broker: MosquittoBroker, tmp_path: Path,
                                            collector_factory: Any) -> None:
    col = collector_factory(broker.port, ["meters/dev-a/#"], bridge=False)
    cfg = edge_config(tmp_path, broker.port, interval_s=3600, ack_timeout_s=0.5, mqtt={"stall_rounds": 0})
    at = AgentThread(cfg).start()
    try:
        assert col.wait_for(lambda: len(col.on("/reading")) >= 6, timeout=20)  # five rounds of resends
        assert _statuses(col) == [b"online"]
        assert at.agent.session.stall_reconnects == 0
    finally:
        at.stop()


def test_the_count_is_on_the_wire_only_when_there_is_one() -> None:
    t = Telemetry.model_validate_json(
        b'{"uptime_s":1,"outbox_depth":0,"stall_reconnects":2,"at":"2026-12-06T09:00:00Z"}')
    assert t.stall_reconnects == 2 and json.loads(t.to_json_bytes())["stall_reconnects"] == 2
    assert "stall_reconnects" not in json.loads(t.model_copy(update={"stall_reconnects": 0}).to_json_bytes())
