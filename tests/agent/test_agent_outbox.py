"""The outbox on a real SQLite file: seq allocation, the state machine, exact bytes, a full disk."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contract.payloads import Reading
from edge.transport.outbox import Outbox, OutboxFull


def draft(value: str = "00123.456", status: str = "ok", device: str = "dev-a") -> Reading:
    return Reading(device_id=device, seq=0, taken_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), value=value,
                   status=status, reason=None if status == "ok" else "test", confidence=0.9, model="m")  # type: ignore[arg-type]


def test_seq_is_monotonic_and_survives_reopen(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    seqs = [ob.add(draft()).seq for _ in range(3)]
    ob.close()
    ob = Outbox(tmp_path)
    seqs += [ob.add(draft()).seq for _ in range(2)]
    assert seqs == [1, 2, 3, 4, 5]
    assert ob.last_seq() == 5


def test_seq_is_not_reused_after_done_rows_are_pruned(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    for _ in range(3):
        s = ob.add(draft()).seq
        ob.mark_published(s)
        ob.mark_acked(s, "stored")
    ob.db.execute("DELETE FROM readings")  # as if pruned
    assert ob.add(draft()).seq == 4


def test_stored_bytes_are_the_reading_with_its_seq(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    stored = ob.add(draft("00001.000"))
    row = ob.row(stored.seq)
    assert row is not None and row.payload == stored.payload
    r = Reading.model_validate_json(row.payload)
    assert r.seq == stored.seq and r.value == "00001.000"
    assert r.to_json_bytes() == row.payload  # republishing gives the same bytes


def test_state_machine_pending_published_done(tmp_path: Path) -> None:
    clock = [1000.0]
    ob = Outbox(tmp_path, clock=lambda: clock[0])
    a, b, c = (ob.add(draft()).seq for _ in range(3))
    assert [r.seq for r in ob.next_to_publish(limit=10)] == [a, b, c]
    assert [r.seq for r in ob.next_to_publish(limit=10, exclude={a})] == [b, c]
    assert [r.seq for r in ob.next_to_publish(limit=1)] == [a]
    ob.mark_published(a)
    ob.mark_published(b)
    ob.mark_acked(b, "duplicate")
    assert ob.row(a).state == "published" and ob.row(b).state == "done"  # type: ignore[union-attr]
    # a published reading comes back only once the ack timeout has passed
    assert [r.seq for r in ob.next_to_publish(limit=10, republish_before=clock[0] - 60)] == [c]
    clock[0] += 61
    assert [r.seq for r in ob.next_to_publish(limit=10, republish_before=clock[0] - 60)] == [a, c]
    assert ob.depth() == 2
    # a late PUBACK after the bridge's ack does not bring a row back
    ob.mark_published(b)
    assert ob.row(b).state == "done"  # type: ignore[union-attr]
    assert not ob.mark_acked(999, "stored")


def test_rejected_is_done_and_counted(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    s = ob.add(draft()).seq
    ob.mark_published(s)
    assert ob.mark_acked(s, "rejected", "unknown device")
    assert ob.row(s).state == "done" and ob.rejected() == 1  # type: ignore[union-attr]
    assert ob.depth() == 0


def test_reading_state_is_committed_with_the_reading(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    assert ob.reading_state() is None
    ob.add(draft(), {"previous": "00123.456", "refusals": 0})
    ob.close()
    assert Outbox(tmp_path).reading_state() == {"previous": "00123.456", "refusals": 0}


def _fill_until_full(ob: Outbox, pages: int) -> None:
    ob.db.execute(f"PRAGMA max_page_count={pages}")


def test_disk_full_keeps_the_newest_and_drops_done_rows_first(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    big = {"pad": "x" * 1500}  # a bigger state makes every reading commit touch more pages
    done = []
    for _ in range(40):
        s = ob.add(draft(), big).seq
        ob.mark_published(s)
        ob.mark_acked(s, "stored")
        done.append(s)
    pages = int(ob.db.execute("PRAGMA page_count").fetchone()[0])
    _fill_until_full(ob, pages)
    added = 0
    while not ob.disk_full and added < 200:
        ob.add(draft(), big)
        added += 1
    assert ob.disk_full, "the page limit was never reached"
    assert ob.dropped() == 0, "acknowledged rows should have made the room"
    assert ob.count("done") < 40 and ob.count("pending") == added
    # once the acknowledged rows are gone, the oldest unacknowledged ones go (never a done row left behind)
    for _ in range(200):
        ob.add(draft(), big)
    assert ob.dropped() > 0 and ob.count("done") == 0
    assert ob.integrity_check() == "ok"


def test_disk_full_drops_oldest_pending_and_reports_it(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    for _ in range(30):
        ob.add(draft())
    pages = int(ob.db.execute("PRAGMA page_count").fetchone()[0])
    _fill_until_full(ob, pages)
    last = 0
    for _ in range(200):
        last = ob.add(draft()).seq
    assert last == 230
    assert ob.dropped() > 0 and ob.disk_full
    pending = [r.seq for r in ob.next_to_publish(limit=1000)]
    # the newest survive, contiguous up to the last one; the oldest went first
    assert pending == list(range(pending[0], 231))
    assert len(pending) + ob.dropped() == 230
    assert ob.integrity_check() == "ok"
    ob.close()
    # the file is consistent after reopening too
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_disk_full_with_nothing_to_drop_raises_outboxfull(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    pages = int(ob.db.execute("PRAGMA page_count").fetchone()[0])
    _fill_until_full(ob, pages)
    with pytest.raises(OutboxFull, match="disk full"):
        ob.add(draft(), {"pad": "y" * 20000})
    assert ob.dropped() == 1
    assert ob.integrity_check() == "ok"


def test_a_really_full_disk_keeps_the_newest_and_the_file_sound(tiny_fs: Path) -> None:
    ob = Outbox(tiny_fs)
    state = {"previous": "00123.456", "pad": "z" * 200}
    results: list[int] = []
    full = 0
    reported_full = False  # `disk_full` clears again after FULL_STREAK readings fit, so watch it throughout
    for _ in range(6000):
        try:
            results.append(ob.add(draft(), state).seq)
        except OutboxFull:
            full += 1
        reported_full = reported_full or ob.disk_full
    assert reported_full or full
    assert ob.dropped() > 0, "the disk never filled up"
    pending = [r.seq for r in ob.next_to_publish(limit=100_000)]
    assert pending[-1] == results[-1], "the newest reading must be kept"
    assert pending == sorted(pending) and pending == list(range(pending[0], pending[-1] + 1))
    assert ob.integrity_check() == "ok"
    ob.close()
    reopened = Outbox(tiny_fs)
    assert reopened.integrity_check() == "ok" and reopened.last_seq() == results[-1]
    reopened.close()
