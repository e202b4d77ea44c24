"""Accounts, link codes and the sign-in counter on both stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from cloud_bridge.registry import add_device, bind
from cloud_bridge.store import open_store
from cloud_bridge.store.tables import link_codes
from cloud_bridge.web.security import Throttle, verify_password
from cloud_bridge.web.users import (
    UserError,
    authenticate,
    create_user,
    issue_link_code,
    linked_payers,
    normalise_login,
    redeem_link_code,
    set_password,
)

T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
PAYER = "1000000001"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = open_store(db_url)
    with e.begin() as conn:
        add_device(conn, "d1", now=T0)
        bind(conn, "d1", meter_serial="M1", kind="cold", payer_code=PAYER, address="Flat 1", now=T0)
    yield e
    e.dispose()


@pytest.mark.parametrize(("text", "login"), [
    ("  Alice@Example.ORG ", "alice@example.org"), ("+7 (916) 123-45-67", "+79161234567"),
    ("8 916 123 45 67", "+79161234567"), ("79161234567", "+79161234567"), ("+44 20 7946 0958", "+442079460958"),
])
def test_logins_are_normalised(text: str, login: str) -> None:
    assert normalise_login(text) == login


@pytest.mark.parametrize("text", ["", "alice", "a@b", "123", "+7916abc4567", "x" * 300 + "@example.org"])
def test_what_is_not_a_login_is_refused(text: str) -> None:
    with pytest.raises(UserError):
        normalise_login(text)


def test_accounts_passwords_and_sessions(engine: Engine) -> None:
    user = create_user(engine, "8 916 123 45 67", "resident", "long enough password")
    with pytest.raises(UserError, match="already exists"):
        create_user(engine, "+79161234567", "resident", "another long password")
    with pytest.raises(UserError, match="at least 10"):
        create_user(engine, "bob@example.org", "resident", "short")
    assert authenticate(engine, "+7 916 123-45-67", "long enough password") == user
    assert authenticate(engine, "+79161234567", "wrong password!") is None
    assert authenticate(engine, "nobody@example.org", "long enough password") is None
    set_password(engine, user.id, "a new long password")
    again = authenticate(engine, "+79161234567", "a new long password")
    assert again is not None and again.session_version == user.session_version + 1  # old sessions end
    assert not verify_password(None, "anything")


def test_a_link_code_works_once_and_only_until_it_expires(engine: Engine) -> None:
    a = create_user(engine, "a@example.org", "resident", "long enough password")
    b = create_user(engine, "b@example.org", "resident", "long enough password")
    code = issue_link_code(engine, PAYER, 30, T0)
    with engine.connect() as conn:
        stored = conn.execute(select(link_codes.c.code_hash)).scalar_one()
    assert code.replace("-", "") not in stored  # only its hash is kept
    assert redeem_link_code(engine, a.id, "wrong-code-here", T0) is None
    assert redeem_link_code(engine, a.id, code.lower(), T0) == PAYER
    assert redeem_link_code(engine, b.id, code, T0) is None
    with engine.connect() as conn:
        assert linked_payers(conn, a.id) == [PAYER] and linked_payers(conn, b.id) == []
    late = issue_link_code(engine, PAYER, 1, T0)
    assert redeem_link_code(engine, b.id, late, T0 + timedelta(days=1, seconds=1)) is None
    with pytest.raises(UserError, match="no payer"):
        issue_link_code(engine, "9999999999", 30, T0)


def test_two_residents_racing_for_one_code_link_it_once(engine: Engine) -> None:
    users = [create_user(engine, f"r{i}@example.org", "resident", "long enough password") for i in range(4)]
    code = issue_link_code(engine, PAYER, 30, T0)
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda u=u: results.append(redeem_link_code(engine, u.id, code, T0)))
               for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [PAYER, None, None, None]


def test_the_throttle_counts_within_its_window(engine: Engine) -> None:
    throttle = Throttle(engine, 900)
    for i in range(3):
        throttle.fail(["login:a", "ip:1"], T0 + timedelta(seconds=i))
    assert throttle.blocked("login:a", 3, T0 + timedelta(seconds=10))
    assert not throttle.blocked("login:a", 4, T0 + timedelta(seconds=10))
    assert not throttle.blocked("login:a", 3, T0 + timedelta(seconds=901))  # the window moved on
    throttle.clear("login:a")
    assert not throttle.blocked("login:a", 1, T0) and throttle.blocked("ip:1", 3, T0 + timedelta(seconds=10))
