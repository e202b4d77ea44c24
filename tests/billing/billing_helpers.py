"""Helpers for the billing tests: the bridge config they use, and a small fleet whose readings go in
through the bridge's ingest code. A module of its own (not conftest) so tests import it by a unique name."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from cloud_bridge.config import BridgeConfig
from cloud_bridge.gateways.http import http_gateways
from cloud_bridge.ingest.source import Message
from cloud_bridge.ingest.store import handle
from cloud_bridge.registry import add_device, bind
from cloud_bridge.residents import CorrectionResult, correct_reading
from cloud_bridge.submission.passes import PassReport, run_submission_pass
from contract import topics
from contract.payloads import Reading


def make_config(db_url: str, sandbox_url: str, **submission: Any) -> BridgeConfig:
    """A config for tests: small, fast backoff unless told otherwise."""
    sub = {"timeout_s": 2.0, "max_attempts_per_pass": 4, "backoff_base_s": 0.05, "backoff_max_s": 0.5,
           "max_wait_in_pass_s": 2.0, "lease_s": 1.0, **submission}
    return BridgeConfig(database_url=db_url, billing={"url": sandbox_url}, loyalty={"url": sandbox_url, "points": 10},
                        submission=sub)


def run_pass(engine: Engine, config: BridgeConfig, at: datetime | None = None, **kw: Any) -> PassReport:
    """One submission pass with HTTP gateways built from the config, as `meter-bridge submit` runs it."""
    with http_gateways(config) as gateways:
        return run_submission_pass(engine, config, at, gateways=gateways, **kw)


def correct(engine: Engine, config: BridgeConfig, reading_id: int, value: str, **kw: Any) -> CorrectionResult:
    """A correction with HTTP gateways built from the config, as `meter-bridge correct` makes it."""
    with http_gateways(config) as gateways:
        return correct_reading(engine, config, reading_id, value, gateways=gateways, **kw)


class Fleet:
    """Devices bound to meters and payers, and readings stored the way ingest stores them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seq: dict[str, int] = {}

    def add(self, device_id: str, meter: str, payer: str, since: datetime, kind: str = "cold") -> None:
        with self.engine.begin() as conn:
            add_device(conn, device_id, now=since)
            bind(conn, device_id, meter_serial=meter, kind=kind, payer_code=payer,  # type: ignore[arg-type]
                 address=f"Flat of {payer}", now=since)

    def settled(self, device_id: str, taken_at: datetime, value: str, *, after: int = 2,
                every: timedelta = timedelta(hours=1)) -> int:
        """A reading that the readings around it corroborate (settlement needs one before and `after`
        after): one `every` before it, then the reading, then `after` more, all showing the same value.
        Returns the reading's id (the ones after it are the next ids)."""
        items: list[tuple[datetime, str | None, str, str | None]] = [
            (taken_at + k * every, value, "ok", None) for k in range(-1, after + 1)]
        return self.readings(device_id, items)[1]

    def reading(self, device_id: str, taken_at: datetime, value: str | None, status: str = "ok",
                reason: str | None = None) -> int:
        return self.readings(device_id, [(taken_at, value, status, reason)])[0]

    def readings(self, device_id: str, items: list[tuple[datetime, str | None, str, str | None]]) -> list[int]:
        """Store (taken_at, value, status, reason) readings in one transaction; returns their ids."""
        ids = []
        with self.engine.begin() as conn:
            for taken_at, value, status, reason in items:
                seq = self.seq.get(device_id, 0) + 1
                self.seq[device_id] = seq
                r = Reading(device_id=device_id, seq=seq, taken_at=taken_at, value=value,
                            status=status, reason=reason,  # type: ignore[arg-type]
                            confidence=0.99 if status == "ok" else 0.4)
                out = handle(conn, Message(topics.reading(device_id), r.to_json_bytes()), taken_at)
                assert out.kind == "stored", out
                assert out.reading_id is not None
                ids.append(out.reading_id)
        return ids
