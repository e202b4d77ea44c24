"""Device health, the period's progress, the fleet page's filters and the store's metrics, on SQLite and
PostgreSQL alike, from messages handled the way ingest handles them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge_helpers import register
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from cloud_bridge.config import BridgeConfig
from cloud_bridge.device_health import (
    FleetFilter,
    attention_reasons,
    billing_state,
    device_health,
    fleet_listing,
    meter_states,
    period_progress,
)
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle_batch
from cloud_bridge.metrics import StoreCollector
from cloud_bridge.store.tables import submissions
from contract.payloads import Reading, Telemetry

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # November's window (15 Nov - 3 Dec, Moscow) is open


def _r(device_id: str, seq: int, at: datetime, value: str | None, status: str = "ok") -> Message:
    r = Reading(device_id=device_id, seq=seq, taken_at=at, value=value, status=status,  # type: ignore[arg-type]
                reason=None if status == "ok" else "low_confidence", confidence=0.9)
    return Message(f"meters/{device_id}/reading", r.to_json_bytes())


def _fill(engine: Engine) -> None:
    register(engine, ["a-ok", "b-off", "c-bad", "d-new"])  # payers 1000000000 … 1000000003
    msgs = [_r("a-ok", 1, NOW - timedelta(hours=2), "00010.000"), _r("a-ok", 2, NOW - timedelta(hours=1), "00010.100"),
            _r("b-off", 1, NOW - timedelta(days=2), "00005.000"),
            _r("c-bad", 1, NOW - timedelta(hours=5), "00001.000"),
            _r("c-bad", 2, NOW - timedelta(hours=4), None, "error"),
            _r("c-bad", 3, NOW - timedelta(hours=3), "00000.500", "suspect"),
            _r("c-bad", 4, NOW - timedelta(hours=1), None, "error"),
            Message("meters/a-ok/status", b"online"),
            Message("meters/c-bad/telemetry", Telemetry(uptime_s=5, outbox_depth=9, cpu_temp_c=66.0,
                                                        free_disk_bytes=10**9, disk_full=False, version="1.2",
                                                        at=NOW).to_json_bytes())]
    with engine.begin() as conn:
        # stored_at 30 h back (status changes then); the readings' own times are later, so no future check
        outcomes = handle_batch(conn, msgs, NOW - timedelta(hours=30), max_clock_skew_s=None)
        handle_batch(conn, [Message("meters/b-off/status", b"offline")], NOW - timedelta(hours=30))
        assert [o.kind for o in outcomes] == ["stored"] * 7 + ["status", "telemetry"]
        for key, payer, meter, state in (("1000000000:SN-a-ok:2026-11", "1000000000", "SN-a-ok", "accepted"),
                                         ("1000000002:SN-c-bad:2026-11", "1000000002", "SN-c-bad", "refused"),
                                         ("1000000002:SN-c-bad:2026-11:c3", "1000000002", "SN-c-bad", "pending")):
            conn.execute(submissions.insert().values(idempotency_key=key, payer_code=payer, meter_serial=meter,
                                                     period="2026-11", state=state, created_at=NOW, updated_at=NOW))


def test_health_progress_and_filters(engine: Engine) -> None:
    _fill(engine)
    cfg = BridgeConfig()
    with engine.connect() as conn:
        rows = device_health(conn, NOW, cfg.fleet)
        progress = period_progress(conn, NOW, cfg.window)
        states = meter_states(conn, "2026-11")
        only_c = device_health(conn, NOW, cfg.fleet, ["c-bad"])
    by = {h.device_id: h for h in rows}
    assert [h.device_id for h in rows] == ["a-ok", "b-off", "c-bad", "d-new"]
    assert (by["a-ok"].last_value, by["a-ok"].last_status, by["a-ok"].not_ok_in_row) == ("00010.100", "ok", 0)
    c = by["c-bad"]
    assert (c.last_seq, c.last_status, c.not_ok_in_row, c.readings) == (4, "error", 3, 4)
    assert (c.outbox_depth, c.cpu_temp_c, c.version, c.telemetry_at) == (9, 66.0, "1.2", NOW)
    assert only_c == [c]
    assert by["b-off"].online is False and by["b-off"].stale and by["b-off"].offline_since == NOW - timedelta(hours=30)
    assert by["d-new"].last_seq is None and not by["d-new"].stale  # registered just now: not stale yet
    assert (progress.period, progress.window_open, progress.meters_bound) == ("2026-11", True, 4)
    # c-bad's correction is pending, its first submission refused: one meter, state of its newest row.
    assert progress.by_state == {"accepted": 1, "pending": 1} and progress.not_billed == 3
    assert states[("1000000002", "SN-c-bad")] == "pending"
    assert attention_reasons(c, states, progress, NOW) == ["not_ok"]
    assert attention_reasons(by["a-ok"], states, progress, NOW) == []  # billed
    assert attention_reasons(c, states, progress, progress.window_closes) == []  # too late to act

    def names(flt: FleetFilter, limit: int = 100) -> list[str]:
        with engine.connect() as conn:  # the fleet page's filters, applied by the database
            listing = fleet_listing(conn, NOW, cfg.fleet, flt, progress, limit)
        assert (listing.total == 4 and listing.matched == len(listing.rows)) or limit < listing.matched
        assert listing.rows == [by[h.device_id] for h in listing.rows]  # the same rows as device_health's
        assert all(listing.states.get((h.payer_code, h.meter_serial)) == billing_state(h, states)  # type: ignore[arg-type]
                   for h in listing.rows)
        return [h.device_id for h in listing.rows]

    assert names(FleetFilter()) == ["a-ok", "b-off", "c-bad", "d-new"]
    assert names(FleetFilter(offline_h=24)) == ["b-off"] and names(FleetFilter(offline_h=31)) == []
    assert names(FleetFilter(not_ok=3)) == ["c-bad"] and names(FleetFilter(not_ok=4)) == []
    assert names(FleetFilter(unbilled=True)) == ["b-off", "c-bad", "d-new"]
    assert names(FleetFilter(attention=True)) == ["b-off", "c-bad", "d-new"]
    assert names(FleetFilter(attention=True, not_ok=1)) == ["c-bad"]
    assert names(FleetFilter(query="SN-B")) == ["b-off"]
    assert names(FleetFilter(query="%")) == [] and names(FleetFilter(query="_")) == []  # no LIKE wildcards
    assert names(FleetFilter(), limit=2) == ["a-ok", "b-off"]


def test_store_metrics_on_both_databases(engine: Engine) -> None:
    _fill(engine)
    registry = CollectorRegistry()
    registry.register(StoreCollector(engine, BridgeConfig()))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    assert samples[("meterfleet_store_up", ())] == 1
    assert samples[("meterfleet_devices", ())] == 4
    assert samples[("meterfleet_readings_stored_total", (("status", "error"),))] == 2
    assert samples[("meterfleet_devices_last_reading", (("status", "error"),))] == 1
    assert samples[("meterfleet_outbox_readings_max", ())] == 9
    assert samples[("meterfleet_period_meters_bound", ())] == 4
