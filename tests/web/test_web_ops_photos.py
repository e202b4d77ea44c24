"""Operators' page of photo readings: a new meter's first photo reading waits for an operator, who sees the
photo, confirms the value, and the reading is billed and credited; residents never see the page."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import shot, sign_in
from PIL import Image, ImageDraw
from sqlalchemy import select
from web_helpers import ALICE, NOW

from cloud_bridge.photo import store as photos
from cloud_bridge.photo.upload import normalise
from cloud_bridge.registry import add_photo_meter
from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.store.tables import points_ledger, submissions, users


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server


def test_an_operator_confirms_a_first_photo_reading_and_it_is_billed(
        portal_factory: Any, sandbox: SandboxServer, browser: Any, tmp_path: Path) -> None:
    p = portal_factory(billing_url=sandbox.url)
    im = Image.new("RGB", (640, 480), (235, 235, 235))
    ImageDraw.Draw(im).text((250, 220), "00042.137", fill=(0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    with p.engine.begin() as conn:
        add_photo_meter(conn, "M-NEW", payer_code=ALICE, kind="hot", address=None, digits=5, decimals=3,
                        now=NOW - timedelta(days=2))
        uid = conn.execute(select(users.c.id).where(users.c.login == p.world.alice)).scalar_one()
        pid = photos.save_draft(conn, user_id=uid, payer_code=ALICE, meter_serial="M-NEW",
                                photo=normalise(buf.getvalue()), now=NOW - timedelta(hours=1),
                                proposal={"value": "00042.131", "status": "unsure", "confidence": 0.6})
    sent = photos.send(p.engine, p.config, pid, ALICE, "00042.137", gateways=None, now=NOW - timedelta(hours=1),
                       submit=False)
    assert sent.action == "review" and sent.edited

    context = browser.new_context(viewport={"width": 375, "height": 740}, locale="ru-RU")
    page = context.new_page()
    try:
        sign_in(page, p.url, p.world.alice)  # a resident: the page does not exist for them
        assert page.goto(p.url + "/ops/photos").status == 404
        assert page.goto(f"{p.url}/ops/photos/{pid}.jpg").status == 404
        page.context.clear_cookies()
        sign_in(page, p.url, "ops@example.org")
        page.goto(p.url + "/ops/photos")
        card = page.locator(f"#photo-{pid}")
        assert "00042.137" in card.inner_text() and "прочитано 00042.131" in card.inner_text()
        # The photos load lazily (`loading="lazy"`): wait for this one rather than read it mid-load.
        card.locator("img").scroll_into_view_if_needed()
        page.wait_for_function(f"document.querySelector('#photo-{pid} img').complete")
        assert page.evaluate(f"document.querySelector('#photo-{pid} img').naturalWidth") == 640
        shot(page, "ops-photos-phone.png", tmp_path, full_page=True)
        with page.expect_navigation():
            card.locator("button[type=submit]").click()
        assert page.url.endswith(f"/ops/photos?done={pid}")
        assert "Ждут вашего подтверждения (0)" in page.locator("#waiting").inner_text()
        assert "подтверждено" in page.locator("#recent").inner_text()
    finally:
        context.close()
    with p.engine.connect() as conn:
        sub = conn.execute(select(submissions).where(submissions.c.meter_serial == "M-NEW")).one()
        pts = conn.execute(select(points_ledger).where(points_ledger.c.payer_code == ALICE)).all()
    assert (sub.state, sub.value, sub.reading_id) == ("accepted", "00042.137", sent.reading_id)
    assert [r.period for r in pts] == ["2026-11"]
