"""What the resident's pages are built from, without a browser: the window in local time, consumption
per day and month, chart ticks, and the notifications feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from web_helpers import ALICE, BOB, NOW, make_config, seed

from cloud_bridge.store import open_store
from cloud_bridge.store.device_latest import rebuild as rebuild_latest
from cloud_bridge.store.tables import device_status, readings
from cloud_bridge.submission.periods import WindowRule
from cloud_bridge.web.charts import nice_step
from cloud_bridge.web.feed import payer_events
from cloud_bridge.web.portal import ReadingRow, consumption, payer_view, window_view

RULE = WindowRule(15, 3, "Europe/Moscow")


@pytest.mark.parametrize(("now", "period", "is_open", "closes_local", "next_opens_local"), [
    ("2026-11-20T09:00:00Z", "2026-11", True, "2026-12-04T00:00", "2026-12-15T00:00"),
    ("2026-12-03T20:59:59Z", "2026-11", True, "2026-12-04T00:00", "2026-12-15T00:00"),  # 23:59:59 in Moscow
    ("2026-12-03T21:00:00Z", "2026-11", False, "2026-12-04T00:00", "2026-12-15T00:00"),  # closed at midnight
    ("2026-12-10T12:00:00Z", "2026-11", False, "2026-12-04T00:00", "2026-12-15T00:00"),
    ("2026-12-14T21:00:00Z", "2026-12", True, "2027-01-04T00:00", "2027-01-15T00:00"),  # 15 Dec 00:00 Moscow
])
def test_window_in_local_time(now: str, period: str, is_open: bool, closes_local: str, next_opens_local: str) -> None:
    w = window_view(RULE, datetime.fromisoformat(now.replace("Z", "+00:00")))
    local = RULE.tz
    assert (w.period, w.is_open) == (period, is_open)
    assert w.closes_at.astimezone(local).strftime("%Y-%m-%dT%H:%M") == closes_local
    assert w.next_opens_at.astimezone(local).strftime("%Y-%m-%dT%H:%M") == next_opens_local


def _row(i: int, at: str, value: str | None, status: str = "ok", corrected: str | None = None) -> ReadingRow:
    r = ReadingRow(i, datetime.fromisoformat(at).replace(tzinfo=UTC), "M", value, status, None, None)
    r.corrected_value = corrected
    return r


def test_consumption_uses_only_values_that_could_be_billed() -> None:
    rows = [_row(1, "2026-11-01T08:00", "00010.000"), _row(2, "2026-11-01T20:00", "00010.500"),
            _row(3, "2026-11-02T08:00", "00099.000", "suspect"),  # never counted
            _row(4, "2026-11-02T20:00", None, "error", corrected="00011.000"),  # a correction counts
            _row(5, "2026-11-04T08:00", "00012.250")]
    daily = consumption(rows, lambda t: t.strftime("%Y-%m-%d"), 31)
    assert daily == [("2026-11-01", Decimal("0.500")), ("2026-11-02", Decimal("0.500")),
                     ("2026-11-04", Decimal("1.250"))]
    assert consumption(rows, lambda t: t.strftime("%Y-%m-%d"), 1) == [("2026-11-04", Decimal("1.250"))]
    assert consumption([], lambda t: "x", 5) == []


@pytest.mark.parametrize(("top", "step"), [(0.3, 0.1), (0.1, 0.025), (7.7, 2), (8.0, 2), (45, 20), (0, 1)])
def test_chart_ticks_are_round(top: float, step: float) -> None:
    assert nice_step(top) == pytest.approx(step)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Any:
    """The seeded world on SQLite and on PostgreSQL."""
    engine = open_store(db_url)
    seed(engine)
    yield engine, make_config(db_url, tmp_path)
    engine.dispose()


def test_payer_view_current_value_skips_unsure_readings(store: Any) -> None:
    engine, config = store
    with engine.connect() as conn:
        view = payer_view(conn, config, ALICE, NOW)
    cold = next(m for m in view.meters if m.kind == "cold")
    assert cold.current is not None and cold.current.value == "00135.000"
    assert cold.latest is not None and cold.latest.status == "suspect"
    assert not cold.needs_attention and cold.billed is None
    assert [p for p, _ in cold.monthly] == ["2026-09", "2026-10", "2026-11"]
    assert sum(v for _, v in cold.monthly) == Decimal("15.000")  # 135.000 - 120.000, the first reading


def test_feed_offline_and_attention(store: Any) -> None:
    engine, config = store
    with engine.begin() as conn:  # Bob's readings all unsure; his device went offline two days ago
        conn.execute(update(readings).where(readings.c.device_id == "dev-b").values(status="suspect"))
        rebuild_latest(conn, ["dev-b"])  # readings changed underneath the store: recompute its row
        conn.execute(device_status.insert().values(device_id="dev-b", online=False,
                                                   changed_at=NOW - timedelta(days=2)))
        conn.execute(device_status.insert().values(device_id="dev-a-cold", online=True, changed_at=NOW))
    late = datetime(2026, 12, 1, 9, tzinfo=UTC)  # within 3 days of the window closing (end of 3 Dec)
    with engine.connect() as conn:
        early_events = payer_events(conn, config, BOB, NOW)
        late_events = payer_events(conn, config, BOB, late)
        alice = payer_events(conn, config, ALICE, late)
    assert [e.kind for e in early_events] == []  # readings stored until NOW: not silent for a day yet
    kinds = {e.kind: e for e in late_events}
    assert set(kinds) == {"offline", "attention"}
    assert kinds["attention"].meter_serial == "M-B" and kinds["attention"].period == "2026-11"
    assert kinds["offline"].device_id == "dev-b"
    # Alice's cold device is online; her hot one has no status and no reading for 11 days.
    assert [(e.kind, e.device_id) for e in alice] == [("offline", "dev-a-hot")]


def test_a_misread_the_bridge_settled_as_an_outlier_is_shown_in_words_and_never_counted(store: Any) -> None:
    from web_helpers import store_readings

    from cloud_bridge.settlement import settle_meter
    from cloud_bridge.web.i18n import translations
    from cloud_bridge.web.words import Words

    engine, config = store
    # A 1 read as 7 on the tens wheel, sent ok by the device, between two good days.
    misread_at = NOW - timedelta(days=10, hours=13)
    [misread] = store_readings(engine, "dev-a-cold", 1000, [(misread_at, "00195.000", "ok", None)])
    with engine.begin() as conn:
        settle_meter(conn, "M-A-C", config.settlement, NOW)
    with engine.connect() as conn:
        view = payer_view(conn, config, ALICE, NOW)
    row = next(r for r in view.readings if r.id == misread)
    assert row.settlement == "outlier" and row.usable is None
    words = Words(translations("en"))
    assert words.reading_status(row) == "not used"
    assert words.reading_reason(row) in {"higher than the readings after it", "does not fit the readings around it"}
    cold = next(m for m in view.meters if m.kind == "cold")
    assert max(v for _, v in cold.daily) < Decimal("1")  # the misread does not make a 60 m³ day
    assert sum(v for _, v in cold.monthly) == Decimal("15.000")
