"""The resident's photo flow in a real Chromium at phone size (360 px): choose the meter, upload a real meter
photo, see the proposal with the boxes, drag the counter box (mouse) and resize it (touch), confirm, and
see the reading stored with source photo and its photo as evidence, billed by the sandbox and credited
with points. Bad input gets a clear message in Russian and stores nothing. Screenshots for docs/photo.md
(`METER_DOC_SCREENSHOTS=1`)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import shot
from PIL import Image, ImageDraw
from sqlalchemy import func, select
from web_helpers import ALICE, BOB, NOW, PASSWORD

from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.photo import store as photos
from cloud_bridge.photo.upload import normalise
from cloud_bridge.registry import add_photo_meter
from cloud_bridge.residents import correct_reading
from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.store.tables import counters, photo_readings, points_ledger, readings, submissions, users

pytest.importorskip("meter_vision.photo", reason="the photo reader (meter_vision.photo) is not installed")
pytest.importorskip("cv2", reason="the photo extra (OpenCV) is not installed")

METER = "M-A-P"  # Alice's meter with no device: 5 black wheels, the decimals are dials (not read)
READ_S = 90_000  # ms: the reader takes seconds on a busy 2-core machine


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server


@pytest.fixture
def photo_portal(portal_factory: Any, sandbox: SandboxServer) -> Any:
    """The seeded portal with billing on the sandbox, and Alice's photo meter read once in October (the
    utility confirmed that first photo reading, so November's is checked against it)."""
    p = portal_factory(billing_url=sandbox.url)
    october = NOW - timedelta(days=31)
    with p.engine.begin() as conn:
        add_photo_meter(conn, METER, payer_code=ALICE, kind="cold", address=None, digits=5, decimals=0,
                        now=october - timedelta(days=1))
        uid = conn.execute(select(users.c.id).where(users.c.login == p.world.alice)).scalar_one()
        buf = io.BytesIO()
        Image.new("RGB", (640, 480), (120, 120, 120)).save(buf, "JPEG")
        pid = photos.save_draft(conn, user_id=uid, payer_code=ALICE, meter_serial=METER, photo=normalise(
            buf.getvalue()), proposal={"value": "00529", "status": "ok", "confidence": 0.95, "counter_box": None,
                                        "boxes": []}, now=october)
    first = photos.send(p.engine, p.config, pid, ALICE, "00529", gateways=None, now=october, submit=False)
    assert first.action == "review" and first.reading_id is not None
    with http_gateways(p.config) as gateways:
        correct_reading(p.engine, p.config, first.reading_id, "00529", by="operator", confirm=True, at=october,
                        clock=lambda: october, gateways=gateways)
    return p


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 360, "height": 740}, locale="ru-RU", has_touch=True,
                                  device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(READ_S)
    try:
        yield page
    finally:
        context.close()


def sign_in(page: Any, base: str, login: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")


def frame(shared_data: Path, name: str = "530.07077.jpg") -> Path:
    return shared_data / "frames" / "ai-on-the-edge-demo" / name


def wait_until(page: Any, expression: str, timeout_s: float = 30.0) -> None:
    """Poll `expression` from the test (the page's CSP forbids the eval behind wait_for_function's polling)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        time.sleep(0.05)


def box_of(page: Any) -> dict[str, float]:
    return page.locator("#counter-box").bounding_box()  # type: ignore[no-any-return]


def touch_drag(page: Any, x: float, y: float, dx: float, dy: float, steps: int = 6) -> None:
    """A finger drag, as Chromium's touch input (it becomes pointer events of type touch)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for i in range(1, steps + 1):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove",
                                              "touchPoints": [{"x": x + dx * i / steps, "y": y + dy * i / steps}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def test_a_resident_photographs_a_meter_confirms_and_it_is_billed_with_points(
        photo_portal: Any, phone: Any, shared_data: Path, sandbox: SandboxServer, tmp_path: Path) -> None:
    p, page = photo_portal, phone
    sign_in(page, p.url, p.world.alice)
    page.goto(f"{p.url}/payer/{ALICE}")
    page.click(f"#meter-{METER} a.button")  # "Photograph the meter" on the meter's card
    assert page.url.endswith(f"/payer/{ALICE}/photo?meter={METER}")
    assert page.locator("#photo-meter").input_value() == METER
    assert page.locator("#photo-camera").get_attribute("capture") == "environment"
    shot(page, "photo-choose-phone.png", tmp_path)

    page.set_input_files("#photo-file", str(frame(shared_data)))
    page.wait_for_selector("#photo-result:not([hidden])")
    wait_until(page, "document.getElementById('photo-img').complete && "
                     "document.getElementById('photo-img').naturalWidth > 0")
    assert page.locator("#photo-proposed").inner_text() == "00530"
    assert page.locator("#photo-value").input_value() == "00530"
    assert "%" in page.locator("#photo-sure").inner_text()
    assert page.locator(".wheel-box").count() == 5
    shot(page.locator("#photo-result"), "photo-proposal-phone.png", tmp_path)
    # nothing fits the page's width better than the page: no sideways scrolling at 360 px
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    # drag the box a little left with the mouse: the photo is read again in the moved box
    before = box_of(page)
    with page.expect_response(lambda r: r.url.endswith("/box")) as moved:
        page.mouse.move(before["x"] + before["width"] / 2, before["y"] + before["height"] / 2)
        page.mouse.down()
        page.mouse.move(before["x"] + before["width"] / 2 - 12, before["y"] + before["height"] / 2 + 4, steps=5)
        page.mouse.up()
    assert moved.value.status == 200, moved.value.text()
    page.wait_for_selector("#photo-stage:not(.busy)")
    after = box_of(page)
    assert after["width"] > 0 and page.locator("#photo-proposed").inner_text() == "00530"
    # and resize it with a finger on the corner handle
    handle = page.locator("#counter-handle").bounding_box()
    with page.expect_response(lambda r: r.url.endswith("/box")) as resized:
        touch_drag(page, handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2, 10, 6)
    assert resized.value.status == 200
    page.wait_for_selector("#photo-stage:not(.busy)")
    assert page.locator("#photo-proposed").inner_text() == "00530"
    with p.engine.connect() as conn:
        draft = conn.execute(select(photo_readings).where(photo_readings.c.reading_id.is_(None))).one()
    assert draft.box_moved and draft.meter_serial == METER and draft.proposed_value == "00530"

    page.click("#photo-confirm")
    page.wait_for_selector("#photo-outcome.ok")
    assert "принято" in page.locator("#photo-outcome").inner_text().lower()
    shot(page, "photo-sent-phone.png", tmp_path, full_page=True)

    with p.engine.connect() as conn:
        sent = conn.execute(select(photo_readings).where(photo_readings.c.id == draft.id)).one()
        reading = conn.execute(select(readings).where(readings.c.id == sent.reading_id)).one()
        sub = conn.execute(select(submissions).where(submissions.c.meter_serial == METER,
                                                     submissions.c.period == "2026-11")).one()
        points = conn.execute(select(points_ledger).where(points_ledger.c.payer_code == ALICE,
                                                          points_ledger.c.period == "2026-11")).one()
    assert (reading.source, reading.device_id, reading.value) == ("photo", None, "00530")
    assert sent.edited is False and sent.state == "accepted" and sent.image_bytes == len(sent.image) > 10_000
    assert (sub.state, sub.value, sub.reading_id) == ("accepted", "00530", reading.id)
    assert points.points == p.config.loyalty.points and points.credit_state == "credited"
    assert any(x["meter_serial"] == METER and x["value"] == "00530" for x in sandbox.store.readings(ALICE))

    # the history shows it with source photo, its photo, and the month's points
    with page.expect_navigation():
        page.click("#photo-history")
    row = page.locator(f"#reading-{reading.id}")
    assert "фото" in row.inner_text()
    assert page.locator("#points").inner_text().count(str(p.config.loyalty.points)) >= 1
    photo_link = row.locator("a", has_text="фото")
    assert photo_link.get_attribute("href") == f"/payer/{ALICE}/photo/{sent.id}.jpg"
    page.locator(f"#reading-{reading.id}").scroll_into_view_if_needed()
    shot(page, "photo-history-phone.png", tmp_path)
    response = page.request.get(f"{p.url}/payer/{ALICE}/photo/{sent.id}.jpg")
    assert response.status == 200 and response.headers["content-type"] == "image/jpeg"


def test_bad_photos_get_a_clear_message_and_store_nothing(
        photo_portal: Any, phone: Any, shared_data: Path, tmp_path: Path) -> None:
    p, page = photo_portal, phone
    sign_in(page, p.url, p.world.alice)
    page.goto(f"{p.url}/payer/{ALICE}/photo?meter={METER}")
    with p.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(readings)).scalar()

    def upload(path: Path) -> str:
        page.set_input_files("#photo-file", str(path))
        page.wait_for_selector("#photo-status.error, #photo-result:not([hidden])")
        return page.locator("#photo-status").inner_text()

    text = tmp_path / "meter.txt"
    text.write_text("My meter shows 00530.\n" * 20)
    assert "не фотография" in upload(text)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    assert "слишком мал" in upload(tiny)
    bomb = tmp_path / "bomb.png"
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))
    assert "не открывается" in upload(bomb)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * (11 * 1024 * 1024))
    assert "10 МБ" in upload(big)  # refused in the page, before sending
    shot(page.locator("main"), "photo-refused-phone.png", tmp_path)

    # a picture of something else (no counter in it): said so, a frame to drag, nothing can be sent
    other = tmp_path / "garden.jpg"
    garden = Image.new("RGB", (640, 480), (240, 240, 230))
    draw = ImageDraw.Draw(garden)
    for i in range(12):
        draw.ellipse((20 + i * 50, 100 + (i % 3) * 60, 60 + i * 50, 140 + (i % 3) * 60), fill=(30, 120, 40))
    garden.save(other, "JPEG")
    page.set_input_files("#photo-file", str(other))
    page.wait_for_selector("#photo-result:not([hidden])")
    assert "не найден счётный механизм" in page.locator("#photo-message").inner_text()
    assert page.locator("#counter-box.missing").is_visible() and page.locator("#photo-confirm").is_disabled()
    assert page.locator("#photo-proposed").inner_text() == "—"

    # a photo of another meter: it reads 00016 m³ where this meter showed 00529 a month ago
    with page.expect_response(lambda r: r.url.endswith("/photo") and r.request.method == "POST"):
        page.set_input_files("#photo-file", str(shared_data / "frames" / "ai-on-the-edge-default-config" /
                                                "reference.jpg"))
    page.wait_for_selector("#photo-result:not([hidden])")
    assert page.locator("#photo-proposed").inner_text() == "00016"
    page.click("#photo-confirm")
    page.wait_for_selector("#photo-outcome.error")
    outcome = page.locator("#photo-outcome").inner_text()
    assert "не подходит" in outcome and "Ничего не сохранено" in outcome, outcome
    shot(page.locator("main"), "photo-other-meter-phone.png", tmp_path)

    with p.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(readings)).scalar() == stored
        assert conn.execute(select(func.count()).select_from(photo_readings)
                            .where(photo_readings.c.reading_id.is_not(None))).scalar() == 1  # October's only
        refused = dict(conn.execute(select(counters.c.name, func.sum(counters.c.value))
                                    .where(counters.c.name.like("photo_refused:%")).group_by(counters.c.name)).all())
    assert refused == {"photo_refused:not_an_image": 1, "photo_refused:too_small": 1,
                       "photo_refused:too_many_pixels": 1, "photo_refused:out_of_range": 1}
    with p.engine.connect() as conn:
        read = dict(conn.execute(select(counters.c.name, func.sum(counters.c.value))
                                 .where(counters.c.name.like("photo_read:%")).group_by(counters.c.name)).all())
    assert read.get("photo_read:no_counter") == 1


def test_an_upload_over_10_mb_streamed_in_chunks_is_refused(photo_portal: Any, phone: Any) -> None:
    """Chunked (no Content-Length): 413 with the page's words (test_web_upload_limit.py shows the middleware
    stops reading at the limit, and refuses a Content-Length over it before reading anything)."""
    import httpx

    p, page = photo_portal, phone
    sign_in(page, p.url, p.world.alice)
    page.goto(f"{p.url}/payer/{ALICE}/photo")
    token = page.locator("#photo-upload").get_attribute("data-csrf")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    def body() -> Iterator[bytes]:
        yield (b"--B\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"x.jpg\"\r\n"
               b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff")
        for _ in range(40):  # 40 MiB offered
            yield b"\0" * (1 << 20)

    with httpx.Client(base_url=p.url, cookies=cookies, timeout=60) as client:
        r = client.post(f"/payer/{ALICE}/photo", content=body(), headers={
            "X-CSRF-Token": str(token), "Accept": "application/json",
            "Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert "10 МБ" in r.json()["message"]


def test_only_the_residents_own_meters_and_photos(photo_portal: Any, browser: Any) -> None:
    p = photo_portal
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, p.url, p.world.bob)
        with p.engine.connect() as conn:
            alices = conn.execute(select(photo_readings.c.id)).scalar()
        for url in (f"/payer/{ALICE}/photo", f"/payer/{ALICE}/photo/{alices}.jpg"):
            assert page.goto(p.url + url).status == 404
        page.goto(f"{p.url}/payer/{BOB}/photo")
        token = page.locator("#photo-upload").get_attribute("data-csrf")
        # Bob cannot send Alice's photo through his own payer code, nor upload for her meter
        r = page.request.post(f"{p.url}/payer/{BOB}/photo/{alices}/send", data={"value": "00530"},
                              headers={"X-CSRF-Token": token, "Accept": "application/json"})
        assert r.status == 404
        r = page.request.post(f"{p.url}/payer/{BOB}/photo", multipart={"meter": METER, "photo": {
            "name": "x.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff"}},
            headers={"X-CSRF-Token": token, "Accept": "application/json"})
        assert r.status == 400 and r.json()["error"] == "no_meter"
        # without the token a large body is refused before it is read
        r = page.request.post(f"{p.url}/payer/{BOB}/photo", multipart={"meter": "M-B", "photo": {
            "name": "x.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff" + b"\0" * 200_000}},
            headers={"Accept": "application/json"})
        assert r.status == 403
    finally:
        context.close()


def test_simulated_phone_photos_heic_and_turned_by_exif(portal_factory: Any, sandbox: SandboxServer, phone: Any,
                                                        tmp_path: Path) -> None:
    """A cluttered simulated phone photo (a note, a ruler, a finger, dirty glass) of a 5 + 3 wheel meter sent
    as HEIC, and another as a JPEG whose pixels lie on their side with EXIF orientation 6: both shown
    upright and read; the value sent is what the meter shows whatever the reader proposed."""
    import numpy as np
    from pillow_heif import from_pillow

    from edge.capture.simulator.phone import phone_photo

    p = portal_factory(billing_url=sandbox.url)
    october = NOW - timedelta(days=31)
    with p.engine.begin() as conn:
        add_photo_meter(conn, "M-A-S", payer_code=ALICE, kind="hot", address=None, digits=5, decimals=3,
                        now=october - timedelta(days=1))
        uid = conn.execute(select(users.c.id).where(users.c.login == p.world.alice)).scalar_one()
        buf = io.BytesIO()
        Image.new("RGB", (640, 480), (120, 120, 120)).save(buf, "JPEG")
        pid = photos.save_draft(conn, user_id=uid, payer_code=ALICE, meter_serial="M-A-S", photo=normalise(
            buf.getvalue()), proposal={"value": "00118.002", "status": "ok", "confidence": 0.95}, now=october)
    first = photos.send(p.engine, p.config, pid, ALICE, "00118.002", gateways=None, now=october, submit=False)
    with http_gateways(p.config) as gateways:
        correct_reading(p.engine, p.config, first.reading_id, "00118.002", by="operator",  # type: ignore[arg-type]
                        confirm=True, at=october, clock=lambda: october, gateways=gateways)

    cluttered = phone_photo(np.random.default_rng(3), value=123.456, size=(1600, 1200))
    assert cluttered.value == "00123.456" and "finger" in cluttered.tags
    heic = tmp_path / "IMG_0001.HEIC"
    from_pillow(Image.fromarray(np.ascontiguousarray(cluttered.image[:, :, ::-1]))).save(str(heic), quality=85)

    page = phone
    sign_in(page, p.url, p.world.alice)
    page.goto(f"{p.url}/payer/{ALICE}/photo?meter=M-A-S")
    with page.expect_response(lambda r: r.url.endswith("/photo") and r.request.method == "POST") as answer:
        page.set_input_files("#photo-file", str(heic))
    data = answer.value.json()
    assert answer.value.status == 200, data
    assert (data["width"], data["height"]) == (1200, 1600)  # portrait, as taken (under 2000 px: not scaled)
    page.wait_for_selector("#photo-result:not([hidden])")
    proposed = page.locator("#photo-proposed").inner_text()
    page.fill("#photo-value", "123,456")  # what the resident reads on the meter, typed their way
    page.click("#photo-confirm")
    page.wait_for_selector("#photo-outcome.ok")
    with p.engine.connect() as conn:
        sent = conn.execute(select(photo_readings).where(photo_readings.c.meter_serial == "M-A-S",
                                                         photo_readings.c.upload_format == "HEIF")).one()
        reading = conn.execute(select(readings).where(readings.c.id == sent.reading_id)).one()
    assert (reading.source, reading.value) == ("photo", "00123.456")
    assert sent.edited is (proposed != "00123.456") and sent.proposed_value == (proposed if proposed != "—" else None)

    # a photo whose pixels lie on their side, EXIF saying "turn 90° clockwise to view": shown upright
    turned = phone_photo(np.random.default_rng(4), value=124.5, size=(1600, 1200))
    upright = Image.fromarray(np.ascontiguousarray(turned.image[:, :, ::-1]))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = tmp_path / "IMG_0002.JPG"
    upright.transpose(Image.Transpose.ROTATE_90).save(sideways, "JPEG", quality=90, exif=exif.tobytes())
    with page.expect_response(lambda r: r.url.endswith("/photo") and r.request.method == "POST") as answer:
        page.set_input_files("#photo-file", str(sideways))
    data = answer.value.json()
    assert (data["width"], data["height"]) == upright.size
    assert data["value"] == turned.value, data  # read upright: the sideways pixels would not read
    wait_until(page, f"document.getElementById('photo-img').naturalWidth === {data['width']}")
