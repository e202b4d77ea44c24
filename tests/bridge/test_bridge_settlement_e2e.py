"""End to end through a real Mosquitto (SQLite and PostgreSQL, the real billing sandbox): devices publish a
month of readings with the misreads of issue 13 sent as `ok`; the bridge ingests and settles them; a
submission pass inside the window bills every meter once, with the true value at its `taken_at`, taken
within 48 h of the meter's latest frame; the next month bills normally."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from bridge_helpers import Device, InProcessBridge, config, register, wait_until
from sqlalchemy import Engine, func, select

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.settlement import settle_dirty
from cloud_bridge.store.tables import readings, settlements
from cloud_bridge.submission.passes import PassReport, run_submission_pass
from cloud_bridge.submission.periods import parse_instant
from contract.payloads import Reading, format_utc

pytestmark = [pytest.mark.mosquitto]

DEVICES = ["e2e-0", "e2e-1", "e2e-2"]
START = datetime(2026, 10, 1, tzinfo=UTC)
EVERY = timedelta(hours=4)
RATES = [Decimal("0.0125"), Decimal("0.02"), Decimal("0.031")]  # m3/h: three households
BASES = [Decimal("123.693"), Decimal("160.07"), Decimal("998.5")]


def _pass(engine: Engine, cfg: Any, at: datetime) -> PassReport:
    with http_gateways(cfg) as gateways:
        return run_submission_pass(engine, cfg, at, gateways=gateways)


def truth(i: int, t: datetime) -> str:
    """What meter i's wheels show at t: the exact value, cut to the lowest wheel."""
    exact = BASES[i] + RATES[i] * Decimal((t - START).total_seconds() / 3600)
    return f"{exact.quantize(Decimal('0.001'), rounding=ROUND_FLOOR):09.3f}"


HIGH = datetime(2026, 10, 20, 16, tzinfo=UTC)
LOW = datetime(2026, 10, 12, 8, tzinfo=UTC)


def off(i: int, t: datetime, by: str) -> str:
    """A misread: the truth at t, `by` m3 off (a wheel read wrong)."""
    return f"{Decimal(truth(i, t)) + Decimal(by):09.3f}"


def frames(i: int, start: datetime, until: datetime, misreads: dict[datetime, tuple[str | None, str]]
           ) -> Iterator[tuple[datetime, str | None, str]]:
    t = start
    while t <= until:
        value, status = misreads.get(t, (truth(i, t), "ok"))
        yield t, value, status
        t += EVERY


def publish(dev: Device, seqs: dict[str, int], i: int, items: Iterator[tuple[datetime, str | None, str]]) -> int:
    n = 0
    for t, value, status in items:
        device = DEVICES[i]
        seqs[device] = seqs.get(device, 0) + 1
        r = Reading.model_validate({
            "device_id": device, "seq": seqs[device], "taken_at": format_utc(t), "value": value, "status": status,
            "reason": None if status == "ok" else "digit 4 below confidence", "confidence": 0.97,
            "digits": [], "model": "test-model"})
        dev.publish_reading(r).wait_for_publish(5)
        n += 1
    return n


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(readings)).scalar_one())


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server


def test_a_month_through_mqtt_bills_each_meter_once_with_the_true_value(
        broker: MosquittoBroker, engine: Engine, db_url: str, tmp_path: Path, sandbox: SandboxServer) -> None:
    register(engine, DEVICES)
    cfg = config(db_url, broker.port, tmp_path, billing={"url": sandbox.url}, loyalty={"url": sandbox.url},
                 submission={"backoff_base_s": 0.05, "max_wait_in_pass_s": 1.0})
    at = parse_instant("2026-10-21T00:00:00Z")
    misreads: list[dict[datetime, tuple[str | None, str]]] = [
        # an absurd value sent ok, the newest ok before the pass
        {datetime(2026, 10, 20, 20, tzinfo=UTC): ("999999999999.000000", "ok")},
        # the tenths wheel read 3 as 8 (or 0 as 5), sent ok; and a low misread days before
        {HIGH: (off(1, HIGH, "0.5"), "ok"), LOW: (off(1, LOW, "-0.3"), "ok")},
        # the device held its last frames back as suspect (values right, confidence low)
        {datetime(2026, 10, 20, h, tzinfo=UTC): (truth(2, datetime(2026, 10, 20, h, tzinfo=UTC)), "suspect")
         for h in (12, 16, 20)},
    ]
    dev = Device(broker.port)
    seqs: dict[str, int] = {}
    try:
        with InProcessBridge(engine, cfg) as bridge:
            total = sum(publish(dev, seqs, i, frames(i, START, at, misreads[i])) for i in range(3))
            assert wait_until(lambda: stored(engine) == total, timeout=60), (stored(engine), total)
            assert bridge.alive
        settle_dirty(engine, cfg.settlement, datetime.now(UTC))  # what the running bridge's timer does
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(settlements)).scalar_one() == total

        report = _pass(engine, cfg, at)
        assert report.counts() == {"accepted": 3}, report.to_json()
        got = httpx.get(f"{sandbox.url}/v1/readings").json()["readings"]
        assert sorted(g["meter_serial"] for g in got) == [f"SN-{d}" for d in DEVICES]  # once each
        for g in got:
            i = DEVICES.index(g["meter_serial"][3:])
            taken = parse_instant(g["taken_at"])
            assert g["value"] == truth(i, taken), (g, misreads[i].get(taken))
            assert at - taken <= timedelta(hours=48), g  # the latest frame is at `at`
        by_meter = {g["meter_serial"]: parse_instant(g["taken_at"]) for g in got}
        assert by_meter["SN-e2e-0"] == datetime(2026, 10, 20, 12, tzinfo=UTC)  # not the absurd one at 20:00
        assert by_meter["SN-e2e-1"] == datetime(2026, 10, 20, 12, tzinfo=UTC)  # not the misread at 16:00
        assert by_meter["SN-e2e-2"] == datetime(2026, 10, 20, 8, tzinfo=UTC)  # not the suspect ones after it
        assert len(sandbox.store.credits()) == 3  # three payers, points once each

        # November: the meters keep turning; billing holds October's values; every meter bills normally.
        nov_at = parse_instant("2026-11-20T00:00:00Z")
        with InProcessBridge(engine, cfg):
            more = sum(publish(dev, seqs, i, frames(i, at + EVERY, nov_at, {})) for i in range(3))
            assert wait_until(lambda: stored(engine) == total + more, timeout=60)
        nov = _pass(engine, cfg, nov_at)
        assert nov.counts() == {"accepted": 3}, nov.to_json()
        got = httpx.get(f"{sandbox.url}/v1/readings").json()["readings"]
        assert len(got) == 6 and not [r for r in sandbox.store.requests() if r["status"] == 422]
        for g in got:
            i = DEVICES.index(g["meter_serial"][3:])
            assert g["value"] == truth(i, parse_instant(g["taken_at"]))
        assert len(sandbox.store.credits()) == 6
    finally:
        dev.close()


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=600,
                          check=False)


SEEDS = {"sim-a": 3, "sim-b": 7}


@pytest.fixture(scope="module")
def edge_readings(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, str]],
                                                                     dict[str, list[dict[str, Any]]]]:
    """Two simulated households (camera faults on), every frame read by `meter-edge read`: the truth per
    frame time, and the readings as the device decided them (its own per-frame status, misreads included).
    Once per module: the device side does not depend on the bridge's database."""
    from edge.capture.simulator import SIM_ROIS

    work = tmp_path_factory.mktemp("edge")
    truths: dict[str, dict[str, str]] = {}
    published: dict[str, list[dict[str, Any]]] = {}
    for device, seed in SEEDS.items():
        frames_dir = work / device
        sim = _edge("simulate", "--days", "2", "--interval-min", "120", "--seed", str(seed), "--start",
                    "2026-10-18T00:00:00Z", "--out", str(frames_dir))
        assert sim.returncode == 0, sim.stderr
        layout = work / f"{device}.toml"
        cal = _edge("calibrate", "--image", str(frames_dir / "reference.jpg"), "--rois", SIM_ROIS, "--decimals", "3",
                    "--out", str(layout))
        assert cal.returncode == 0, cal.stderr
        read = _edge("read", *map(str, sorted(frames_dir.glob("*Z.jpg"))), "--layout", str(layout))
        assert read.returncode in (0, 1), read.stderr
        truths[device] = {r["taken_at"]: r["value_exact"] for r in csv.DictReader((frames_dir / "truth.csv").open())}
        published[device] = []
        for seq, line in enumerate(x for x in read.stdout.splitlines() if x.startswith("{")):
            d = json.loads(line)
            fields = {k: d[k] for k in ("v", "taken_at", "value", "unit", "confidence", "digits", "model")}
            published[device].append({**fields, "device_id": device, "seq": seq + 1, "status": d["device_status"],
                                      "reason": d["device_reason"]})
    return truths, published


@pytest.mark.slow
def test_frames_read_by_meter_edge_billed_with_the_true_value(
        broker: MosquittoBroker, engine: Engine, db_url: str, tmp_path: Path, sandbox: SandboxServer,
        edge_readings: tuple[dict[str, dict[str, str]], dict[str, list[dict[str, Any]]]]) -> None:
    """The issue's billing target with the real device pipeline: the readings `meter-edge read` made of two
    simulated households, published as the device decided them, ingested, settled, billed in the window."""
    truths, published = edge_readings
    seeds = SEEDS
    register(engine, list(seeds))
    cfg = config(db_url, broker.port, tmp_path, billing={"url": sandbox.url}, loyalty={"url": sandbox.url})
    dev = Device(broker.port)
    try:
        with InProcessBridge(engine, cfg):
            for items in published.values():
                for item in items:
                    dev.publish_reading(Reading.model_validate(item)).wait_for_publish(5)
            total = sum(len(v) for v in published.values())
            assert wait_until(lambda: stored(engine) == total, timeout=60), (stored(engine), total)
    finally:
        dev.close()
    at = parse_instant("2026-10-20T00:00:00Z")  # just after the last frame (22:00)
    report = _pass(engine, cfg, at)
    assert report.counts() == {"accepted": 2}, report.to_json()
    got = httpx.get(f"{sandbox.url}/v1/readings").json()["readings"]
    assert sorted(g["meter_serial"] for g in got) == [f"SN-{d}" for d in sorted(seeds)]  # once each
    for g in got:
        device = g["meter_serial"][3:]
        exact = Decimal(truths[device][g["taken_at"]])
        # The lowest wheel is always between two numbers: one step either side is the truth (docs/decisions.md).
        assert abs(Decimal(g["value"]) - exact) <= Decimal("0.0011"), (g, exact)
        assert at - parse_instant(g["taken_at"]) <= timedelta(hours=48)
        sent_ok = [p for p in published[device] if p["status"] == "ok" and p["value"] is not None]
        wrong = [p for p in sent_ok if abs(Decimal(p["value"]) - Decimal(truths[device][p["taken_at"]]))
                 > Decimal("0.0011")]
        assert all(p["taken_at"] != g["taken_at"] for p in wrong)  # a misread the device sent ok is not billed
