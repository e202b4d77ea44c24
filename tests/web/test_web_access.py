"""Who sees what, in a real browser: a resident sees only the payer codes linked to them; another
resident's code, an unlinked code and an unknown code answer exactly alike; CSRF and sign-in limits."""

from __future__ import annotations

from typing import Any

from web_helpers import ALICE, BOB, NOBODY_LINKED, PASSWORD, UNKNOWN


def sign_in(page: Any, base: str, login: str, password: str = PASSWORD) -> Any:
    page.goto(base + "/login")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    return page


def test_a_resident_sees_only_their_linked_codes(portal: Any, page: Any) -> None:
    sign_in(page, portal.url, portal.world.alice)
    assert page.url.endswith("/me")
    assert f"Flat of {ALICE}" in page.content() and f"Flat of {BOB}" not in page.content()
    mine = page.goto(f"{portal.url}/payer/{ALICE}")
    assert mine.status == 200 and f"Flat of {ALICE}" in page.content()
    answers = {}
    for code in (BOB, NOBODY_LINKED, UNKNOWN, "12345", "../../etc"):
        for suffix in ("", ".json"):
            r = page.request.get(f"{portal.url}/payer/{code}{suffix}")
            answers[code + suffix] = (r.status, r.headers.get("content-type"), r.body())
    pages = {v for k, v in answers.items() if not k.endswith(".json")}
    jsons = {v for k, v in answers.items() if k.endswith(".json")}
    assert len(pages) == 1 and len(jsons) == 1, answers  # indistinguishable, byte for byte
    status, _, body = pages.pop()
    assert status == 404 and BOB.encode() not in body
    # The same as a page that does not exist at all.
    missing = page.request.get(f"{portal.url}/no/such/page")
    assert (missing.status, missing.body()) == (404, body)
    # Alice's own JSON is there; Bob, signed in, sees his and not Alice's.
    assert page.request.get(f"{portal.url}/payer/{ALICE}.json").json()["payer_code"] == ALICE
    page.context.clear_cookies()
    sign_in(page, portal.url, portal.world.bob)
    assert page.request.get(f"{portal.url}/payer/{ALICE}").status == 404
    assert page.request.get(f"{portal.url}/payer/{BOB}").status == 200


def test_signed_out_visitors_get_the_sign_in_page(portal: Any, page: Any) -> None:
    page.goto(f"{portal.url}/payer/{ALICE}")
    assert "/login?next=/payer/" in page.url
    assert page.request.get(f"{portal.url}/payer/{ALICE}.json").status == 401
    # Signing in returns to where the visitor was going.
    page.fill("input[name=login]", portal.world.alice)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    assert page.url == f"{portal.url}/payer/{ALICE}"


def test_a_resident_does_not_see_operator_pages(portal: Any, page: Any) -> None:
    sign_in(page, portal.url, portal.world.alice)
    r = page.request.get(f"{portal.url}/ops")
    missing = page.request.get(f"{portal.url}/no/such/page")
    assert (r.status, r.body()) == (404, missing.body())
    page.context.clear_cookies()
    sign_in(page, portal.url, "ops@example.org")
    assert page.url.endswith("/ops")
    assert page.request.get(f"{portal.url}/payer/{ALICE}").status == 404  # operators are not residents


def test_a_post_without_the_csrf_token_is_refused(portal: Any, page: Any) -> None:
    sign_in(page, portal.url, portal.world.alice)
    for data, headers in (({"code": "ABCD-EFGH-JKLM"}, {}),
                          ({"code": "ABCD-EFGH-JKLM", "csrf_token": "forged"}, {})):
        r = page.request.post(f"{portal.url}/me/link", form=data, headers=headers)
        assert r.status == 403, r.text()
    token = page.get_attribute("form[action='/me/link'] input[name=csrf_token]", "value")
    r = page.request.post(f"{portal.url}/me/link", form={"code": "ABCD-EFGH-JKLM", "csrf_token": token},
                          headers={"Origin": "https://evil.example"})
    assert r.status == 403  # the right token from another site's page
    r = page.request.post(f"{portal.url}/me/link", form={"code": "ABCD-EFGH-JKLM", "csrf_token": token})
    assert r.status == 400 and "не действует" in r.text()  # the token passes; the code is wrong
    r = page.request.post(f"{portal.url}/logout", form={})
    assert r.status == 403
    assert page.request.get(f"{portal.url}/me").status == 200  # still signed in
    big = page.request.post(f"{portal.url}/me/link", form={"code": "x" * 70_000, "csrf_token": token})
    assert big.status == 413


def test_sign_in_limits_per_account_and_per_address(portal_factory: Any, page: Any) -> None:
    portal = portal_factory(login_failures_per_account=3, login_failures_per_ip=5)
    for _ in range(3):
        sign_in(page, portal.url, portal.world.alice, "wrong password!")
        assert "/login" in page.url and "Неверный" in page.content()
    sign_in(page, portal.url, portal.world.alice)  # the right password, but the account is locked for now
    assert "/login" in page.url and "Слишком много" in page.content()
    sign_in(page, portal.url, portal.world.bob, "wrong password!")
    sign_in(page, portal.url, portal.world.bob, "wrong password!")
    sign_in(page, portal.url, portal.world.bob)  # 5 failures from this address: every account refused
    assert "/login" in page.url and "Слишком много" in page.content()
    r = page.request.post(f"{portal.url}/login", form={
        "login": "nobody@example.org", "password": "x", "csrf_token": page.get_attribute(
            "input[name=csrf_token]", "value")})
    assert r.status == 429


def test_link_code_links_once(portal: Any, page: Any) -> None:
    from cloud_bridge.web.users import issue_link_code

    code = issue_link_code(portal.engine, NOBODY_LINKED, 30)
    sign_in(page, portal.url, portal.world.alice)
    page.fill("input[name=code]", code.lower().replace("-", " "))
    with page.expect_navigation():
        page.click("form[action='/me/link'] button")
    assert f"Flat of {NOBODY_LINKED}" in page.content()
    assert page.request.get(f"{portal.url}/payer/{NOBODY_LINKED}").status == 200
    page.context.clear_cookies()
    sign_in(page, portal.url, portal.world.bob)
    page.fill("input[name=code]", code)
    page.click("form[action='/me/link'] button")
    page.wait_for_selector(".error")
    assert page.request.get(f"{portal.url}/payer/{NOBODY_LINKED}").status == 404  # used codes stay used


def test_phone_layout_has_no_horizontal_overflow(portal: Any, page: Any) -> None:
    page.goto(portal.url + "/login")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    sign_in(page, portal.url, portal.world.alice)
    reading = portal.world.reading_ids["dev-a-cold"][-1]
    for path in ("/me", f"/payer/{ALICE}", f"/payer/{ALICE}?all=1", f"/payer/{ALICE}/reading/{reading}",
                 "/me/notifications", "/account/password", "/no/such/page"):
        page.goto(portal.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)


def test_russian_by_default_english_on_request(portal: Any, page: Any) -> None:
    page.goto(portal.url + "/login")
    assert page.locator("html").get_attribute("lang") == "ru" and "Войти" in page.content()
    with page.expect_navigation():
        page.click("button[name=lang][value=en]")
    assert page.locator("html").get_attribute("lang") == "en" and "Sign in" in page.content()
    sign_in(page, portal.url, portal.world.alice)  # the choice survives signing in
    page.goto(f"{portal.url}/payer/{ALICE}")
    assert "cold water" in page.content() and "decrease" not in page.content()
