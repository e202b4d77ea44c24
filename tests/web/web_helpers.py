"""Helpers for the portal's tests: a store with two households, their meters and readings (stored the
way ingest stores them), a config, and the portal served by uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import Engine

from cloud_bridge.config import BridgeConfig
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle
from cloud_bridge.registry import add_device, bind
from cloud_bridge.web.app import create_app
from cloud_bridge.web.users import create_user, issue_link_code, redeem_link_code
from contract import topics
from contract.payloads import Reading

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # November's window (15 Nov - 3 Dec, Moscow) is open
ALICE, BOB, NOBODY_LINKED = "1000000001", "2000000002", "3000000003"
UNKNOWN = "9999999999"
PASSWORD = "correct horse battery"


def make_config(db_url: str, tmp: Path, billing_url: str = "http://127.0.0.1:9", **web: Any) -> BridgeConfig:
    return BridgeConfig(database_url=db_url, billing={"url": billing_url}, loyalty={"url": billing_url},
                        submission={"timeout_s": 2.0, "max_attempts_per_pass": 2, "backoff_base_s": 0.05,
                                    "backoff_max_s": 0.2, "max_wait_in_pass_s": 1.0},
                        web={"secret_file": str(tmp / "web" / "session.key"),
                             "sso": {"secret_file": str(tmp / "web" / "sso.key")}, **web})


def store_readings(engine: Engine, device_id: str, seq0: int,
                   items: list[tuple[datetime, str | None, str, str | None]]) -> list[int]:
    ids = []
    with engine.begin() as conn:
        for i, (taken_at, value, status, reason) in enumerate(items):
            r = Reading(device_id=device_id, seq=seq0 + i, taken_at=taken_at, value=value,
                        status=status, reason=reason,  # type: ignore[arg-type]
                        confidence=0.99 if status == "ok" else 0.4)
            out = handle(conn, Message(topics.reading(device_id), r.to_json_bytes()), taken_at)
            assert out.kind == "stored", out
            assert out.reading_id is not None
            ids.append(out.reading_id)
    return ids


@dataclass
class World:
    alice: str = "alice@example.org"
    bob: str = "+79161234567"
    reading_ids: dict[str, list[int]] = field(default_factory=dict)


def seed(engine: Engine, now: datetime = NOW) -> World:
    """Alice (payer ALICE: cold and hot meter), Bob (payer BOB), and a payer nobody has linked."""
    since = now - timedelta(days=70)
    with engine.begin() as conn:
        for dev, meter, payer, kind in (("dev-a-cold", "M-A-C", ALICE, "cold"), ("dev-a-hot", "M-A-H", ALICE, "hot"),
                                        ("dev-b", "M-B", BOB, "cold"), ("dev-n", "M-N", NOBODY_LINKED, "cold")):
            add_device(conn, dev, now=since)
            bind(conn, dev, meter_serial=meter, kind=kind, payer_code=payer,  # type: ignore[arg-type]
                 address=f"Flat of {payer}", now=since)
    world = World()
    for dev, base, rate in (("dev-a-cold", 120, 0.25), ("dev-a-hot", 40, 0.1), ("dev-b", 10, 0.2), ("dev-n", 5, 0.1)):
        items: list[tuple[datetime, str | None, str, str | None]] = []
        for day in range(60, -1, -1):
            at = now - timedelta(days=day, hours=1)
            items.append((at, f"{base + rate * (60 - day):09.3f}", "ok", None))
        items.append((now - timedelta(minutes=30), None, "error", "frame_failed: alignment failed (12 matches)"))
        items.append((now - timedelta(minutes=20), f"{base - 1:09.3f}", "suspect",
                      "decrease: 00119.000 is 15 m3 below the accepted value"))
        world.reading_ids[dev] = store_readings(engine, dev, 1, items)
    create_user(engine, world.alice, "resident", PASSWORD)
    create_user(engine, world.bob, "resident", PASSWORD)
    create_user(engine, "ops@example.org", "operator", PASSWORD)
    a = _uid(engine, world.alice)
    b = _uid(engine, world.bob)
    assert redeem_link_code(engine, a, issue_link_code(engine, ALICE, 30, now), now) == ALICE
    assert redeem_link_code(engine, b, issue_link_code(engine, BOB, 30, now), now) == BOB
    return world


def _uid(engine: Engine, login: str) -> int:
    from sqlalchemy import select

    from cloud_bridge.store.tables import users
    from cloud_bridge.web.users import normalise_login

    with engine.connect() as conn:
        return int(conn.execute(select(users.c.id).where(users.c.login == normalise_login(login))).scalar_one())


@contextmanager
def serve(engine: Engine, config: BridgeConfig, clock: Callable[[], datetime] | None = None) -> Iterator[str]:
    """The portal on a free loopback port (uvicorn in a thread); yields its base URL, stops it after."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine, config, clock=clock), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the portal did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
