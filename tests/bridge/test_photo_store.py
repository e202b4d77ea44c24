"""A resident's photo reading in the store (SQLite and PostgreSQL): a meter with no device, the photo
kept as evidence, the same checks as a correction, and billing and points exactly like a device's
reading. The reader's proposal is given as data here (its own tests read real photos); the portal's
browser test runs the whole flow with the real reader."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from cloud_bridge.config import BridgeConfig
from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.metrics import StoreCollector
from cloud_bridge.photo import store as photos
from cloud_bridge.photo.upload import Photo, normalise
from cloud_bridge.registry import (
    RegistryError,
    add_device,
    add_photo_meter,
    bind,
    list_photo_meters,
    photo_binding,
    remove_photo_meter,
)
from cloud_bridge.residents import CorrectionResult, correct_reading, payer_history
from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.store.tables import counters, photo_readings, readings, settlements
from cloud_bridge.web.users import create_user

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # November's window is open
PAYER, OTHER = "4000000004", "5000000005"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server


def config(db_url: str, sandbox_url: str) -> BridgeConfig:
    return BridgeConfig(database_url=db_url, billing={"url": sandbox_url}, loyalty={"url": sandbox_url, "points": 10},
                        submission={"timeout_s": 2.0, "max_attempts_per_pass": 2, "backoff_base_s": 0.05,
                                    "backoff_max_s": 0.2, "max_wait_in_pass_s": 1.0, "lease_s": 1.0})


def send(engine: Engine, cfg: BridgeConfig, *args: Any, **kw: Any) -> photos.SendResult:
    with http_gateways(cfg) as gateways:
        return photos.send(engine, cfg, *args, gateways=gateways, **kw)


def correct(engine: Engine, cfg: BridgeConfig, *args: Any, **kw: Any) -> CorrectionResult:
    with http_gateways(cfg) as gateways:
        return correct_reading(engine, cfg, *args, gateways=gateways, **kw)


def a_photo() -> Photo:
    im = Image.new("RGB", (640, 480), (90, 90, 90))
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (55.0, 45.0, 21.0), 3: "E", 4: (37.0, 37.0, 4.0)}
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return normalise(buf.getvalue())


def proposal(value: str | None, status: str = "ok") -> dict[str, object]:
    return {"value": value, "status": status, "confidence": 0.97 if status == "ok" else 0.4,
            "reason": None if status == "ok" else "a wheel between two digits", "counter_box": [100, 150, 400, 90],
            "rotation_deg": 0.0, "boxes": [[100 + 80 * i, 150, 80, 90] for i in range(5)], "seconds": 0.2}


def draft(engine: Engine, user: int, value: str | None, at: datetime, status: str = "ok",
          meter: str = "P-1") -> int:
    with engine.begin() as conn:
        return photos.save_draft(conn, user_id=user, payer_code=PAYER, meter_serial=meter, photo=a_photo(),
                                 proposal=proposal(value, status), now=at)


@pytest.fixture
def world(engine: Engine) -> int:
    with engine.begin() as conn:
        add_photo_meter(conn, "P-1", payer_code=PAYER, kind="cold", address="Flat 4", digits=5, decimals=3, now=NOW
                        - timedelta(days=90))
    return create_user(engine, "anna@example.org", "resident", "correct horse battery").id


def test_a_meter_with_no_device_first_photo_waits_for_the_utility_then_bills(
        engine: Engine, db_url: str, world: int, sandbox: SandboxServer) -> None:
    cfg = config(db_url, sandbox.url)
    october = NOW - timedelta(days=31)
    pid = draft(engine, world, "00120.500", october)
    first = send(engine, cfg, pid, PAYER, "120.5", now=october)
    assert first.action == "review" and first.value == "00120.500" and not first.edited  # same number, padded
    assert first.reading_id is not None and first.submission is None
    with engine.connect() as conn:
        r = conn.execute(select(readings).where(readings.c.id == first.reading_id)).one()
        assert (r.source, r.device_id, r.status, r.value) == ("photo", None, "ok", "00120.500")
        assert conn.execute(select(settlements.c.state).where(settlements.c.reading_id == r.id)).scalar() == "pending"
    # the utility confirms it (as for any value with nothing around it to check against)
    confirmed = correct(engine, cfg, first.reading_id, "00120.500", by="operator", confirm=True, at=october,
                                clock=lambda: october)
    assert confirmed.verdict is not None and confirmed.verdict.accepted

    # a month later: the next photo is checked against it, settled at once, billed, points credited
    pid = draft(engine, world, "00131.250", NOW)
    sent = send(engine, cfg, pid, PAYER, "00131.250", now=NOW, clock=lambda: NOW)
    assert sent.action == "stored" and sent.verdict is not None and sent.verdict.accepted
    assert sent.submission is not None and sent.submission.state == "accepted", sent.submission
    assert sent.submission.value == "00131.250"
    # October (confirmed inside its window, so billed then) and November: 10 points each
    assert sorted(x["value"] for x in sandbox.store.readings(PAYER)) == ["00120.500", "00131.250"]
    assert sandbox.store.balance(PAYER) == 20
    with engine.connect() as conn:
        history = payer_history(conn, PAYER)
        assert conn.execute(select(settlements.c.state).where(settlements.c.reading_id == sent.reading_id)).scalar() \
            == "settled"
        evidence = photos.evidence_of(conn, sent.reading_id)  # type: ignore[arg-type]
        image = photos.image_of(conn, pid, PAYER)
    newest = history["readings"][0]
    assert newest["source"] == "photo" and newest["photo"]["edited"] is False and newest["device_id"] is None
    assert [(p["period"], p["points"]) for p in history["points"]] == [("2026-11", 10), ("2026-10", 10)]
    assert evidence is not None and evidence.state == "accepted" and evidence.value == "00131.250"
    assert image is not None and image[:3] == b"\xff\xd8\xff"
    assert Image.open(io.BytesIO(image)).getexif().get_ifd(0x8825) == {}  # no location kept


def test_an_edited_value_is_marked_and_another_meters_value_stores_nothing(
        engine: Engine, db_url: str, world: int, sandbox: SandboxServer) -> None:
    cfg = config(db_url, sandbox.url)
    base = draft(engine, world, "00100.000", NOW - timedelta(days=30))
    r = send(engine, cfg, base, PAYER, "00100.000", now=NOW - timedelta(days=30))
    assert r.reading_id is not None
    correct(engine, cfg, r.reading_id, "00100.000", by="operator", confirm=True, at=NOW - timedelta(days=30),
                    clock=lambda: NOW - timedelta(days=30))
    # the photo shows another meter: 48213 m3 where this one showed 100 a month ago
    other = draft(engine, world, "48213.000", NOW)
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(readings)).scalar()
    refused = send(engine, cfg, other, PAYER, "48213.000", now=NOW)
    assert refused.action == "refused" and refused.reading_id is None
    assert refused.verdict is not None and refused.verdict.plausible_low is not None
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(readings)).scalar() == before
        assert conn.execute(select(photo_readings.c.reading_id).where(photo_readings.c.id == other)).scalar() is None
        assert conn.execute(select(func.sum(counters.c.value))
                            .where(counters.c.name == "photo_refused:out_of_range")).scalar() == 1
    registry = CollectorRegistry()
    registry.register(StoreCollector(engine, cfg))
    scraped = generate_latest(registry).decode()
    assert 'meterfleet_photos_refused_total{reason="out_of_range"} 1.0' in scraped
    assert 'meterfleet_photos_read_total{status="ok"} 2.0' in scraped
    # the reader was off by a wheel; the resident typed what they see: stored, marked edited
    pid = draft(engine, world, "00108.000", NOW)
    sent = send(engine, cfg, pid, PAYER, "00109,5", now=NOW, submit=False)
    assert sent.action == "stored" and sent.edited and sent.value == "00109.500"
    with pytest.raises(photos.PhotoError) as err:  # once only
        send(engine, cfg, pid, PAYER, "00109.5", now=NOW)
    assert err.value.code == "already_sent"
    with pytest.raises(photos.PhotoError) as err:  # more wheels than the meter has
        send(engine, cfg, draft(engine, world, "00109.000", NOW), PAYER, "0010.12345", now=NOW)
    assert err.value.code == "too_many_digits"
    with pytest.raises(photos.PhotoError) as err:  # another payer's photo answers like an unknown one
        send(engine, cfg, pid, OTHER, "00109.5", now=NOW)
    assert err.value.code == "no_photo"
    with pytest.raises(photos.PhotoError) as err:  # a photo of something else cannot be sent
        send(engine, cfg, draft(engine, world, None, NOW, status="no_counter"), PAYER, "00109.5", now=NOW)
    assert err.value.code == "no_counter"


def test_drafts_are_purged_evidence_is_kept_and_bounded(engine: Engine, world: int) -> None:
    old = draft(engine, world, "00001.000", NOW - timedelta(days=2))
    fresh = draft(engine, world, "00001.000", NOW)
    with engine.begin() as conn:
        assert photos.purge_drafts(conn, NOW) == 1
        assert photos.get_draft(conn, old, PAYER) is None and photos.get_draft(conn, fresh, PAYER) is not None
        assert photos.uploads_since(conn, world, NOW - timedelta(hours=1)) == 1
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the database refuses an oversized photo
        conn.execute(photo_readings.insert().values(
            user_id=world, payer_code=PAYER, meter_serial="P-1", created_at=NOW, image=b"x", width=1, height=1,
            image_bytes=4 * 1024 * 1024, sha256="0" * 64, upload_format="JPEG", upload_bytes=1, proposal="{}",
            reader_status="ok"))


def test_a_pi_takes_over_a_photo_meter_and_photos_still_file_under_its_binding(engine: Engine, world: int) -> None:
    with engine.begin() as conn:
        assert [b.meter_serial for b in list_photo_meters(conn)] == ["P-1"]
        with pytest.raises(RegistryError, match="read by photos"):
            add_photo_meter(conn, "P-1", payer_code=OTHER, kind=None, address="Elsewhere")
        add_device(conn, "pi-1", now=NOW)
        b = bind(conn, "pi-1", meter_serial="P-1", kind=None, payer_code=PAYER, address=None, now=NOW)
        assert list_photo_meters(conn) == []
        m = photo_binding(conn, PAYER, "P-1")
        assert m is not None and m.binding_id == b.id and m.device_id == "pi-1" and (m.digits, m.decimals) == (5, 3)
        with pytest.raises(RegistryError, match="not registered for photos"):
            remove_photo_meter(conn, "P-1")
        # a meter with a Pi needs no registration for photos: only its wheels are recorded
        again = add_photo_meter(conn, "P-1", payer_code=PAYER, kind=None, address=None, digits=6, decimals=2)
        assert again.id == b.id
        assert photo_binding(conn, PAYER, "P-1").digits == 6  # type: ignore[union-attr]


def test_meter_value_in_the_meters_own_format() -> None:
    assert photos.meter_value("530", 5, 0) == "00530"
    assert photos.meter_value(" 123,45 ", 5, 3) == "00123.450"
    assert photos.meter_value("00123.450", 5, 3) == "00123.450"
    for bad in ("12a", "", "1.2.3", "-5", "123456", "1.2345"):
        with pytest.raises(photos.PhotoError):
            photos.meter_value(bad, 5, 3)


def test_meters_commands_and_history_show_photo_readings(db_url: str, sandbox: SandboxServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from cloud_bridge.cli import main
    from cloud_bridge.store import open_store

    for k in [k for k in __import__("os").environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(k, raising=False)
    runner = CliRunner()
    env = {"BRIDGE_DATABASE_URL": db_url}

    def run(*args: str) -> Any:
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    assert run("db", "upgrade").exit_code == 0
    r = run("meters", "add", "P-9", "--payer", PAYER, "--kind", "hot", "--address", "Flat 9", "--digits", "5",
            "--decimals", "3", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["binding"]["device_id"] is None
    bad = run("meters", "add", "P-9", "--payer", OTHER, "--address", "Elsewhere")
    assert bad.exit_code != 0 and "read by photos" in bad.output
    listed = json.loads(run("meters", "list", "--json").output)["meters"]
    assert [(m["meter_serial"], m["digits"], m["decimals"]) for m in listed] == [("P-9", 5, 3)]
    engine = open_store(db_url)
    try:
        uid = create_user(engine, "boris@example.org", "resident", "correct horse battery").id
        with engine.begin() as conn:
            pid = photos.save_draft(conn, user_id=uid, payer_code=PAYER, meter_serial="P-9", photo=a_photo(),
                                    proposal=proposal("00042.100"), now=NOW)
        cfg = config(db_url, sandbox.url)
        sent = photos.send(engine, cfg, pid, PAYER, "00042.150", gateways=None, now=NOW, submit=False)
    finally:
        engine.dispose()
    assert sent.action == "review" and sent.edited
    text = run("history", "--payer", PAYER).output
    assert "read from photos" in text and f"photo {pid} (edited)" in text
    data = json.loads(run("history", "--payer", PAYER, "--json").output)
    assert data["readings"][0]["source"] == "photo" and data["readings"][0]["photo"]["proposed_value"] == "00042.100"
    r = run("meters", "remove", "P-9")
    assert r.exit_code == 0 and json.loads(run("meters", "list", "--json").output)["meters"] == []


def test_a_photo_meter_is_never_offline_and_is_asked_to_be_photographed(engine: Engine, db_url: str,
                                                                        world: int) -> None:
    from cloud_bridge.web.feed import payer_events
    from cloud_bridge.web.i18n import Formats, translations
    from cloud_bridge.web.words import Words

    near_close = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)  # November's window closes on the 3rd, Moscow time
    with engine.connect() as conn:
        events = payer_events(conn, config(db_url, "http://127.0.0.1:9"), PAYER, near_close)
    assert [e.kind for e in events] == ["attention"]  # no "offline": there is no device to be silent
    text = Words(translations("en")).event(events[0], Formats("en", "Europe/Moscow"))
    assert text.startswith("Meter P-1 has no reading for November 2026 yet. Photograph it before")


def test_a_photo_of_a_meter_a_pi_reads_is_checked_against_the_pis_readings(engine: Engine, db_url: str,
                                                                           world: int) -> None:
    """Residents may photograph a meter with a Pi too: the photo reading is filed under the Pi's binding
    (no device of its own) and the Pi's readings around it are what it is checked against."""
    from cloud_bridge.ingest.source import Message
    from cloud_bridge.ingest.store import handle
    from contract import topics
    from contract.payloads import Reading

    cfg = config(db_url, "http://127.0.0.1:9")
    with engine.begin() as conn:
        add_device(conn, "pi-7", now=NOW - timedelta(days=10))
        b = bind(conn, "pi-7", meter_serial="P-7", kind="cold", payer_code=PAYER, address=None,
                 now=NOW - timedelta(days=10))
        for i in range(1, 25):  # hourly, 0.01 m3 an hour, up to an hour ago
            at = NOW - timedelta(hours=25 - i)
            r = Reading(device_id="pi-7", seq=i, taken_at=at, value=f"{200 + 0.01 * i:09.3f}", status="ok",
                        reason=None, confidence=0.99)
            assert handle(conn, Message(topics.reading("pi-7"), r.to_json_bytes()), at).kind == "stored"
    far = draft(engine, world, "00020.240", NOW, meter="P-7")  # a wheel misread by the reader, left as is
    refused = photos.send(engine, cfg, far, PAYER, "00020.240", gateways=None, now=NOW, submit=False)
    assert refused.action == "refused"
    near = draft(engine, world, "00200.250", NOW, meter="P-7")
    stored = photos.send(engine, cfg, near, PAYER, "00200.250", gateways=None, now=NOW, submit=False)
    assert stored.action == "stored" and stored.verdict is not None and stored.verdict.plausible_low is not None
    with engine.connect() as conn:
        r = conn.execute(select(readings.c.binding_id, readings.c.device_id, readings.c.source)
                         .where(readings.c.id == stored.reading_id)).one()
        states = dict(conn.execute(select(settlements.c.reading_id, settlements.c.state)).all())
    assert (r.binding_id, r.device_id, r.source) == (b.id, None, "photo")
    assert states[stored.reading_id] == "settled"
