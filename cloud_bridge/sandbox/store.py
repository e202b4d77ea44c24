"""The sandbox's own records: what it accepted, the answer stored under each idempotency key, and a
log of every request, in one SQLite file (stdlib sqlite3; the sandbox is one process)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from cloud_bridge.store.engine import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id TEXT NOT NULL UNIQUE,
    payer_code TEXT NOT NULL,
    meter_serial TEXT NOT NULL,
    period TEXT NOT NULL,
    value TEXT NOT NULL,
    taken_at TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    accepted_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_pair ON readings (payer_code, meter_serial, period);
CREATE TABLE IF NOT EXISTS credits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    credit_id TEXT NOT NULL UNIQUE,
    payer_code TEXT NOT NULL,
    period TEXT NOT NULL,
    points INTEGER NOT NULL,
    reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credits_payer ON credits (payer_code);
CREATE TABLE IF NOT EXISTS request_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    idempotency_key TEXT,
    status INTEGER NOT NULL,
    code TEXT,
    replayed INTEGER NOT NULL DEFAULT 0
);
"""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class StoredAnswer:
    fingerprint: str
    status: int
    body: dict[str, Any]


class SandboxStore:
    """Thread-safe (one lock) access to the sandbox's SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            private_file(self.path)  # it keeps payer codes
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- idempotency -------------------------------------------------------------------------------
    def answer_for(self, scope: str, key: str) -> StoredAnswer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint, status, body FROM idempotency WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
        if row is None:
            return None
        return StoredAnswer(row["fingerprint"], int(row["status"]), json.loads(row["body"]))

    def _remember(self, scope: str, key: str, fingerprint: str, status: int, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO idempotency (scope, key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (scope, key, fingerprint, status, json.dumps(body), _now()),
        )

    def remember_refusal(self, scope: str, key: str, fingerprint: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._remember(scope, key, fingerprint, 422, body)

    # -- readings ----------------------------------------------------------------------------------
    def last_accepted_value(self, payer_code: str, meter_serial: str, period: str) -> Decimal | None:
        """The value accepted last for this payer and meter in this period or an earlier one."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM readings WHERE payer_code = ? AND meter_serial = ? AND period <= ? "
                "ORDER BY period DESC, seq DESC LIMIT 1",
                (payer_code, meter_serial, period),
            ).fetchone()
        return None if row is None else Decimal(row["value"])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed on success, rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _list(self, sql: str, payer_code: str | None) -> list[dict[str, Any]]:
        args: tuple[Any, ...] = ()
        if payer_code:
            sql += " WHERE payer_code = ?"
            args = (payer_code,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [dict(r) for r in rows]

    def accept_reading(self, key: str, fingerprint: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store the reading and the answer to its key in one transaction; returns the answer."""
        with self._write() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM readings").fetchone()[0]
            submission_id = f"sub_{seq:08d}"
            db.execute(
                "INSERT INTO readings (submission_id, payer_code, meter_serial, period, value, taken_at, "
                "idempotency_key, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (submission_id, body["payer_code"], body["meter_serial"], body["period"], body["value"],
                 body["taken_at"], key, _now()),
            )
            answer = {"submission_id": submission_id}
            self._remember("readings", key, fingerprint, 201, answer)
        return answer

    def readings(self, payer_code: str | None = None) -> list[dict[str, Any]]:
        return self._list("SELECT submission_id, payer_code, meter_serial, period, value, taken_at, "
                          "idempotency_key FROM readings", payer_code)

    # -- credits -----------------------------------------------------------------------------------
    def balance(self, payer_code: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(points), 0) FROM credits WHERE payer_code = ?", (payer_code,)).fetchone()
        return int(row[0])

    def add_credit(self, key: str, fingerprint: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._write() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM credits").fetchone()[0]
            credit_id = f"cr_{seq:08d}"
            db.execute(
                "INSERT INTO credits (credit_id, payer_code, period, points, reason, idempotency_key, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (credit_id, body["payer_code"], body["period"], body["points"], body["reason"], key, _now()),
            )
            answer = {"credit_id": credit_id, "balance": self.balance(body["payer_code"])}
            self._remember("credits", key, fingerprint, 201, answer)
        return answer

    def credits(self, payer_code: str | None = None) -> list[dict[str, Any]]:
        return self._list("SELECT credit_id, payer_code, period, points, reason, idempotency_key FROM credits",
                          payer_code)

    # -- request log -------------------------------------------------------------------------------
    def log_request(self, method: str, path: str, key: str | None, status: int, code: str | None,
                    replayed: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO request_log (at, method, path, idempotency_key, status, code, replayed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), method, path, key, status, code, int(replayed)),
            )

    def requests(self, key: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT at, method, path, idempotency_key, status, code, replayed FROM request_log"
        args: tuple[Any, ...] = ()
        if key:
            sql += " WHERE idempotency_key = ?"
            args = (key,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [{**dict(r), "replayed": bool(r["replayed"])} for r in rows]
