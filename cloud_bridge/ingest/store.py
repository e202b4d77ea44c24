"""What ingest writes, in the caller's transaction: a reading, a refusal, a device status, counters.

Nothing here keeps state between calls: with N workers (or a redelivery reaching another worker out
of order) the database decides: (device_id, seq) is unique, so a second copy is a no-op.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, and_, select
from sqlalchemy.dialects import postgresql, sqlite

from cloud_bridge.ingest.source import Message
from cloud_bridge.store.tables import bindings, counters, device_status, devices, readings, refusals
from contract import topics
from contract.parse import Refusal, parse_reading
from contract.payloads import MAX_PAYLOAD_BYTES, Reading

log = logging.getLogger(__name__)

OutcomeKind = Literal["stored", "duplicate", "refused", "status", "ignored"]
# Refusals the bridge adds to contract.parse's reasons.
UNKNOWN_DEVICE = "unknown_device"
UNBOUND_DEVICE = "unbound_device"
STORE_ERROR = "store_error"


@dataclass(frozen=True)
class Outcome:
    message: Message
    kind: OutcomeKind
    device_id: str | None = None
    seq: int | None = None
    reason: str | None = None
    detail: str | None = None
    reading_id: int | None = None


def clean_text(value: str | None, limit: int = 1000) -> str | None:
    """Text safe for both databases: no NUL (PostgreSQL refuses it), no lone surrogates, bounded."""
    if value is None:
        return None
    return value[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table))


def _device_and_binding(conn: Connection, device_id: str) -> tuple[bool, int | None]:
    row = conn.execute(
        select(devices.c.device_id, bindings.c.id)
        .outerjoin(bindings, and_(bindings.c.device_id == devices.c.device_id, bindings.c.valid_to.is_(None)))
        .where(devices.c.device_id == device_id)).first()
    return (False, None) if row is None else (True, row[1])


def record_refusal(conn: Connection, msg: Message, reason: str, detail: str | None, device_id: str | None,
                   seq: int | None, now: datetime, keep_payload: bool = True) -> Outcome:
    conn.execute(refusals.insert().values(
        at=now, topic=clean_text(msg.topic), device_id=device_id, seq=seq, reason=reason,
        detail=clean_text(detail) or None, size=len(msg.payload),
        payload=msg.payload[:MAX_PAYLOAD_BYTES] if keep_payload else None))
    return Outcome(msg, "refused", device_id, seq, reason, detail)


def store_reading(conn: Connection, msg: Message, reading: Reading, now: datetime,
                  keep_payload: bool = True) -> Outcome:
    try:
        raw = msg.payload.decode("utf-8")
    except UnicodeDecodeError as exc:  # json.loads also takes UTF-16/32; the contract says UTF-8
        return record_refusal(conn, msg, "bad_json", f"not UTF-8: {exc.reason}", reading.device_id, reading.seq,
                              now, keep_payload)
    known, binding_id = _device_and_binding(conn, reading.device_id)
    if not known:
        return record_refusal(conn, msg, UNKNOWN_DEVICE, "no such device: add it with `meter-bridge devices add`",
                              reading.device_id, reading.seq, now, keep_payload)
    if binding_id is None:
        return record_refusal(conn, msg, UNBOUND_DEVICE, "device is not bound: `meter-bridge bind` it",
                              reading.device_id, reading.seq, now, keep_payload)
    stmt = (_insert(conn, readings).values(
        device_id=reading.device_id, seq=reading.seq, taken_at=reading.taken_at, stored_at=now,
        status=reading.status, value=reading.value, unit=reading.unit, confidence=reading.confidence,
        reason=clean_text(reading.reason), binding_id=binding_id, model=clean_text(reading.model, 128),
        raw=raw)
        .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        .returning(readings.c.id))
    new_id = conn.execute(stmt).scalar()
    if new_id is not None:
        return Outcome(msg, "stored", reading.device_id, reading.seq, reading_id=int(new_id))
    first = conn.execute(select(readings.c.id, readings.c.raw).where(and_(
        readings.c.device_id == reading.device_id, readings.c.seq == reading.seq))).one()
    if first.raw != raw:
        # The device reused a seq (state lost?). The first copy stays; say so loudly.
        log.warning("device %s sent seq %d again with other content; keeping the first", reading.device_id,
                    reading.seq)
        return Outcome(msg, "duplicate", reading.device_id, reading.seq, reason="seq_reused",
                       reading_id=int(first.id))
    return Outcome(msg, "duplicate", reading.device_id, reading.seq, reading_id=int(first.id))


def store_status(conn: Connection, msg: Message, device_id: str, now: datetime) -> Outcome:
    text = msg.payload.decode("utf-8", "replace").strip()
    if text not in ("online", "offline"):
        return Outcome(msg, "ignored", device_id, reason="bad_status", detail=text[:40])
    online = text == "online"
    if not _device_and_binding(conn, device_id)[0]:
        return Outcome(msg, "ignored", device_id, reason=UNKNOWN_DEVICE)
    stmt = _insert(conn, device_status).values(device_id=device_id, online=online, changed_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["device_id"], set_={"online": online, "changed_at": now},
        where=device_status.c.online != online)
    conn.execute(stmt)
    return Outcome(msg, "status", device_id)


def handle(conn: Connection, msg: Message, now: datetime, keep_payload: bool = True) -> Outcome:
    """Decide one message inside the caller's transaction. Never raises for bad input."""
    parsed_topic = topics.parse_device_topic(msg.topic)
    if parsed_topic is not None and parsed_topic.kind == topics.STATUS:
        return store_status(conn, msg, parsed_topic.device_id, now)
    result = parse_reading(msg.payload, msg.topic)
    if isinstance(result, Refusal):
        return record_refusal(conn, msg, result.reason, result.detail, result.device_id, result.seq, now,
                              keep_payload)
    return store_reading(conn, msg, result, now, keep_payload)


def bump_counters(conn: Connection, shard: str, counts: Counter[str], now: datetime) -> None:
    for name, n in sorted(counts.items()):  # sorted: two workers never lock rows in opposite order
        if not n:
            continue
        stmt = _insert(conn, counters).values(name=name, shard=shard, value=n, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name", "shard"],
            set_={"value": counters.c.value + stmt.excluded.value, "updated_at": now})
        conn.execute(stmt)


def count_outcomes(outcomes: list[Outcome]) -> Counter[str]:
    c: Counter[str] = Counter()
    for o in outcomes:
        if o.kind in ("status", "ignored"):
            c["status_received"] += 1
            continue
        c["received"] += 1
        if o.kind == "duplicate":
            c["duplicate"] += 1
            if o.reason == "seq_reused":
                c["seq_reused"] += 1
    return c
