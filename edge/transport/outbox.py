"""The durable outbox: every reading is committed to SQLite before it is published.

A reading moves `pending` → `published` (the broker's PUBACK) → `done` (the bridge's ack naming its seq).
`seq` is allocated in the same transaction that inserts the row, so a power cut can never mint a seq
twice or lose one that was handed out. Each outbox file has a random `epoch`, sent with every reading:
a new SD card or a deleted outbox starts seq at 1 again, but under a new epoch, so the bridge never
takes a new reading for an old one. If the bridge still says `seq_reused` (an outbox restored from a
backup), the outbox starts a new epoch and sends each reading the bridge refused so again under it.
The reading rules' state (previous accepted value, …) lives in the same database and
is written in the same transaction as the reading it produced.

When the disk is full the outbox makes room by dropping the oldest rows it can (done ones first, then
the oldest pending ones, counted as dropped), so the newest readings survive. Deleting needs room too
(in WAL mode a DELETE appends to the WAL), so the outbox keeps a reserve file next to the database
and small WAL checkpoints: on a full disk it gives the reserve up, checkpoints, deletes, and takes the
reserve back once there is room again. SQLite's own rollback keeps the file consistent; nothing here
writes outside a transaction.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from contract.payloads import Reading

log = logging.getLogger(__name__)

DB_NAME = "outbox.sqlite3"
RESERVE_NAME = "outbox.reserve"
RESERVE_BYTES = 64 * 1024  # room to delete and checkpoint on a full disk; given back when full
WAL_AUTOCHECKPOINT_PAGES = 16  # keep the WAL small: on a full disk a large WAL cannot be checkpointed
LOW_WATER_BYTES = 192 * 1024  # below this much free space, inserts reuse pages freed by dropping old rows
FREE_PAGES_PER_INSERT = 4  # a reading, its index entry, the meta rows
SCHEMA_VERSION = 1
FULL_STREAK = 10  # `disk_full` stays on until this many readings in a row fit without making room
KEEP_DONE = 500  # done rows kept for `meter-edge` debugging; older ones are pruned

State = Literal["pending", "published", "done"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq          INTEGER PRIMARY KEY,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'published', 'done')),
    payload      BLOB    NOT NULL,
    created_at   REAL    NOT NULL,
    published_at REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    ack          TEXT,
    ack_reason   TEXT
);
CREATE INDEX IF NOT EXISTS readings_state_seq ON readings (state, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _new_epoch() -> int:
    """Random, so two outboxes of one device never share one (no clock needed: a Pi may not have one).
    Below 2^53, so it survives any JSON reader as an exact integer."""
    return secrets.randbelow(2**53 - 1) + 1


class OutboxDamaged(Exception):
    """The outbox file is not a sound SQLite database; the message says what to do."""


class OutboxFull(Exception):
    """The disk is full and there was nothing left to drop: the reading could not be stored."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


@dataclass(frozen=True)
class Row:
    seq: int
    state: State
    payload: bytes
    attempts: int
    published_at: float | None


@dataclass(frozen=True)
class Stored:
    """What `add` committed; `dropped` rows were sacrificed to make room on a full disk."""

    seq: int
    payload: bytes
    dropped: int = 0


class Outbox:
    """One SQLite file in `state_dir`; not thread-safe by design (the agent's main loop owns it)."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time,
                 reserve_bytes: int = RESERVE_BYTES, low_water_bytes: int = LOW_WATER_BYTES) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_NAME
        self.reserve = state_dir / RESERVE_NAME
        self.reserve_bytes = reserve_bytes
        self.low_water_bytes = low_water_bytes
        self.clock = clock
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            with self._tx():
                for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    self.db.execute(stmt)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', '1')")
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (str(_new_epoch()),))
            self.epoch = int(self._meta("epoch") or 0)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if is_disk_full(exc):
                raise
            raise OutboxDamaged(
                f"the outbox {self.path} is damaged ({exc}). Stop the agent, move the file away (e.g. "
                f"`mv {self.path} {self.path}.damaged`; readings in it that the bridge did not acknowledge are "
                "lost unless recovered with `sqlite3 FILE .recover`), and start again: a new outbox begins a "
                "new epoch, so the bridge takes its readings as new ones") from None
        self._full_streak = 0
        self.unstored = 0  # readings lost because not even dropping made room
        self._take_reserve()

    # -- room on a full disk --------------------------------------------------------------------
    def _take_reserve(self) -> bool:
        """(Re)create the reserve file when there is clearly room for it; True if it exists."""
        if self.reserve_bytes <= 0 or self.reserve.exists():
            return self.reserve.exists()
        try:
            st = os.statvfs(self.reserve.parent)
            if st.f_bavail * st.f_frsize < 4 * self.reserve_bytes:
                return False
            with self.reserve.open("wb") as f:
                f.write(b"\0" * self.reserve_bytes)  # real blocks (not sparse): what it frees is real
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            with suppress(OSError):
                self.reserve.unlink()
            return False

    def _release_reserve(self) -> None:
        if self.reserve.exists():
            with suppress(OSError):
                self.reserve.unlink()
                log.warning("disk full: gave up the %d-byte reserve next to %s to make room", self.reserve_bytes,
                            self.path)

    def _checkpoint(self) -> None:
        """Move the WAL into the database and truncate it: frees what the WAL held."""
        with suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error. `durable=False` (state changes that a
        republish would redo anyway) skips the fsync of FULL."""
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def _meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def _bump(self, key: str, n: int) -> None:
        self._set_meta(key, str(int(self._meta(key, "0") or 0) + n))

    # -- writing a new reading ------------------------------------------------------------------
    def add(self, draft: Reading, reading_state: dict[str, Any] | None = None) -> Stored:
        """Give `draft` the next seq, store its exact bytes (and the reading rules' new state) durably.

        On a full disk the oldest rows are dropped until it fits; raises OutboxFull when nothing is
        left to drop (the reading is then lost and counted as dropped).
        """
        dropped = self._keep_room()
        needed_room = dropped > 0
        while True:
            try:
                stored = self._insert(draft, reading_state)
            except sqlite3.OperationalError as exc:
                if not is_disk_full(exc):
                    raise
                needed_room = True
                freed, lost = self._make_room()
                if freed == 0:
                    self._full_streak = FULL_STREAK
                    self.unstored += 1
                    raise OutboxFull(
                        f"disk full: cannot store a new reading in {self.path} and nothing is left to drop; "
                        "free space on that file system") from exc
                dropped += lost
                continue
            if dropped:
                log.error("disk full: dropped the %d oldest unacknowledged readings to store seq %d",
                          dropped, stored.seq)
            elif needed_room:
                log.warning("disk full: pruned acknowledged readings to store seq %d", stored.seq)
            self._full_streak = FULL_STREAK if needed_room else max(0, self._full_streak - 1)
            if not self.reserve.exists() and self._take_reserve():
                log.info("room again: the reserve next to %s is back", self.path)
            return Stored(stored.seq, stored.payload, dropped)

    def _insert(self, draft: Reading, reading_state: dict[str, Any] | None) -> Stored:
        with self._tx(durable=True):
            seq = int(self._meta("next_seq", "1") or 1)
            payload = draft.model_copy(update={"seq": seq, "epoch": self.epoch}).to_json_bytes()
            self.db.execute(
                "INSERT INTO readings (seq, state, payload, created_at) VALUES (?, 'pending', ?, ?)",
                (seq, payload, self.clock()))
            self._set_meta("next_seq", str(seq + 1))
            if reading_state is not None:
                self._set_meta("reading_state", json.dumps(reading_state, sort_keys=True))
        return Stored(seq, payload)

    def _nearly_full(self) -> bool:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        # On a very small file system a quarter of it is enough headroom (the WAL stays ~16 pages).
        return st.f_bavail * st.f_frsize < min(self.low_water_bytes, st.f_blocks * st.f_frsize // 4)

    def _keep_room(self) -> int:
        """On a nearly full disk, make free pages inside the database before an insert (deleting the
        oldest rows), so the insert reuses them and neither the file nor the WAL has to grow: waiting for
        SQLITE_FULL is too late, when even a DELETE cannot be written. Returns unacknowledged rows lost."""
        lost_total = 0
        while self._nearly_full() and self._free_pages() < FREE_PAGES_PER_INSERT:
            try:
                freed, lost = self._delete_oldest()
            except sqlite3.OperationalError as exc:
                if not is_disk_full(exc):
                    raise
                break  # the fallback in `add` (reserve, checkpoint) takes over
            if freed == 0:
                break
            lost_total += lost
        return lost_total

    def _free_pages(self) -> int:
        return int(self.db.execute("PRAGMA freelist_count").fetchone()[0])

    def _delete_oldest(self) -> tuple[int, int]:
        """Delete a batch of the oldest done rows, else the oldest unacknowledged one.
        Returns (rows deleted, unacknowledged readings lost)."""
        with self._tx(durable=True):
            done = self.db.execute(
                "DELETE FROM readings WHERE seq IN "
                "(SELECT seq FROM readings WHERE state = 'done' ORDER BY seq LIMIT 32)").rowcount
            if done:
                return done, 0
            lost = self.db.execute(
                "DELETE FROM readings WHERE seq = "
                "(SELECT seq FROM readings WHERE state != 'done' ORDER BY seq LIMIT 1)").rowcount
            if lost:
                self._bump("dropped", lost)
            return lost, lost

    def _make_room(self) -> tuple[int, int]:
        """The insert failed on a full disk: give up the reserve, checkpoint, delete the oldest rows.
        Returns (rows deleted, unacknowledged readings lost)."""
        self._release_reserve()
        self._checkpoint()
        try:
            return self._delete_oldest()
        except sqlite3.OperationalError as exc:
            self._checkpoint()
            if is_disk_full(exc):
                log.error("disk full: cannot even delete rows in %s", self.path)
                return 0, 0
            raise

    # -- the state machine ----------------------------------------------------------------------
    def next_to_publish(self, *, limit: int, exclude: set[int] | frozenset[int] = frozenset(),
                        republish_before: float | None = None) -> list[Row]:
        """Oldest first: pending rows, and published rows the bridge has not acked since
        `republish_before` (a clock value); `exclude` the seqs already in flight."""
        if limit <= 0:
            return []
        marks = ",".join("?" * len(exclude))
        not_in = f"AND seq NOT IN ({marks})" if exclude else ""
        cutoff = republish_before if republish_before is not None else float("-inf")
        rows = self.db.execute(
            "SELECT seq, state, payload, attempts, published_at FROM readings "
            f"WHERE (state = 'pending' OR (state = 'published' AND published_at < ?)) {not_in} "
            "ORDER BY seq LIMIT ?",
            (cutoff, *sorted(exclude), limit),
        ).fetchall()
        return [Row(int(s), st, bytes(p), int(a), pa) for s, st, p, a, pa in rows]

    def oldest_unacked_published_at(self) -> float | None:
        row = self.db.execute("SELECT min(published_at) FROM readings WHERE state = 'published'").fetchone()
        return None if row[0] is None else float(row[0])

    def mark_attempt(self, seq: int) -> None:
        with self._tx(durable=False):
            self.db.execute("UPDATE readings SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def requeue_unacked(self) -> int:
        """On start: what the broker took but the bridge never acked is published again (same bytes)."""
        with self._tx(durable=False):
            return self.db.execute("UPDATE readings SET state = 'pending' WHERE state = 'published'").rowcount

    def mark_published(self, seq: int) -> bool:
        """The broker PUBACKed `seq`. A row already done (the bridge's ack came first) stays done."""
        with self._tx(durable=False):
            cur = self.db.execute(
                "UPDATE readings SET state = 'published', published_at = ?, attempts = attempts + 1 "
                "WHERE seq = ? AND state != 'done'",
                (self.clock(), seq))
        return cur.rowcount > 0

    def mark_acked(self, seq: int, ack: str, reason: str | None = None, epoch: int | None = None) -> bool:
        """The bridge acked `seq` (stored, duplicate or rejected): done. False for an unknown seq, or an ack
        for another epoch (an answer to what this outbox sent before it started a new one)."""
        with self._tx(durable=False):
            if epoch is not None and epoch != self._row_epoch(seq):
                return False
            cur = self.db.execute(
                "UPDATE readings SET state = 'done', ack = ?, ack_reason = ? WHERE seq = ? AND state != 'done'",
                (ack, reason, seq))
            if cur.rowcount and ack == "rejected":
                self._bump("rejected", 1)
            if cur.rowcount:
                self.db.execute(
                    "DELETE FROM readings WHERE state = 'done' AND seq <= "
                    "(SELECT seq FROM readings WHERE state = 'done' ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (KEEP_DONE,))
        return cur.rowcount > 0

    def _row_epoch(self, seq: int) -> int | None:
        row = self.db.execute("SELECT payload FROM readings WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        epoch = json.loads(bytes(row[0])).get("epoch")
        return epoch if isinstance(epoch, int) else 0

    def resend_reused(self, seq: int, epoch: int | None) -> bool:
        """The bridge already holds (`epoch`, `seq`) with other content (this outbox was restored from a
        backup): the first time, take a new epoch for everything from now on; put this one reading back in
        the queue under the current epoch (same seq: no other reading of that epoch has it). False when
        the answer is not about a row we hold."""
        with self._tx(durable=True):
            row_epoch = self._row_epoch(seq)
            if row_epoch is None or (epoch is not None and epoch != row_epoch):
                return False
            if row_epoch == self.epoch:
                new = _new_epoch()
                log.warning("the bridge already has seq %d of epoch %d with other content (outbox restored from "
                            "a backup?): new readings go out under epoch %d", seq, self.epoch, new)
                self._set_meta("epoch", str(new))
                self.epoch = new
            payload = self.db.execute("SELECT payload FROM readings WHERE seq = ?", (seq,)).fetchone()[0]
            doc = json.loads(bytes(payload))
            doc["epoch"] = self.epoch
            again = Reading.model_validate(doc).to_json_bytes()
            self.db.execute("UPDATE readings SET payload = ?, state = 'pending', ack = NULL, ack_reason = NULL "
                            "WHERE seq = ?", (again, seq))
        return True

    # -- reading-rule state ---------------------------------------------------------------------
    def reading_state(self) -> dict[str, Any] | None:
        raw = self._meta("reading_state")
        if raw is None:
            return None
        try:
            state = json.loads(raw)
        except ValueError as exc:
            log.error("the stored reading state in %s is not JSON (%s); starting without one", self.path, exc)
            return None
        return state if isinstance(state, dict) else None

    def set_reading_state(self, state: dict[str, Any]) -> None:
        with self._tx(durable=True):
            self._set_meta("reading_state", json.dumps(state, sort_keys=True))

    # -- other state kept with the readings -----------------------------------------------------
    def get_json(self, key: str) -> Any:
        """A JSON value the agent keeps beside the readings (None when never set)."""
        raw = self._meta(f"json:{key}")
        return None if raw is None else json.loads(raw)

    def set_json(self, key: str, value: Any) -> None:
        with self._tx(durable=True):
            self._set_meta(f"json:{key}", json.dumps(value, sort_keys=True))

    def payloads_after(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(seq, payload) of the readings still kept with a seq above `seq`, oldest first."""
        for s, p in self.db.execute("SELECT seq, payload FROM readings WHERE seq > ? ORDER BY seq", (seq,)).fetchall():
            yield int(s), bytes(p)

    # -- numbers for telemetry ------------------------------------------------------------------
    @property
    def disk_full(self) -> bool:
        return self._full_streak > 0

    def depth(self) -> int:
        """Readings the bridge has not acknowledged yet (pending + published)."""
        return int(self.db.execute("SELECT count(*) FROM readings WHERE state != 'done'").fetchone()[0])

    def count(self, state: State) -> int:
        return int(self.db.execute("SELECT count(*) FROM readings WHERE state = ?", (state,)).fetchone()[0])

    def last_seq(self) -> int | None:
        n = int(self._meta("next_seq", "1") or 1) - 1
        return n if n > 0 else None

    def dropped(self) -> int:
        return int(self._meta("dropped", "0") or 0) + self.unstored

    def rejected(self) -> int:
        return int(self._meta("rejected", "0") or 0)

    def row(self, seq: int) -> Row | None:
        r = self.db.execute(
            "SELECT seq, state, payload, attempts, published_at FROM readings WHERE seq = ?", (seq,)).fetchone()
        return None if r is None else Row(int(r[0]), r[1], bytes(r[2]), int(r[3]), r[4])

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.db.close()
