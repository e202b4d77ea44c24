"""The operators' fleet page and device page in a real browser (Debian's chromium), on a store that a
real ingest worker filled from a real Mosquitto: status, telemetry and readings as devices publish
them. Phone width; a resident and a signed-out visitor cannot open any of it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import shot, sign_in
from web_helpers import PASSWORD, make_config, serve

from cloud_bridge.broker import MosquittoBroker
from cloud_bridge.config import BridgeConfig
from cloud_bridge.fleet import FleetPublisher
from cloud_bridge.ingest.mqtt_source import MqttSource
from cloud_bridge.ingest.worker import IngestWorker
from cloud_bridge.registry import add_device, bind, retire
from cloud_bridge.settlement import settle_dirty
from cloud_bridge.store import open_store
from cloud_bridge.store.tables import submissions
from cloud_bridge.web.users import create_user
from contract.payloads import Reading, Telemetry

# The bridge sees the devices' statuses at BRIDGE_NOW; the portal looks 30 hours later (November's window
# open). The readings (some dated up to 20 minutes before PORTAL_NOW) reach the ingest worker just before
# the portal looks: a bridge refuses readings dated ahead of its own clock (ingest.max_clock_skew_s).
BRIDGE_NOW = datetime(2026, 11, 19, 3, 0, tzinfo=UTC)
PORTAL_NOW = BRIDGE_NOW + timedelta(hours=30)
INGEST_NOW = PORTAL_NOW - timedelta(minutes=10)
OPERATOR, RESIDENT = "ops@example.org", "alice@example.org"

pytestmark = pytest.mark.mosquitto


def _reading(device_id: str, seq: int, at: datetime, value: str | None, status: str = "ok",
             reason: str | None = None) -> bytes:
    return Reading(device_id=device_id, seq=seq, taken_at=at, value=value, status=status,  # type: ignore[arg-type]
                   reason=reason, confidence=0.99 if status == "ok" else 0.3,
                   model="digits-int8-v3").to_json_bytes()


class Fleet:
    def __init__(self, url: str, engine: Any) -> None:
        self.url, self.engine = url, engine


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    tmp = tmp_path_factory.mktemp("fleet")
    db_url = f"sqlite:///{tmp / 'bridge.db'}"
    engine = open_store(db_url)
    since = BRIDGE_NOW - timedelta(days=20)
    with engine.begin() as conn:
        for i, dev in enumerate(("kitchen-ok", "bath-off", "hall-err", "porch-new")):
            add_device(conn, dev, now=since)
            if dev != "porch-new":
                bind(conn, dev, meter_serial=f"SN-{dev}", kind="hot" if dev == "bath-off" else "cold",
                     payer_code=f"100000000{i}", address=f"Flat {i}", now=since)
    create_user(engine, OPERATOR, "operator", PASSWORD)
    create_user(engine, RESIDENT, "resident", PASSWORD)
    with MosquittoBroker(tmp / "broker") as broker:
        base = make_config(db_url, tmp)
        config = BridgeConfig(**{**base.model_dump(), "mqtt": {"port": broker.port},
                                 "fleet": {"publish_every_s": 0.2, "sweep_every_s": 1.0}})
        source = MqttSource(config.mqtt, "bridge-0", subscribe_status=True)
        source.start()
        publisher = FleetPublisher(engine, lambda t, p, q, r: source.publish(t, p, qos=q, retain=r), config.fleet,
                                   config.window, sweep=True, clock=lambda: BRIDGE_NOW)
        ingest_now = [BRIDGE_NOW]
        worker = IngestWorker(engine, source, config, shard="bridge-0", fleet=publisher, clock=lambda: ingest_now[0])
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        dev = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        acks: list[bytes] = []
        dev.on_message = lambda _c, _u, m: acks.append(m.payload)
        subscribed = threading.Event()
        dev.on_subscribe = lambda *_a: subscribed.set()
        dev.connect("127.0.0.1", broker.port)
        dev.loop_start()
        dev.subscribe("meters/+/ack", qos=1)
        assert subscribed.wait(10)
        from sqlalchemy import func, select

        from cloud_bridge.store.tables import device_status, device_telemetry

        # At BRIDGE_NOW: bath-off goes offline (30 h before the portal looks), the other two are online.
        for name, status in (("kitchen-ok", b"online"), ("bath-off", b"offline"), ("hall-err", b"online")):
            dev.publish(f"meters/{name}/status", status, qos=1, retain=True)
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while datetime.now(UTC) < deadline:
            with engine.connect() as conn:
                if conn.execute(select(func.count()).select_from(device_status)).scalar_one() == 3:
                    break
            stop.wait(0.05)
        ingest_now[0] = INGEST_NOW
        fresh = PORTAL_NOW - timedelta(minutes=20)
        sent = 0
        # kitchen-ok: online, a steady course of ok readings, healthy telemetry; billed this period.
        for d in range(15, -1, -1):
            # Day 8: the device read 00999.000 and called it ok; settlement rules it out.
            value = "00999.000" if d == 8 else f"{120 + (15 - d) * 0.31:09.3f}"
            dev.publish("meters/kitchen-ok/reading", _reading("kitchen-ok", 100 - d, fresh - timedelta(days=d),
                                                              value), qos=1)
            sent += 1
        dev.publish("meters/kitchen-ok/telemetry", Telemetry(
            uptime_s=86400, outbox_depth=0, cpu_temp_c=47.2, free_disk_bytes=12_400_000_000, model="digits-int8-v3",
            version="0.4.1", at=BRIDGE_NOW).to_json_bytes(), qos=0, retain=True)
        # bath-off: went offline 30 h before the portal looks; its last reading is old (stale).
        for d in range(5, 0, -1):
            dev.publish("meters/bath-off/reading", _reading("bath-off", 10 - d, BRIDGE_NOW - timedelta(days=d),
                                                            f"{40 + (5 - d) * 0.1:09.3f}"), qos=1)
            sent += 1
        dev.publish("meters/bath-off/telemetry", Telemetry(
            uptime_s=3600, outbox_depth=7, last_error="mqtt: connection refused", cpu_temp_c=52.0,
            free_disk_bytes=3_100_000_000, model="digits-int8-v3", version="0.4.0",
            at=BRIDGE_NOW).to_json_bytes(), qos=0, retain=True)
        # hall-err: online, readings fine, then one unsure and three that could not be read at all.
        seq = 1
        for d in range(10, 0, -1):
            dev.publish("meters/hall-err/reading", _reading("hall-err", seq, fresh - timedelta(days=d, hours=1),
                                                            f"{10 + (10 - d) * 0.2:09.3f}"), qos=1)
            seq += 1
        dev.publish("meters/hall-err/reading", _reading("hall-err", seq, fresh - timedelta(hours=20), "00009.000",
                                                        "suspect", "decrease: 00009.000 is below 00011.800"), qos=1)
        seq += 1
        for h in (3, 2, 1):
            dev.publish("meters/hall-err/reading", _reading("hall-err", seq, fresh - timedelta(hours=h), None,
                                                            "error", "frame_failed: alignment failed (12 matches)"),
                        qos=1)
            seq += 1
        sent += seq - 1
        dev.publish("meters/hall-err/telemetry", Telemetry(
            uptime_s=7200, outbox_depth=2, last_error="camera: alignment failed (12 matches)", cpu_temp_c=71.5,
            free_disk_bytes=150_000_000, disk_full=True, model="digits-int8-v3", version="0.4.1",
            at=BRIDGE_NOW).to_json_bytes(), qos=0, retain=True)
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while len(acks) < sent and datetime.now(UTC) < deadline:
            stop.wait(0.05)
        assert len(acks) == sent, f"{len(acks)} of {sent} readings answered"
        while datetime.now(UTC) < deadline:
            with engine.connect() as conn:
                if conn.execute(select(func.count()).select_from(device_telemetry)).scalar_one() == 3:
                    break
            stop.wait(0.05)
        settle_dirty(engine, config.settlement, BRIDGE_NOW)  # what the running bridge's timer does
        stop.set()
        thread.join(10)
        dev.loop_stop()
        dev.disconnect()
        source.stop()
    with engine.begin() as conn:  # a Pi retired (stolen) before all this: history only, never stale or offline
        add_device(conn, "attic-old", now=since)
        bind(conn, "attic-old", meter_serial="SN-attic", kind="cold", payer_code="1000000009", address="Flat 9",
             now=since)
        retire(conn, "attic-old", now=since + timedelta(days=1))
    with engine.begin() as conn:  # kitchen-ok's meter was accepted by billing this period
        conn.execute(submissions.insert().values(
            idempotency_key="1000000000:SN-kitchen-ok:2026-11", payer_code="1000000000", meter_serial="SN-kitchen-ok",
            period="2026-11", value="00124.650", state="accepted", created_at=BRIDGE_NOW, updated_at=BRIDGE_NOW))
    with serve(engine, config, clock=lambda: PORTAL_NOW) as url:
        yield Fleet(url, engine)
    engine.dispose()






def listed(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("table.fleet tbody td:first-child a").all_inner_texts()]


def fits_the_phone(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_the_fleet_page_shows_every_device_and_filters_it(fleet: Fleet, page: Any, tmp_path: Path) -> None:
    sign_in(page, fleet.url, OPERATOR)
    assert page.url.endswith("/ops")
    assert listed(page) == ["attic-old", "bath-off", "hall-err", "kitchen-ok", "porch-new"]
    assert "списано" in page.locator("#device-attic-old").inner_text()
    assert fits_the_phone(page)  # the wide table scrolls inside its box, not the page
    row = page.locator("#device-hall-err")
    text = row.inner_text()
    assert "camera: alignment failed" in text and "72 °C" in text and "×4" in text  # 1 unsure + 3 not read
    assert "не прочитано" in text  # Russian by default
    assert "на связи" in page.locator("#device-kitchen-ok").inner_text()
    assert "ждёт следующих показаний" in page.locator("#device-kitchen-ok").inner_text()  # newest: not settled yet
    assert "1000000000" not in page.content()  # payer codes are not on the fleet page
    period = page.locator("#period").inner_text()
    assert "1 из 3" in period and "ноябрь 2026" in period

    def filtered(query: str) -> list[str]:
        page.goto(f"{fleet.url}/ops?{query}")
        return listed(page)

    assert filtered("offline_h=24") == ["bath-off"]  # offline for 30 h
    assert filtered("offline_h=31") == []
    assert filtered("not_ok=3") == ["hall-err"]
    assert filtered("not_ok=5") == []
    assert filtered("attention=1") == ["bath-off", "hall-err"]  # kitchen-ok is billed; porch-new has no meter
    assert "не на связи" in page.locator("#device-bath-off").inner_text()
    shot(page.locator("#devices"), "ops-fleet-attention-phone.png", tmp_path)
    assert filtered("unbilled=1") == ["bath-off", "hall-err"]
    assert filtered("stale=1") == ["bath-off", "porch-new"]
    assert filtered("q=kitch") == ["kitchen-ok"]
    assert filtered("offline_h=abc&not_ok=-3") == ["attic-old", "bath-off", "hall-err", "kitchen-ok",
                                                   "porch-new"]  # ignored
    # The form does the same as the query string.
    page.goto(f"{fleet.url}/ops")
    page.fill("input[name=not_ok]", "3")
    with page.expect_navigation():
        page.click("#filters button[type=submit]")
    assert listed(page) == ["hall-err"] and "not_ok=3" in page.url


def test_the_device_page_has_its_chart_telemetry_and_state(fleet: Fleet, page: Any, tmp_path: Path) -> None:
    sign_in(page, fleet.url, OPERATOR)
    page.goto(f"{fleet.url}/ops/devices/hall-err")
    assert fits_the_phone(page)
    chart = page.locator("svg.readings")
    assert chart.count() == 1
    assert chart.locator(".pt-error").count() == 3 and chart.locator(".pt-suspect").count() == 1
    assert chart.locator(".pt-ok").count() == 10 and chart.locator("path.line").count() == 1
    tel = page.locator("#telemetry").inner_text()
    assert "71.5 °C" in tel and "camera: alignment failed" in tel and "0.4.1" in tel and "заполнен" in tel
    state = page.locator("#state").inner_text()
    assert "******0002" in state and "SN-hall-err" in state and "ничего не отправлено" in state.lower()
    assert "1000000002" not in page.content()
    assert page.locator("p.warn[role=status]").count() == 1  # not billed, window open, readings not ok
    shot(page, "ops-device-phone.png", tmp_path)
    page.goto(f"{fleet.url}/ops/devices/kitchen-ok")
    chart = page.locator("svg.readings")
    assert chart.locator(".pt-outlier").count() == 1 and chart.locator(".pt-ok").count() == 15
    assert "999.000" in (chart.locator(".pt-outlier title").text_content() or "")
    assert "выпадает из хода счётчика" in page.locator("table.readings").inner_text()
    shot(chart, "ops-chart-outlier-phone.png", tmp_path)
    page.goto(f"{fleet.url}/ops/devices/porch-new")
    assert "показаний ещё нет" in page.content() and page.locator("svg.readings").count() == 0
    # An unknown or malformed device id answers like a page that does not exist.
    missing = page.request.get(f"{fleet.url}/no/such/page")
    for path in ("/ops/devices/ghost", "/ops/devices/..%2F..%2Fetc", "/ops/devices/" + "x" * 100):
        r = page.request.get(fleet.url + path)
        assert (r.status, r.body()) == (404, missing.body()), path


def test_wide_screen_screenshot(fleet: Fleet, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    try:
        sign_in(page, fleet.url, OPERATOR)
        page.goto(f"{fleet.url}/ops")
        with page.expect_navigation():
            page.click("header form.inline button[value=en]")
        assert "Fleet" in page.content() and "1 of 3 meters billed" in page.content()
        shot(page, "ops-fleet.png", tmp_path, full_page=True)
        page.goto(f"{fleet.url}/ops/devices/hall-err")
        shot(page, "ops-device.png", tmp_path, full_page=True)
    finally:
        context.close()


def test_the_portal_answers_healthz_without_sign_in(fleet: Fleet, page: Any) -> None:
    r = page.request.get(f"{fleet.url}/healthz")
    assert r.status == 200 and r.json() == {"database": "ok", "status": "ok"}


def test_residents_and_visitors_cannot_open_operator_pages(fleet: Fleet, page: Any) -> None:
    page.goto(f"{fleet.url}/ops")
    assert "/login?next=/ops" in page.url
    page.goto(f"{fleet.url}/ops/devices/hall-err")
    assert "/login?next=/ops/devices/hall-err" in page.url
    sign_in(page, fleet.url, RESIDENT)
    missing = page.request.get(f"{fleet.url}/no/such/page")
    for path in ("/ops", "/ops?attention=1", "/ops/devices/hall-err", "/ops/devices/ghost"):
        r = page.request.get(fleet.url + path)
        assert (r.status, r.body()) == (404, missing.body()), path
