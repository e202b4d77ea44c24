"""What ingest writes, in the caller's transaction: a reading, a refusal, a device status, counters.

Nothing here keeps state between calls: with N workers (or a redelivery reaching another worker out
of order) the database decides: (device_id, epoch, seq) is unique, so a second copy is a no-op. A second
copy with *other* content is not a duplicate: the device reused a seq (its outbox was lost and it has no
epoch, or it was restored from a backup); that reading is refused as `seq_reused` with its payload kept,
so nothing is silently dropped and a current device starts a new epoch and sends it again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Connection, and_, select

from cloud_bridge.config import DEFAULT_MAX_CLOCK_SKEW_S
from cloud_bridge.ingest.source import Message
from cloud_bridge.store.device_latest import note_readings
from cloud_bridge.store.engine import upsert_insert
from cloud_bridge.store.tables import (
    bindings,
    counters,
    device_status,
    device_telemetry,
    devices,
    readings,
    refusals,
)
from contract import topics
from contract.parse import Refusal, parse_reading
from contract.payloads import MAX_PAYLOAD_BYTES, Reading, Telemetry
from contract.times import format_utc

log = logging.getLogger(__name__)

OutcomeKind = Literal["stored", "duplicate", "refused", "status", "telemetry", "ignored"]
# Refusals the bridge adds to contract.parse's reasons.
UNKNOWN_DEVICE = "unknown_device"
UNBOUND_DEVICE = "unbound_device"
STORE_ERROR = "store_error"
SEQ_REUSED = "seq_reused"
FUTURE_TIME = "future_time"


@dataclass(frozen=True)
class Outcome:
    message: Message
    kind: OutcomeKind
    device_id: str | None = None
    seq: int | None = None
    reason: str | None = None
    detail: str | None = None
    reading_id: int | None = None
    epoch: int | None = None  # the reading's, echoed in the ack (None for v1 devices)


def clean_text(value: str | None, limit: int = 1000) -> str | None:
    """Text safe for both databases: no NUL (PostgreSQL refuses it), no lone surrogates, bounded."""
    if value is None:
        return None
    return value[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _devices_and_bindings(conn: Connection, device_ids: set[str]) -> dict[str, int | None]:
    """{device_id: open binding id or None} for the known ones among `device_ids` (one query)."""
    if not device_ids:
        return {}
    rows = conn.execute(
        select(devices.c.device_id, bindings.c.id)
        .outerjoin(bindings, and_(bindings.c.device_id == devices.c.device_id, bindings.c.valid_to.is_(None)))
        .where(devices.c.device_id.in_(sorted(device_ids)))).all()
    return {r[0]: r[1] for r in rows}


def _refusal_row(msg: Message, reason: str, detail: str | None, device_id: str | None, seq: int | None,
                 now: datetime, keep_payload: bool) -> dict[str, Any]:
    return {"at": now, "topic": clean_text(msg.topic), "device_id": device_id, "seq": seq, "reason": reason,
            "detail": clean_text(detail) or None, "size": len(msg.payload),
            "payload": msg.payload[:MAX_PAYLOAD_BYTES] if keep_payload else None}


def record_refusal(conn: Connection, msg: Message, reason: str, detail: str | None, device_id: str | None,
                   seq: int | None, now: datetime, keep_payload: bool = True) -> Outcome:
    conn.execute(refusals.insert(), [_refusal_row(msg, reason, detail, device_id, seq, now, keep_payload)])
    return Outcome(msg, "refused", device_id, seq, reason, detail)


def _reading_row(r: Reading, raw: str, binding_id: int, now: datetime) -> dict[str, Any]:
    return {"device_id": r.device_id, "epoch": r.epoch or 0, "seq": r.seq, "taken_at": r.taken_at,
            "stored_at": now, "status": r.status,
            "value": r.value, "unit": r.unit, "confidence": r.confidence, "reason": clean_text(r.reason),
            "binding_id": binding_id, "model": clean_text(r.model, 128), "raw": raw}


def store_readings(conn: Connection, items: list[tuple[Message, Reading]], now: datetime,
                   keep_payload: bool = True, *,
                   max_clock_skew_s: float | None = DEFAULT_MAX_CLOCK_SKEW_S) -> list[Outcome]:
    """Store valid readings in one multi-row INSERT … ON CONFLICT DO NOTHING RETURNING; the rows it
    returns are the new ones, every other (device_id, epoch, seq) is a duplicate when its bytes are the
    same, and refused as `seq_reused` when they differ. A reading taken more than `max_clock_skew_s`
    after `now` is refused as `future_time` (None: no such check, for tools that store history with a
    `now` in the past). Outcomes in input order."""
    latest = now + timedelta(seconds=max_clock_skew_s) if max_clock_skew_s is not None else None
    bound = _devices_and_bindings(conn, {r.device_id for _, r in items})
    outcomes: list[Outcome | None] = [None] * len(items)
    refused: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    first_of: dict[tuple[str, int, int], int] = {}  # key -> index of its first copy in this batch
    raws: dict[int, str] = {}

    def refuse(i: int, reason: str, detail: str) -> None:
        msg, r = items[i]
        refused.append(_refusal_row(msg, reason, detail, r.device_id, r.seq, now, keep_payload))
        outcomes[i] = Outcome(msg, "refused", r.device_id, r.seq, reason, detail, epoch=r.epoch)

    for i, (msg, r) in enumerate(items):
        try:
            raws[i] = msg.payload.decode("utf-8")
        except UnicodeDecodeError as exc:  # json.loads also takes UTF-16/32; the contract says UTF-8
            refuse(i, "bad_json", f"not UTF-8: {exc.reason}")
            continue
        if r.device_id not in bound:
            refuse(i, UNKNOWN_DEVICE, "no such device: add it with `meter-bridge devices add`")
        elif bound[r.device_id] is None:
            refuse(i, UNBOUND_DEVICE, "device is not bound: `meter-bridge bind` it")
        elif latest is not None and r.taken_at > latest:
            # Dated in the future (the device's clock is ahead): it could be billed in the wrong period.
            ahead = (r.taken_at - now).total_seconds()
            refuse(i, FUTURE_TIME, f"taken_at {format_utc(r.taken_at)} is {ahead:.0f}s ahead of the bridge's clock "
                                   f"(ingest.max_clock_skew_s = {max_clock_skew_s:g}): check the device's clock (NTP)")
        elif (r.device_id, r.epoch or 0, r.seq) not in first_of:
            first_of[(r.device_id, r.epoch or 0, r.seq)] = i
            rows.append(_reading_row(r, raws[i], bound[r.device_id], now))  # type: ignore[arg-type]
    new: dict[tuple[str, int, int], int] = {}
    if rows:
        stmt = (upsert_insert(conn, readings).on_conflict_do_nothing(index_elements=["device_id", "epoch", "seq"])
                .returning(readings.c.id, readings.c.device_id, readings.c.epoch, readings.c.seq))
        new = {(d, int(e), int(q)): int(rid) for rid, d, e, q in conn.execute(stmt, rows).all()}
        # The devices' newest-reading rows, in this transaction (cloud_bridge/store/device_latest.py).
        note_readings(conn, [{**row, "id": new[key]} for row in rows
                             if (key := (row["device_id"], row["epoch"], row["seq"])) in new])
    for i, (msg, r) in enumerate(items):
        if outcomes[i] is not None:
            continue
        key = (r.device_id, r.epoch or 0, r.seq)
        if key in new and first_of[key] == i:
            outcomes[i] = Outcome(msg, "stored", r.device_id, r.seq, reading_id=new[key], epoch=r.epoch)
            continue
        first = conn.execute(select(readings.c.id, readings.c.raw).where(and_(
            readings.c.device_id == r.device_id, readings.c.epoch == key[1], readings.c.seq == r.seq))).one()
        if first.raw == raws[i]:
            outcomes[i] = Outcome(msg, "duplicate", r.device_id, r.seq, reading_id=int(first.id), epoch=r.epoch)
            continue
        # The device reused a seq (outbox lost or restored): not a duplicate. The first copy stays, this one
        # is refused with its payload kept, and the ack says so: the device sends it again under a new epoch.
        log.warning("device %s sent seq %d (epoch %d) again with other content: refused as %s",
                    r.device_id, r.seq, key[1], SEQ_REUSED)
        refuse(i, SEQ_REUSED, f"seq {r.seq} of epoch {key[1]} is already stored with other content "
                              f"(reading id {first.id}); send it under a new epoch")
    if refused:
        conn.execute(refusals.insert(), refused)
    return [o for o in outcomes if o is not None]


def store_status(conn: Connection, msg: Message, device_id: str, now: datetime) -> Outcome:
    text = msg.payload.decode("utf-8", "replace").strip()
    if text not in ("online", "offline"):
        return Outcome(msg, "ignored", device_id, reason="bad_status", detail=text[:40])
    online = text == "online"
    if device_id not in _devices_and_bindings(conn, {device_id}):
        return Outcome(msg, "ignored", device_id, reason=UNKNOWN_DEVICE)
    stmt = upsert_insert(conn, device_status).values(device_id=device_id, online=online, changed_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["device_id"], set_={"online": online, "changed_at": now},
        where=device_status.c.online != online)
    conn.execute(stmt)
    return Outcome(msg, "status", device_id)


def store_telemetry(conn: Connection, msg: Message, device_id: str, now: datetime) -> Outcome:
    """Keep a device's newest telemetry (one row per device). A malformed or oversized message is
    ignored with a reason (counted as `telemetry_ignored`, logged); it never stops the batch."""
    if len(msg.payload) > MAX_PAYLOAD_BYTES:
        return Outcome(msg, "ignored", device_id, reason="bad_telemetry", detail=f"{len(msg.payload)} bytes")
    try:
        t = Telemetry.model_validate_json(msg.payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        detail = f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"[:200]
        log.warning("telemetry from %s ignored: %s", device_id, detail)
        return Outcome(msg, "ignored", device_id, reason="bad_telemetry", detail=detail)
    if device_id not in _devices_and_bindings(conn, {device_id}):
        return Outcome(msg, "ignored", device_id, reason=UNKNOWN_DEVICE)
    row = {"device_id": device_id, "received_at": now, "at": t.at, "uptime_s": t.uptime_s,
           "outbox_depth": t.outbox_depth, "outbox_dropped": t.outbox_dropped, "outbox_rejected": t.outbox_rejected,
           "last_error": clean_text(t.last_error, 500), "cpu_temp_c": t.cpu_temp_c,
           "free_disk_bytes": t.free_disk_bytes, "disk_full": t.disk_full, "model": clean_text(t.model, 128) or "",
           "version": clean_text(t.version, 64) or "", "last_seq": t.last_seq, "commands_refused": t.commands_refused}
    stmt = upsert_insert(conn, device_telemetry).values(**row)
    # A retained message delivered again, or an older one arriving late, never replaces a newer one.
    stmt = stmt.on_conflict_do_update(index_elements=["device_id"], set_={k: v for k, v in row.items()
                                                                          if k != "device_id"},
                                      where=device_telemetry.c.at <= stmt.excluded.at)
    conn.execute(stmt)
    return Outcome(msg, "telemetry", device_id)


def handle_batch(conn: Connection, batch: list[Message], now: datetime, keep_payload: bool = True, *,
                 max_clock_skew_s: float | None = DEFAULT_MAX_CLOCK_SKEW_S) -> list[Outcome]:
    """Decide a batch inside the caller's transaction, outcomes in message order. Never raises for bad input.
    `max_clock_skew_s`: see `store_readings` (the worker passes ingest.max_clock_skew_s)."""
    outcomes: dict[int, Outcome] = {}
    valid: list[tuple[int, Message, Reading]] = []
    refused: list[dict[str, Any]] = []
    for i, msg in enumerate(batch):
        parsed_topic = topics.parse_device_topic(msg.topic)
        if parsed_topic is not None and parsed_topic.kind == topics.STATUS:
            outcomes[i] = store_status(conn, msg, parsed_topic.device_id, now)
            continue
        if parsed_topic is not None and parsed_topic.kind == topics.TELEMETRY:
            outcomes[i] = store_telemetry(conn, msg, parsed_topic.device_id, now)
            continue
        result = parse_reading(msg.payload, msg.topic)
        if isinstance(result, Refusal):
            refused.append(_refusal_row(msg, result.reason, result.detail, result.device_id, result.seq, now,
                                        keep_payload))
            outcomes[i] = Outcome(msg, "refused", result.device_id, result.seq, result.reason, result.detail)
        else:
            valid.append((i, msg, result))
    if refused:
        conn.execute(refusals.insert(), refused)
    if valid:
        stored = store_readings(conn, [(m, r) for _, m, r in valid], now, keep_payload,
                                max_clock_skew_s=max_clock_skew_s)
        outcomes.update({i: o for (i, _, _), o in zip(valid, stored, strict=True)})
    return [outcomes[i] for i in range(len(batch))]


def handle(conn: Connection, msg: Message, now: datetime, keep_payload: bool = True, *,
           max_clock_skew_s: float | None = DEFAULT_MAX_CLOCK_SKEW_S) -> Outcome:
    """Decide one message inside the caller's transaction. Never raises for bad input."""
    return handle_batch(conn, [msg], now, keep_payload, max_clock_skew_s=max_clock_skew_s)[0]


def bump_counters(conn: Connection, shard: str, counts: Counter[str], now: datetime) -> None:
    for name, n in sorted(counts.items()):  # sorted: two workers never lock rows in opposite order
        if not n:
            continue
        stmt = upsert_insert(conn, counters).values(name=name, shard=shard, value=n, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name", "shard"],
            set_={"value": counters.c.value + stmt.excluded.value, "updated_at": now})
        conn.execute(stmt)


def _is_telemetry(topic: str) -> bool:
    parsed = topics.parse_device_topic(topic)
    return parsed is not None and parsed.kind == topics.TELEMETRY


def count_outcomes(outcomes: list[Outcome]) -> Counter[str]:
    c: Counter[str] = Counter()
    for o in outcomes:
        if o.kind == "telemetry" or (o.kind == "ignored" and _is_telemetry(o.message.topic)):
            c["telemetry_received"] += 1
            if o.kind == "ignored":
                c["telemetry_ignored"] += 1
            continue
        if o.kind in ("status", "ignored"):
            c["status_received"] += 1
            continue
        c["received"] += 1
        if o.kind == "duplicate":
            c["duplicate"] += 1
        if o.reason == SEQ_REUSED:
            c["seq_reused"] += 1
    return c
