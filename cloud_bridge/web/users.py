"""People who sign in to the portal (residents and operators), the payer codes a resident linked, and
the one-time link codes the utility hands out. These are web accounts; broker accounts for devices,
operators' MQTT clients and Home Assistant are another thing (`meter-bridge accounts`)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from cloud_bridge.store.tables import link_codes, payer_links, payers, users
from cloud_bridge.web.security import hash_password, password_problem, verify_password
from cloud_bridge.web.words import N_

Role = Literal["resident", "operator"]
ROLES: tuple[Role, ...] = ("resident", "operator")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,185}\.[^@\s]{2,}$")
PAYER_CODE = re.compile(r"^\d{10}$")
LINK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud over the phone
LINK_GROUPS = 3
LINK_GROUP_LEN = 4


class UserError(ValueError):
    """A request about an account that cannot be done; the message says why (English, translated by pages)."""


@dataclass(frozen=True)
class User:
    id: int
    login: str
    role: Role
    session_version: int
    must_change_password: bool

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


def normalise_login(text: str) -> str:
    """An e-mail in lower case, or a phone number as +digits (a Russian 8XXXXXXXXXX becomes +7XXXXXXXXXX).
    Raises UserError for anything else."""
    text = text.strip()
    if "@" in text:
        email = text.lower()
        if len(email) > 254 or not EMAIL.match(email):
            raise UserError(N_("This is not an e-mail address or a phone number."))
        return email
    digits = re.sub(r"[\s()\-.]", "", text)
    if digits.startswith("+"):
        digits = digits[1:]
    elif len(digits) == 11 and digits.startswith("8"):
        digits = "7" + digits[1:]
    if not digits.isdigit() or not 10 <= len(digits) <= 15:
        raise UserError(N_("This is not an e-mail address or a phone number."))
    return "+" + digits


def _user(row: object) -> User:
    return User(row.id, row.login, row.role, row.session_version, bool(row.must_change_password))  # type: ignore[attr-defined]


def create_user(engine: Engine, login: str, role: Role, password: str | None, *,
                must_change_password: bool = False, now: datetime | None = None, normalise: bool = True) -> User:
    """A new account; raises UserError when the login is taken or the password too weak."""
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    login = normalise_login(login) if normalise else login
    if password is not None and (problem := password_problem(password)):
        raise UserError(problem)
    now = now or datetime.now(UTC)
    try:
        with engine.begin() as conn:
            uid = conn.execute(users.insert().values(
                login=login, role=role, password_hash=hash_password(password) if password is not None else None,
                must_change_password=must_change_password, created_at=now).returning(users.c.id)).scalar_one()
    except IntegrityError:
        raise UserError(N_("An account with this e-mail or phone already exists.")) from None
    return User(int(uid), login, role, 0, must_change_password)


def authenticate(engine: Engine, login: str, password: str, now: datetime | None = None) -> User | None:
    """The account when login and password match (and it is not disabled); always checks a hash."""
    try:
        login = normalise_login(login)
    except UserError:
        verify_password(None, password)
        return None
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.login == login)).first()
    ok = verify_password(row.password_hash if row is not None else None, password)
    if row is None or not ok or row.disabled:
        return None
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == row.id).values(last_login_at=now or datetime.now(UTC)))
    return _user(row)


def get_user(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(users).where(users.c.id == user_id, users.c.disabled.is_(False))).first()
    return _user(row) if row is not None else None


def find_user(conn: Connection, login: str) -> User | None:
    row = conn.execute(select(users).where(users.c.login == login)).first()
    return _user(row) if row is not None else None


def set_password(engine: Engine, user_id: int, password: str, *, must_change: bool = False) -> None:
    """A new password; every existing session of the account ends (session_version + 1)."""
    if problem := password_problem(password):
        raise UserError(problem)
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == user_id).values(
            password_hash=hash_password(password), must_change_password=must_change,
            session_version=users.c.session_version + 1))


def sso_user(engine: Engine, identity: str, now: datetime | None = None) -> User:
    """The resident account for an identity vouched for by the single sign-on proxy (created on first visit)."""
    login = "sso:" + identity
    with engine.connect() as conn:
        found = find_user(conn, login)
    if found is not None:
        return found
    try:
        return create_user(engine, login, "resident", None, now=now, normalise=False)
    except UserError:  # created by a parallel request
        with engine.connect() as conn:
            again = find_user(conn, login)
        assert again is not None
        return again


def linked_payers(conn: Connection, user_id: int) -> list[str]:
    return list(conn.execute(select(payer_links.c.payer_code).where(payer_links.c.user_id == user_id)
                             .order_by(payer_links.c.payer_code)).scalars())


def is_linked(conn: Connection, user_id: int, payer_code: str) -> bool:
    return conn.execute(select(payer_links.c.id).where(
        payer_links.c.user_id == user_id, payer_links.c.payer_code == payer_code)).first() is not None


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def normalise_link_code(text: str) -> str:
    return re.sub(r"[\s-]", "", text).upper()


def issue_link_code(engine: Engine, payer_code: str, valid_days: int, now: datetime | None = None) -> str:
    """A one-time link code for `payer_code` (only its hash is stored), e.g. `K7QF-9XPM-2DHT`."""
    if not PAYER_CODE.match(payer_code):
        raise UserError(f"payer code {payer_code!r} is not 10 digits")
    now = now or datetime.now(UTC)
    raw = "".join(secrets.choice(LINK_ALPHABET) for _ in range(LINK_GROUPS * LINK_GROUP_LEN))
    with engine.begin() as conn:
        if conn.execute(select(payers.c.payer_code).where(payers.c.payer_code == payer_code)).first() is None:
            raise UserError(f"no payer with code {payer_code} (bind a device to it first: `meter-bridge bind`)")
        conn.execute(link_codes.insert().values(code_hash=_code_hash(raw), payer_code=payer_code, created_at=now,
                                                expires_at=now + timedelta(days=valid_days)))
    return "-".join(raw[i:i + LINK_GROUP_LEN] for i in range(0, len(raw), LINK_GROUP_LEN))


def redeem_link_code(engine: Engine, user_id: int, text: str, now: datetime | None = None) -> str | None:
    """Link the code's payer to the user; returns the payer code, or None for a wrong, used or expired code."""
    now = now or datetime.now(UTC)
    code = normalise_link_code(text)
    if len(code) != LINK_GROUPS * LINK_GROUP_LEN:
        return None
    with engine.begin() as conn:
        row = conn.execute(select(link_codes).where(link_codes.c.code_hash == _code_hash(code))).first()
        if row is None or row.used_at is not None or row.expires_at <= now:
            return None
        claimed = conn.execute(update(link_codes).where(link_codes.c.id == row.id, link_codes.c.used_at.is_(None))
                               .values(used_at=now, used_by=user_id)).rowcount
        if claimed != 1:
            return None
        if not is_linked(conn, user_id, row.payer_code):
            conn.execute(payer_links.insert().values(user_id=user_id, payer_code=row.payer_code,
                                                     link_code_id=row.id, linked_at=now))
    return str(row.payer_code)


def link_payer(engine: Engine, user_id: int, payer_code: str, now: datetime | None = None) -> bool:
    """Link directly (an operator's command, e.g. for a single sign-on identity); False if already linked."""
    with engine.begin() as conn:
        if conn.execute(select(payers.c.payer_code).where(payers.c.payer_code == payer_code)).first() is None:
            raise UserError(f"no payer with code {payer_code}")
        if is_linked(conn, user_id, payer_code):
            return False
        conn.execute(payer_links.insert().values(user_id=user_id, payer_code=payer_code,
                                                 linked_at=now or datetime.now(UTC)))
    return True
