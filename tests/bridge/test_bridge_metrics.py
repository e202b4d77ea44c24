"""`/metrics` and `/healthz` of a real `meter-bridge run` on a real Mosquitto, parsed with
prometheus_client's own parser; the shipped Grafana dashboard and alert rules use only what it exposes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bridge_helpers import Device, bridge_process, config, reading, register, wait_until
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cloud_bridge.broker import MosquittoBroker, free_port
from cloud_bridge.store.engine import open_store
from contract.payloads import Telemetry

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "meterfleet.json"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALLOWED_LABELS = {"status", "reason", "state", "quantile", "outcome", "task", "worker", "le"}

pytestmark = pytest.mark.mosquitto


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class Scraped:
    def __init__(self, text: str, healthz: dict[str, Any], unhealthy: tuple[int, dict[str, Any]]) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.healthz = healthz
        self.unhealthy = unhealthy

    def samples(self, name: str) -> list[Sample]:
        return [s for f in self.families.values() for s in f.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples(name) if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    def sample_names(self) -> set[str]:
        return {s.name for f in self.families.values() for s in f.samples}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """One bridge process, fed over MQTT: three devices, their status and telemetry, readings of every
    status, a refusal. Scrape, then stop the broker and ask /healthz again."""
    tmp = tmp_path_factory.mktemp("metrics")
    db_url = f"sqlite:///{tmp / 'bridge.db'}"
    engine = open_store(db_url)
    register(engine, ["m-1", "m-2", "m-3"])
    engine.dispose()
    broker = MosquittoBroker(tmp / "broker").start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        cfg = config(db_url, broker.port, tmp, metrics={"port": port})
        dev = Device(broker.port)
        now = datetime.now(UTC)
        dev.publish("meters/m-1/status", b"online", retain=True)
        dev.publish("meters/m-2/status", b"offline", retain=True)
        dev.publish("meters/m-1/telemetry", Telemetry(
            uptime_s=60, outbox_depth=4, cpu_temp_c=48.0, free_disk_bytes=1_500_000_000, disk_full=False,
            model="digits-int8", version="0.4.1", at=now).to_json_bytes(), qos=0, retain=True)
        dev.publish("meters/m-2/telemetry", Telemetry(
            uptime_s=60, outbox_depth=30, cpu_temp_c=61.5, free_disk_bytes=900_000, disk_full=True,
            at=now).to_json_bytes(), qos=0, retain=True)
        proc = bridge_process(cfg, log_path=tmp / "bridge.log")
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: get(base + "/healthz")[0] == 200), (tmp / "bridge.log").read_text()
        taken = (now - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        dev.publish_reading(reading("m-1", 1, "00010.000", taken_at=taken))
        dev.publish_reading(reading("m-1", 2, status="suspect", taken_at=taken))
        dev.publish_reading(reading("m-2", 1, status="error", reason="align_failed", taken_at=taken))
        dev.publish_reading(reading("m-1", 1, "00010.000", taken_at=taken))  # duplicate
        dev.publish("meters/m-3/reading", b"not json")
        ahead = (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the device's clock is ahead
        dev.publish_reading(reading("m-3", 1, "00003.000", taken_at=ahead))
        assert wait_until(lambda: len(dev.acks) == 6)
        assert wait_until(lambda: b"meterfleet_devices_reporting_telemetry 2.0" in get(base + "/metrics")[1])
        status, body = get(base + "/metrics")
        assert status == 200
        healthz = json.loads(get(base + "/healthz")[1])
        assert get(base + "/nothing")[0] == 404
        dev.close()
        broker.stop()
        assert wait_until(lambda: get(base + "/healthz")[0] == 503, timeout=30)
        code, down = get(base + "/healthz")
        yield Scraped(body.decode(), healthz, (code, json.loads(down)))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()


def test_metrics_count_what_the_bridge_stored(scraped: Scraped) -> None:
    m = scraped
    assert m.value("meterfleet_devices") == 3
    assert (m.value("meterfleet_devices_online"), m.value("meterfleet_devices_offline")) == (1, 1)
    assert m.value("meterfleet_devices_unbound") == 0
    assert [m.value("meterfleet_readings_stored_total", status=s) for s in ("ok", "suspect", "error")] == [1, 1, 1]
    assert m.value("meterfleet_readings_received_total") == 6
    assert m.value("meterfleet_readings_duplicate_total") == 1
    assert m.value("meterfleet_readings_refused_total", reason="bad_json") == 1
    assert m.value("meterfleet_readings_refused_total", reason="future_time") == 1
    assert m.value("meterfleet_devices_last_reading", status="suspect") == 1
    assert m.value("meterfleet_devices_last_reading", status="error") == 1
    assert (m.value("meterfleet_devices_suspect_last_day"), m.value("meterfleet_devices_error_last_day")) == (1, 1)
    assert m.value("meterfleet_outbox_readings") == 34 and m.value("meterfleet_outbox_readings_max") == 30
    assert m.value("meterfleet_devices_disk_full") == 1
    assert m.value("meterfleet_devices_cpu_temperature_max_celsius") == 61.5
    assert m.value("meterfleet_devices_free_disk_min_bytes") == 900_000
    assert m.value("meterfleet_period_meters_bound") == 3 and m.value("meterfleet_period_meters_not_billed") == 3
    assert m.value("meterfleet_store_up") == 1
    # This process's own counters (worker 0): the six reading messages, two status, two telemetry.
    assert m.value("meterfleet_ingest_messages_total", outcome="stored") == 3
    assert m.value("meterfleet_ingest_messages_total", outcome="duplicate") == 1
    assert m.value("meterfleet_ingest_messages_total", outcome="refused") == 2
    assert m.value("meterfleet_ingest_messages_total", outcome="telemetry") == 2
    assert m.value("meterfleet_mqtt_connected") == 1 and m.value("meterfleet_mqtt_connects_total") >= 1
    assert m.value("meterfleet_ingest_commit_duration_seconds_count") >= 1
    last = m.value("meterfleet_last_reading_stored_timestamp_seconds")
    assert abs(last - datetime.now(UTC).timestamp()) < 300


def test_metric_names_and_labels_follow_the_rules(scraped: Scraped) -> None:
    for f in scraped.families.values():
        assert f.name.startswith("meterfleet_"), f.name
        assert f.documentation, f.name
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
        for s in f.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)
    assert not re.search(r"\b100000000[0-9]\b", scraped.text)  # payer codes of the test devices
    assert "m-1" not in scraped.text and "SN-" not in scraped.text  # no device or meter in a label


def test_healthz_says_what_is_wrong(scraped: Scraped) -> None:
    assert scraped.healthz == {"database": "ok", "broker": "connected", "status": "ok"}
    code, body = scraped.unhealthy
    assert code == 503 and body["broker"] == "disconnected" and body["database"] == "ok"


def test_healthz_says_when_the_database_does_not_answer() -> None:
    from cloud_bridge.metrics import health
    from cloud_bridge.store.engine import make_engine

    engine = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2")
    ok, body = health(engine, lambda: True)
    engine.dispose()
    assert not ok and body["status"] == "unhealthy" and body["broker"] == "connected"
    assert body["database"] != "ok" and "127.0.0.1" in body["database"]


def _names_in(expr: str) -> set[str]:
    return set(re.findall(r"\bmeterfleet_[a-z0-9_]+", expr))


def test_dashboard_and_alerts_use_only_exposed_metrics(scraped: Scraped) -> None:
    exposed = scraped.sample_names()
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    rules_text = (PROMETHEUS_DIR / "alerts.yml").read_text()  # every metric name in it, exprs or not
    assert rules_text.count("alert:") > 10
    used = set().union(*(_names_in(e) for e in [*exprs, rules_text]))
    missing = sorted(used - exposed)
    assert not missing, f"dashboard/alerts use metrics the bridge does not expose: {missing}"
    assert len(used) > 25
    provisioned = (REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "meterfleet.yml").read_text()
    assert "uid: meterfleet-prometheus" in provisioned
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "meterfleet-prometheus"  # the provisioned datasource's uid


def test_alert_rules_load_and_fire_in_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); the rules were not checked")
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "alerts.test.yml"]):
        r = subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
