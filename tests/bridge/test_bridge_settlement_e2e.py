"""End to end through a real Mosquitto (SQLite and PostgreSQL, the real billing sandbox): devices publish a
month of readings with the misreads of issue 13 sent as `ok`; the bridge ingests and settles them; a
submission pass inside the window bills every meter once, with the true value at its `taken_at`, taken
within 48 h of the meter's latest frame; the next month bills normally."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

import httpx
import pytest
from bridge_helpers import Device, InProcessBridge, config, register, wait_until
from sqlalchemy import Engine, func, select

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.settlement import settle_dirty
from cloud_bridge.store.tables import readings, settlements
from cloud_bridge.submission.passes import run_submission_pass
from cloud_bridge.submission.periods import parse_instant
from contract.payloads import Reading, format_utc

pytestmark = [pytest.mark.mosquitto]

DEVICES = ["e2e-0", "e2e-1", "e2e-2"]
START = datetime(2026, 10, 1, tzinfo=UTC)
EVERY = timedelta(hours=4)
RATES = [Decimal("0.0125"), Decimal("0.02"), Decimal("0.031")]  # m3/h: three households
BASES = [Decimal("123.693"), Decimal("160.07"), Decimal("998.5")]


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

        report = run_submission_pass(engine, cfg, at)
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
        nov = run_submission_pass(engine, cfg, nov_at)
        assert nov.counts() == {"accepted": 3}, nov.to_json()
        got = httpx.get(f"{sandbox.url}/v1/readings").json()["readings"]
        assert len(got) == 6 and not [r for r in sandbox.store.requests() if r["status"] == 422]
        for g in got:
            i = DEVICES.index(g["meter_serial"][3:])
            assert g["value"] == truth(i, parse_instant(g["taken_at"]))
        assert len(sandbox.store.credits()) == 6
    finally:
        dev.close()
