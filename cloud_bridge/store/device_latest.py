"""Each device's newest reading and the few facts the device-state query needs about its history, kept in
`device_latest` (one row per device that has readings) by whatever stores readings, in the same
transaction (`note_readings`). The device-state query (cloud_bridge.device_health.device_rows) reads
this row instead of scanning every reading of every device, which at city scale (10 million meters, a
reading an hour) is billions of rows per fleet page, metrics scrape or sweep.

What a row holds is exactly what a full recomputation from the readings gives (`latest_from_readings`,
which the tests compare it with and `rebuild` writes):
- n: how many readings the device has;
- last_*: the newest reading, ordered by (taken_at, id): of two taken at the same instant the one stored
  later counts as newer, so a redelivery that arrives late or a new outbox epoch never makes an older
  reading the last;
- ok_id / ok_taken_at: the newest `ok` reading; suspect_at / error_at: taken_at of the newest `suspect` /
  `error` one;
- not_ok_n: how many readings after the newest `ok` one are not `ok` (all of them when none is).

Concurrency (several workers, PostgreSQL READ COMMITTED): the rows of a batch's devices are created if
missing, then locked in device order (SELECT … FOR UPDATE; on SQLite every writer holds the database
lock already), and only then read and updated. Each update is a merge of the new readings into the
locked row, so the order in which workers commit does not matter. The one case that reads readings is an
`ok` reading older than the device's newest one (it arrived out of order): the not-ok readings after it
are counted from the (device_id, taken_at) index, in a statement that runs after the lock was taken and
so sees every reading committed before it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Subquery, and_, bindparam, case, delete, func, literal, or_, select

from cloud_bridge.store.engine import upsert_insert
from cloud_bridge.store.tables import device_latest, readings

REBUILD_CHUNK = 1000
LAST_COLUMNS = ("seq", "taken_at", "stored_at", "value", "status", "reason", "model")
COLUMNS = ("device_id", "n", "last_id", *(f"last_{c}" for c in LAST_COLUMNS), "ok_id", "ok_taken_at",
           "suspect_at", "error_at", "not_ok_n")


def _key(taken_at: datetime, reading_id: int) -> tuple[datetime, int]:
    return (taken_at, reading_id)


def _not_ok_after(conn: Connection, device_id: str, taken_at: datetime, reading_id: int) -> int:
    """Not-ok readings of the device after (taken_at, reading_id): a range of the (device_id, taken_at) index."""
    return int(conn.execute(select(func.count()).where(and_(
        readings.c.device_id == device_id, readings.c.taken_at >= taken_at, readings.c.status != "ok",
        or_(readings.c.taken_at > taken_at, readings.c.id > reading_id)))).scalar_one())


def _merge(conn: Connection, cur: Mapping[str, Any], new: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The device's row `cur` with the readings `new` (already inserted, each with its `id`) merged in."""
    row = dict(cur)
    new = sorted(new, key=lambda r: _key(r["taken_at"], r["id"]))
    last_key = None if cur["last_id"] is None else _key(cur["last_taken_at"], cur["last_id"])
    ok_key = None if cur["ok_id"] is None else _key(cur["ok_taken_at"], cur["ok_id"])
    newest = new[-1]
    if last_key is None or _key(newest["taken_at"], newest["id"]) > last_key:
        row["last_id"] = newest["id"]
        row.update({f"last_{c}": newest[c] for c in LAST_COLUMNS})
    oks = [r for r in new if r["status"] == "ok"]
    if oks and (ok_key is None or _key(oks[-1]["taken_at"], oks[-1]["id"]) > ok_key):
        ok = oks[-1]
        ok_key = _key(ok["taken_at"], ok["id"])
        row["ok_id"], row["ok_taken_at"] = ok["id"], ok["taken_at"]
        if last_key is None or last_key < ok_key:  # nothing stored before is newer: count this batch's only
            row["not_ok_n"] = sum(1 for r in new if r["status"] != "ok" and _key(r["taken_at"], r["id"]) > ok_key)
        else:  # an ok reading that arrived out of order: count what follows it
            row["not_ok_n"] = _not_ok_after(conn, cur["device_id"], ok["taken_at"], ok["id"])
    else:
        row["not_ok_n"] = int(cur["not_ok_n"]) + sum(
            1 for r in new if r["status"] != "ok" and (ok_key is None or _key(r["taken_at"], r["id"]) > ok_key))
    for status, col in (("suspect", "suspect_at"), ("error", "error_at")):
        times = [r["taken_at"] for r in new if r["status"] == status]
        if cur[col] is not None:
            times.append(cur[col])
        row[col] = max(times) if times else None
    row["n"] = int(cur["n"]) + len(new)
    return row


def note_readings(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Merge readings just inserted in this transaction into their devices' rows. Each row needs `id`,
    `device_id` and the reading's `seq`, `taken_at`, `stored_at`, `value`, `status`, `reason`, `model`;
    readings without a device (a resident's photo) are skipped. Call it once per batch, after the insert."""
    by_device: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["device_id"] is not None:
            by_device[r["device_id"]].append(r)
    if not by_device:
        return
    ids = sorted(by_device)  # one lock order for every worker
    current = _lock(conn, ids)
    updates = []
    for d in ids:
        row = _merge(conn, current[d], by_device[d])
        row["b_device_id"] = row.pop("device_id")
        updates.append(row)
    conn.execute(device_latest.update().where(device_latest.c.device_id == bindparam("b_device_id")), updates)


def latest_from_readings(device_ids: Iterable[str] | None = None) -> Subquery:
    """The rows of `device_latest` recomputed from every reading (only `device_ids` when given): what the
    table must equal. A scan of the devices' readings: for checks, `rebuild` and the bench's baseline."""
    wanted = None if device_ids is None else sorted(set(device_ids))

    def only(col: Any) -> Any:
        return col.is_not(None) if wanted is None else col.in_(wanted)

    def newest(status: str) -> Any:
        return func.max(case((readings.c.status == status, readings.c.taken_at)))

    # One pass over each device's readings (the (device_id, taken_at) index): how many, the newest taken,
    # the newest ok / suspect / error.
    per_device = (select(readings.c.device_id, func.count().label("n"),
                         func.max(readings.c.taken_at).label("last_at"), newest("ok").label("ok_at"),
                         newest("suspect").label("suspect_at"), newest("error").label("error_at"))
                  .where(only(readings.c.device_id)).group_by(readings.c.device_id).cte("per_device"))
    # Of two readings taken at the same instant the one stored later (greater id) is the newer.
    r = readings.alias("r")
    at_newest = (select(func.max(r.c.id)).where(and_(r.c.device_id == per_device.c.device_id,
                                                     r.c.taken_at == per_device.c.last_at)).scalar_subquery())
    at_newest_ok = (select(func.max(r.c.id)).where(and_(r.c.device_id == per_device.c.device_id,
                                                        r.c.taken_at == per_device.c.ok_at, r.c.status == "ok"))
                    .scalar_subquery())
    newest_ids = select(per_device.c.device_id, at_newest.label("last_id"), at_newest_ok.label("ok_id")) \
        .cte("newest_ids")
    # Not ok since the newest ok one: the readings from that one on (a range of the index). A device with
    # no ok reading at all has every one of its readings not ok.
    since_ok = (select(func.count()).where(and_(
        r.c.device_id == per_device.c.device_id, r.c.taken_at >= per_device.c.ok_at, r.c.status != "ok",
        or_(r.c.taken_at > per_device.c.ok_at, r.c.id > newest_ids.c.ok_id))).scalar_subquery())
    not_ok_n = case((per_device.c.ok_at.is_(None), per_device.c.n), else_=since_ok)
    last = readings.alias("last")
    return (select(per_device.c.device_id, per_device.c.n, newest_ids.c.last_id,
                   *(last.c[c].label(f"last_{c}") for c in LAST_COLUMNS),
                   newest_ids.c.ok_id, per_device.c.ok_at.label("ok_taken_at"), per_device.c.suspect_at,
                   per_device.c.error_at, func.coalesce(not_ok_n, literal(0)).label("not_ok_n"))
            .select_from(per_device)
            .join(newest_ids, newest_ids.c.device_id == per_device.c.device_id)
            .join(last, last.c.id == newest_ids.c.last_id)
            .subquery("latest_from_readings"))


def _lock(conn: Connection, ids: list[str]) -> dict[str, Any]:
    """Create the devices' rows where missing, lock them in device order, return them by device."""
    conn.execute(upsert_insert(conn, device_latest).on_conflict_do_nothing(index_elements=["device_id"]),
                 [{"device_id": d, "n": 0, "not_ok_n": 0} for d in ids])
    return {r["device_id"]: r for r in conn.execute(
        select(device_latest).where(device_latest.c.device_id.in_(ids)).order_by(device_latest.c.device_id)
        .with_for_update()).mappings()}


def rebuild(conn: Connection, device_ids: Iterable[str]) -> int:
    """Recompute the rows of `device_ids` from their readings, in the caller's transaction: for readings
    written by something other than the bridge's store code (a restore, an older worker still running
    during `db upgrade`, a test). The rows are locked first, like `note_readings` does, so workers storing
    readings meanwhile wait and then merge into the rebuilt row. Returns how many devices have readings."""
    everyone = sorted(set(device_ids))
    rows = 0
    for i in range(0, len(everyone), REBUILD_CHUNK):  # bound parameters stay under the drivers' limits
        ids = everyone[i:i + REBUILD_CHUNK]
        _lock(conn, ids)
        conn.execute(delete(device_latest).where(device_latest.c.device_id.in_(ids)))
        src = latest_from_readings(ids)
        conn.execute(device_latest.insert().from_select(list(COLUMNS), select(*(src.c[c] for c in COLUMNS))))
        # (the driver's rowcount of an INSERT … SELECT with a CTE is -1 on SQLite)
        rows += int(conn.execute(select(func.count()).where(device_latest.c.device_id.in_(ids))).scalar_one())
    return rows
