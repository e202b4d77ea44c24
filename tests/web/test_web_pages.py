"""The resident's pages in a real browser: meters, window, history in plain words, the correction form
against a real billing sandbox, notifications; single sign-on through a proxy's signed header."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_web_access import sign_in
from web_helpers import ALICE, BOB, NOW

from cloud_bridge.sandbox import SandboxServer


@pytest.fixture
def billing(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server


def test_the_payer_page_says_what_is_billed_and_why(portal: Any, page: Any) -> None:
    sign_in(page, portal.url, portal.world.alice)
    page.goto(f"{portal.url}/payer/{ALICE}")
    text = page.inner_text("main")
    # The window in Moscow time: November's closes at the end of 3 December.
    assert "Показания за ноябрь 2026 принимаются до 3 дек. 2026, 23:59" in text
    assert "Europe/Moscow" in text
    # Current values (the newest sure reading, not the later suspect one), billing's state, device.
    assert "00135.000" in text and "00046.000" in text and "пока ничего не отправлено" in text
    # Plain words, never codes.
    assert "меньше предыдущего показания" in text and "снимок не удалось распознать" in text
    for code in ("decrease", "frame_failed", "suspect", "decreasing_value", "alignment failed"):
        assert code not in text
    # Charts with axes and units, per day and per month, one pair per meter.
    assert page.locator("svg.chart").count() == 4
    assert "м³" in page.locator("svg.chart >> nth=0").text_content()
    # Reading ids are shown and link to the correction form.
    first = page.locator("table.readings tbody tr").first.locator("td").first.inner_text()
    assert first.isdigit()


def test_correcting_a_reading_from_the_page(portal_factory: Any, billing: SandboxServer, page: Any) -> None:
    portal = portal_factory(billing_url=billing.url)
    error_reading = portal.world.reading_ids["dev-a-cold"][-2]  # the photo that could not be read
    sign_in(page, portal.url, portal.world.alice)
    page.goto(f"{portal.url}/payer/{ALICE}")
    with page.expect_navigation():
        page.locator(f"#reading-{error_reading} td").first.locator("a").click()
    assert page.url.endswith(f"/payer/{ALICE}/reading/{error_reading}")
    page.fill("input[name=value]", "12x")
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    assert "Введите число" in page.inner_text(".error")
    page.fill("input[name=value]", "00135,010")  # a comma is fine
    page.fill("input[name=note]", "photo was dark")
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    assert page.inner_text("#outcome") == "Отправлено в биллинг и принято."
    assert "00135.010" in page.inner_text("table") and "принято биллингом" in page.inner_text("table")
    assert [r["value"] for r in billing.store.readings()] == ["00135.010"]
    # A value the meter's other readings rule out is refused with the plausible range, and never sent.
    page.fill("input[name=value]", "00099.000")
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    outcome = page.inner_text("#outcome")
    assert outcome.startswith("Не принято: 00099.000 м³") and "Правдоподобное значение" in outcome, outcome
    low = re.search(r"от (\d+),(\d{3}) до \d+,\d{3} м³", outcome)  # around the 135.000 before it
    assert low and 130 < int(low.group(1)) <= 135, outcome
    assert "не принято" in page.inner_text("table")
    assert [r["value"] for r in billing.store.readings()] == ["00135.010"]
    page.goto(f"{portal.url}/payer/{ALICE}")
    text = page.inner_text("main")
    assert "00135.010" in text and "исправлено" in text and "принято биллингом" in text
    # Another payer's reading through my code answers like a missing page.
    bob_reading = portal.world.reading_ids["dev-b"][0]
    assert page.request.get(f"{portal.url}/payer/{ALICE}/reading/{bob_reading}").status == 404


def test_a_correction_while_billing_is_down_waits_for_the_next_pass(portal: Any, page: Any) -> None:
    """Billing unreachable (the default config points at a closed port): one try, then the page says the
    next pass sends it, and the submission stays pending for it."""
    import time as clock

    from sqlalchemy import select

    from cloud_bridge.store.tables import submissions

    reading = portal.world.reading_ids["dev-a-hot"][-2]
    sign_in(page, portal.url, portal.world.alice)
    page.goto(f"{portal.url}/payer/{ALICE}/reading/{reading}")
    page.fill("input[name=value]", "00046.010")
    t0 = clock.monotonic()
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    assert clock.monotonic() - t0 < 15
    assert "при следующей передаче" in page.inner_text("#outcome")
    with portal.engine.connect() as conn:
        states = conn.execute(select(submissions.c.state, submissions.c.value)
                              .where(submissions.c.meter_serial == "M-A-H")).all()
    assert [(s.state, s.value) for s in states] == [("pending", "00046.010")]


def test_a_correction_with_nothing_to_check_against_waits_for_the_utility(portal: Any, page: Any) -> None:
    from web_helpers import store_readings

    from cloud_bridge.registry import add_device, bind

    with portal.engine.begin() as conn:  # a new meter whose only photo could not be read
        add_device(conn, "dev-a-new", now=NOW - timedelta(hours=2))
        bind(conn, "dev-a-new", meter_serial="M-A-N", kind="cold", payer_code=ALICE, address=f"Flat of {ALICE}",
             now=NOW - timedelta(hours=2))
    [reading] = store_readings(portal.engine, "dev-a-new", 1, [(NOW - timedelta(hours=1), None, "error",
                                                                "frame_failed: too dark")])
    sign_in(page, portal.url, portal.world.alice)
    page.goto(f"{portal.url}/payer/{ALICE}/reading/{reading}")
    page.fill("input[name=value]", "00007.250")
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    assert page.inner_text("#outcome").startswith("Сохранено для проверки")
    assert "ждёт подтверждения управляющей организации" in page.inner_text("table")
    page.goto(f"{portal.url}/payer/{ALICE}")
    card = page.inner_text("#meter-M-A-N")
    assert "00007.250" not in card and "надёжного показания пока нет" in card  # not a value until confirmed


def test_notifications_page_and_json(portal: Any, page: Any) -> None:
    from sqlalchemy import update

    from cloud_bridge.store.device_latest import rebuild as rebuild_latest
    from cloud_bridge.store.tables import readings

    # Bob's device has not sent a sure reading of November... make its readings all unsure: needs attention.
    with portal.engine.begin() as conn:
        conn.execute(update(readings).where(readings.c.device_id == "dev-b").values(status="suspect"))
        rebuild_latest(conn, ["dev-b"])  # readings changed underneath the store: recompute its row
    sign_in(page, portal.url, portal.world.bob)
    page.goto(f"{portal.url}/me/notifications")
    assert page.locator("article.event.attention").count() == 0  # 20 Nov: more than 3 days before 3 Dec
    events = page.request.get(f"{portal.url}/me/notifications.json").json()["events"]
    assert all(e["payer_code"] == BOB for e in events)
    assert page.request.get(f"{portal.url}/me/notifications.json").status == 200


def test_single_sign_on_trusts_only_a_signed_header(portal_factory: Any, browser: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cloud_bridge.cli import main

    portal = portal_factory(auth="sso")
    secret = (tmp_path / "web" / "sso.key").read_bytes().strip()
    assert (tmp_path / "web" / "sso.key").stat().st_mode & 0o777 == 0o600
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f'database_url = "{portal.config.database_url}"\n')
    result = CliRunner().invoke(main, ["--config", str(cfg), "residents", "link", "esia:4242", "--sso",
                                       "--payer", ALICE])
    assert result.exit_code == 0, result.output

    def visit(headers: dict[str, str]) -> Any:
        context = browser.new_context(viewport={"width": 375, "height": 740}, extra_http_headers=headers)
        p = context.new_page()
        p.goto(f"{portal.url}/me")
        return context, p

    def sign(identity: str, ts: int) -> str:
        return f"{ts}:" + hmac.new(secret, f"{ts}:{identity}".encode(), hashlib.sha256).hexdigest()

    good = sign("esia:4242", int(time.time()))
    ctx, p = visit({"X-Remote-User": "esia:4242", "X-Remote-User-Signature": good})
    assert p.url.endswith("/me") and f"Flat of {ALICE}" in p.content()
    assert p.request.get(f"{portal.url}/payer/{BOB}").status == 404
    assert "/register" not in p.content()
    ctx.close()
    for headers in ({"X-Remote-User": "esia:4242", "X-Remote-User-Signature": f"{int(time.time())}:{'0' * 64}"},
                    {"X-Remote-User": "esia:4243", "X-Remote-User-Signature": good},  # another identity
                    {"X-Remote-User": "esia:4242", "X-Remote-User-Signature": sign("esia:4242",
                                                                                   int(time.time()) - 600)},
                    {"X-Remote-User": "esia:4242"}):
        ctx, p = visit(headers)
        assert "/login" in p.url, headers  # an unsigned or forged identity is nobody
        ctx.close()
    ctx, p = visit({})
    assert p.request.get(f"{portal.url}/register").status == 404  # no self-registration in sso mode
    ctx.close()
    assert NOW  # the clock of the portal
