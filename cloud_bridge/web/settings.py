"""The `web` config section: where the portal keeps its secrets, cookies, sign-in limits and the
single sign-on mode."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from contract.settings import Section


class SsoSection(Section):
    header: str = Field(
        "X-Remote-User", pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header in which the authenticating proxy names the signed-in person.")
    signature_header: str = Field(
        "X-Remote-User-Signature", pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header `<unix time>:<hex HMAC-SHA256 of '<unix time>:<identity>'>`, keyed with secret_file; "
        "valid for 5 minutes either side of now.")
    secret_file: Path = Field(
        Path("state/web/sso.key"), description="Shared secret with the proxy (0600; created if missing).")


class WebSection(Section):
    auth: Literal["password", "sso"] = Field(
        "password", description="password: residents register and sign in here; sso: trust the identity "
        "header of the utility's authenticating proxy (operators still sign in with a password).")
    secret_file: Path = Field(
        Path("state/web/session.key"), description="Key that signs session cookies (0600; created if missing).")
    cookie_secure: bool = Field(
        True, description="Send the session cookie only over HTTPS (browsers also accept it on http://127.0.0.1 "
        "and http://localhost). Turn off only for a test on a plain-HTTP LAN address.")
    session_max_age_s: int = Field(12 * 3600, ge=300, le=30 * 86400, description="A sign-in lasts this long.")
    login_failures_per_account: int = Field(
        5, ge=1, le=1000, description="Failed sign-ins to one account within login_window_s before it is refused.")
    login_failures_per_ip: int = Field(
        20, ge=1, le=100_000, description="Failed sign-ins from one address within login_window_s before refusing.")
    login_window_s: int = Field(15 * 60, ge=10, le=86400, description="Window of the sign-in limits.")
    link_failures_per_account: int = Field(
        10, ge=1, le=1000, description="Wrong link codes one account may enter within login_window_s.")
    link_code_valid_days: int = Field(30, ge=1, le=3650, description="A link code printed by `residents invite` "
                                      "works this many days.")
    photo_uploads_per_hour: int = Field(
        30, ge=1, le=10_000, description="Photos one resident may upload within an hour (each is read on the "
        "server: a CPU cost).")
    trusted_proxy_header: str | None = Field(
        None, pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header carrying the client address set by the reverse proxy (e.g. X-Real-IP); "
        "none: the TCP peer's address counts for the per-address limit.")
    sso: SsoSection = Field(default_factory=SsoSection)  # type: ignore[arg-type]
