"""`meter-bridge web` (the portal), `meter-bridge users …` (people who sign in to it) and
`meter-bridge residents …` (one-time link codes for payer codes)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from cloud_bridge.cli_common import fail, load_config, open_engine


@click.command("web")
@click.option("--port", type=click.IntRange(0, 65535), default=8090, show_default=True, help="Port (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Keep loopback and put a TLS reverse proxy in front (docs/residents.md).")
@click.option("--proxy-headers", is_flag=True,
              help="Trust X-Forwarded-Proto/For from a reverse proxy on 127.0.0.1 (behind TLS termination).")
@click.pass_context
def web(ctx: click.Context, port: int, host: str, proxy_headers: bool) -> None:
    """Serve the portal: residents sign in and see their meters, bills and points, and correct a reading;
    operators see the fleet. Secrets live in the files named by the config's `web` section."""
    import socket

    import uvicorn

    from cloud_bridge.web.app import create_app
    from cloud_bridge.web.security import SecretFileError

    config = load_config(ctx)
    engine = open_engine(ctx)
    try:
        app = create_app(engine, config)
    except SecretFileError as exc:
        fail(str(exc))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait from now on, so the address printed below is usable at once
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror} (pick another --port)")
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"portal on http://{shown}:{sock.getsockname()[1]}/ (sign-in: {config.web.auth})", err=False)
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", proxy_headers=proxy_headers,
                                           forwarded_allow_ips="127.0.0.1" if proxy_headers else None,
                                           server_header=False))
    try:
        server.run(sockets=[sock])
    finally:
        engine.dispose()


@click.group("users")
def users_group() -> None:
    """People who sign in to the portal (`meter-bridge web`): operators and residents. Not broker
    accounts (those are `meter-bridge accounts`)."""


@users_group.command("add")
@click.argument("login")
@click.option("--role", type=click.Choice(["operator", "resident"]), default="operator", show_default=True)
@click.option("--json", "as_json", is_flag=True, help='Print {"login", "role", "password"}.')
@click.pass_context
def users_add(ctx: click.Context, login: str, role: str, as_json: bool) -> None:
    """Create an account for LOGIN (an e-mail or a phone number) and print a one-time password; the
    first sign-in asks for a new one."""
    from cloud_bridge.web.security import new_password
    from cloud_bridge.web.users import UserError, create_user

    engine = open_engine(ctx)
    password = new_password()
    try:
        user = create_user(engine, login, role, password, must_change_password=True)  # type: ignore[arg-type]
    except UserError as exc:
        fail(f"{exc} ({login})")
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"login": user.login, "role": user.role, "password": password}))
    else:
        click.echo(f"{user.role} {user.login}: one-time password {password}\n"
                   "(shown only now; the first sign-in asks for a new password)")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """Accounts with role, linked payer codes and last sign-in (local time of window.timezone)."""
    from sqlalchemy import select

    from cloud_bridge.store.tables import payer_links, users
    from contract.payloads import format_utc

    engine = open_engine(ctx)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.id)).all()
            links: dict[int, list[str]] = {}
            for link in conn.execute(select(payer_links).order_by(payer_links.c.payer_code)):
                links.setdefault(link.user_id, []).append(link.payer_code)
    finally:
        engine.dispose()
    out = [{"id": r.id, "login": r.login, "role": r.role, "disabled": bool(r.disabled),
            "payer_codes": links.get(r.id, []),
            "last_login_at": format_utc(r.last_login_at) if r.last_login_at else None} for r in rows]
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False))
        return
    for u in out:
        flags = " (disabled)" if u["disabled"] else ""
        click.echo(f"{u['id']:>5} {u['role']:<9} {u['login']}{flags}  payers: {', '.join(u['payer_codes']) or '-'}"
                   f"  last sign-in: {u['last_login_at'] or 'never'}")


def _set_disabled(ctx: click.Context, login: str, disabled: bool) -> None:
    from sqlalchemy import update

    from cloud_bridge.store.tables import users
    from cloud_bridge.web.users import UserError, normalise_login

    try:
        key = login if login.startswith("sso:") else normalise_login(login)
    except UserError as exc:
        fail(f"{exc} ({login})")
    engine = open_engine(ctx)
    try:
        with engine.begin() as conn:
            n = conn.execute(update(users).where(users.c.login == key).values(
                disabled=disabled, session_version=users.c.session_version + 1)).rowcount
    finally:
        engine.dispose()
    if n != 1:
        fail(f"no account {key} (see `meter-bridge users list`)")
    click.echo(f"{key}: {'disabled, signed out everywhere' if disabled else 'enabled'}")


@users_group.command("disable")
@click.argument("login")
@click.pass_context
def users_disable(ctx: click.Context, login: str) -> None:
    """Stop LOGIN from signing in and end its sessions (its links and history stay)."""
    _set_disabled(ctx, login, True)


@users_group.command("enable")
@click.argument("login")
@click.pass_context
def users_enable(ctx: click.Context, login: str) -> None:
    """Let a disabled LOGIN sign in again."""
    _set_disabled(ctx, login, False)


@users_group.command("reset-password")
@click.argument("login")
@click.option("--json", "as_json", is_flag=True, help='Print {"login", "password"}.')
@click.pass_context
def users_reset_password(ctx: click.Context, login: str, as_json: bool) -> None:
    """Give LOGIN a new one-time password (printed) and end its sessions."""
    from cloud_bridge.web.security import new_password
    from cloud_bridge.web.users import UserError, find_user, normalise_login, set_password

    try:
        key = normalise_login(login)
    except UserError as exc:
        fail(f"{exc} ({login})")
    engine = open_engine(ctx)
    try:
        with engine.connect() as conn:
            user = find_user(conn, key)
        if user is None:
            fail(f"no account {key} (see `meter-bridge users list`)")
        password = new_password()
        set_password(engine, user.id, password, must_change=True)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"login": key, "password": password}))
    else:
        click.echo(f"{key}: one-time password {password} (the next sign-in asks for a new one)")


@click.group("residents")
def residents_group() -> None:
    """Residents of the portal: one-time link codes that let a resident see a payer code's meters."""


@residents_group.command("invite")
@click.option("--payer", "payer_code", metavar="CODE", default=None, help="The 10-digit payer code.")
@click.option("--csv", "csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A CSV with a payer_code column (one row per payer); prints payer_code,link_code,expires_at.")
@click.option("--days", type=click.IntRange(1, 3650), default=None,
              help="Days the code works (default: web.link_code_valid_days).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list with --csv).")
@click.pass_context
def residents_invite(ctx: click.Context, payer_code: str | None, csv_file: Path | None, days: int | None,
                     as_json: bool) -> None:
    """Print a one-time link code for a payer code (hand it to the household, e.g. on the bill). A
    resident who signs in and enters it sees that payer's meters; the code then stops working."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from cloud_bridge.store.tables import payers
    from cloud_bridge.web.users import PAYER_CODE, UserError, issue_link_code
    from contract.payloads import format_utc

    if (payer_code is None) == (csv_file is None):
        fail("give either --payer CODE or --csv FILE")
    codes: list[str]
    if csv_file is not None:
        with csv_file.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "payer_code" not in reader.fieldnames:
                fail(f"{csv_file} has no payer_code column (first line: payer_code,...)")
            codes = [(row.get("payer_code") or "").strip() for row in reader]
        bad = [f"line {i + 2}: {c!r}" for i, c in enumerate(codes) if not PAYER_CODE.match(c)]
        if bad:
            fail(f"{csv_file}: not 10-digit payer codes: {'; '.join(bad[:10])}; nothing was issued")
    else:
        assert payer_code is not None
        codes = [payer_code]
    config = load_config(ctx)
    valid = days or config.web.link_code_valid_days
    engine = open_engine(ctx)
    now = datetime.now(UTC)
    try:
        with engine.connect() as conn:
            known = set(conn.execute(select(payers.c.payer_code).where(payers.c.payer_code.in_(codes))).scalars())
        missing = [c for c in codes if c not in known]
        if missing:
            fail(f"no payer with code {', '.join(missing[:10])} (bind a device to it first: `meter-bridge bind`); "
                 "nothing was issued")
        try:
            issued = [{"payer_code": code, "link_code": issue_link_code(engine, code, valid, now),
                       "expires_at": format_utc(now + timedelta(days=valid))} for code in codes]
        except UserError as exc:
            fail(str(exc))
    finally:
        engine.dispose()
    if csv_file is not None or as_json:
        _print_issued(issued, as_json, csv_file is not None)
    else:
        click.echo(f"payer {issued[0]['payer_code']}: link code {issued[0]['link_code']} "
                   f"(works once, until {issued[0]['expires_at']})")


def _print_issued(issued: list[dict[str, str]], as_json: bool, many: bool) -> None:
    if as_json:
        click.echo(json.dumps(issued if many else issued[0]))
        return
    w = csv.DictWriter(sys.stdout, fieldnames=["payer_code", "link_code", "expires_at"], lineterminator="\n")
    w.writeheader()
    w.writerows(issued)


@residents_group.command("link")
@click.argument("login")
@click.option("--payer", "payer_code", metavar="CODE", required=True, help="The 10-digit payer code.")
@click.option("--sso", is_flag=True, help="LOGIN is an identity from the single sign-on proxy (creates the account).")
@click.pass_context
def residents_link(ctx: click.Context, login: str, payer_code: str, sso: bool) -> None:
    """Link a payer code to an account directly (no link code), e.g. for a single sign-on identity."""
    from cloud_bridge.web.users import UserError, find_user, link_payer, normalise_login, sso_user

    engine = open_engine(ctx)
    try:
        if sso:
            user = sso_user(engine, login)
        else:
            try:
                key = normalise_login(login)
            except UserError as exc:
                fail(f"{exc} ({login})")
            with engine.connect() as conn:
                found = find_user(conn, key)
            if found is None:
                fail(f"no account {key}: the resident registers first, or pass --sso for a single sign-on identity")
            user = found
        try:
            added = link_payer(engine, user.id, payer_code)
        except UserError as exc:
            fail(str(exc))
    finally:
        engine.dispose()
    click.echo(f"{user.login}: payer {payer_code} {'linked' if added else 'was already linked'}")


@residents_group.command("feed")
@click.option("--since", "since_text", metavar="ISO_TIME", default=None,
              help="Only events at or after this time (default: the last 24 hours).")
@click.option("--lang", type=click.Choice(["ru", "en"]), default="ru", show_default=True,
              help="Language of each event's `text`.")
@click.pass_context
def residents_feed(ctx: click.Context, since_text: str | None, lang: str) -> None:
    """Every resident's notifications as JSON lines, for the utility's sender (SMS, e-mail, push): one
    line per event and resident, `to` (the login), `id` (stable: remember it to send once), `kind`
    (billed, points, offline, attention, correction), `at` (UTC), payer, meter, value, period, points,
    and `text`. The same events as the portal's /me/notifications."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from cloud_bridge.store.engine import read_only
    from cloud_bridge.store.tables import payer_links, users
    from cloud_bridge.submission.periods import parse_instant
    from cloud_bridge.web.feed import Event, payer_events
    from cloud_bridge.web.i18n import Formats, translations
    from cloud_bridge.web.words import Words

    now = datetime.now(UTC)
    try:
        since = parse_instant(since_text) if since_text else now - timedelta(days=1)
    except ValueError as exc:
        fail(str(exc))
    config = load_config(ctx)
    engine = open_engine(ctx)
    words, fmt = Words(translations(lang)), Formats(lang, config.window.timezone)
    try:
        with read_only(engine) as conn:
            links = conn.execute(select(users.c.login, payer_links.c.payer_code)
                                 .join(payer_links, payer_links.c.user_id == users.c.id)
                                 .where(users.c.disabled.is_(False), users.c.role == "resident")
                                 .order_by(users.c.login, payer_links.c.payer_code)).all()
            cache: dict[str, list[Event]] = {}
            for login, code in links:
                if code not in cache:
                    cache[code] = [e for e in payer_events(conn, config, code, now) if e.at >= since]
                for e in cache[code]:
                    click.echo(json.dumps({"to": login, **e.to_json(), "text": words.event(e, fmt)},
                                          ensure_ascii=False))
    finally:
        engine.dispose()
