"""The durable outbox: order, acknowledgement, reopening, and the policy when full."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.outbox import Kind, Outbox, OutboxClosed


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


@pytest.fixture
def box(path: Path) -> Iterator[Outbox]:
    with Outbox(path) as outbox:
        yield outbox


def topics(outbox: Outbox) -> list[str]:
    return [e.topic for e in outbox.peek(10_000)]


def test_peek_is_oldest_first_and_removes_nothing(box: Outbox) -> None:
    ids = [box.put(f"t/{i}", f"p{i}".encode(), retain=i == 1, kind=Kind.STATE) for i in range(5)]
    assert ids == sorted(ids)
    first = box.peek(3)
    assert [e.id for e in first] == ids[:3]
    assert [e.payload for e in first] == [b"p0", b"p1", b"p2"]
    assert [e.retain for e in first] == [False, True, False]
    assert box.peek(3) == first  # peeking twice gives the same batch
    assert len(box) == 5
    assert [e.id for e in box.peek(10, after=ids[2])] == ids[3:]


def test_ack_deletes_only_what_was_acknowledged(box: Outbox) -> None:
    ids = [box.put("t", bytes([i]) * 10) for i in range(6)]
    assert box.size_bytes == 60
    assert box.ack([ids[0], ids[2]]) == 2
    assert [e.id for e in box.peek(10)] == [ids[1], *ids[3:]]
    assert len(box) == 4
    assert box.size_bytes == 40
    assert box.ack([ids[0], 10_000]) == 0  # already acked or never existed: ignored
    assert box.ack([]) == 0
    assert len(box) == 4


def test_ack_of_many_ids_at_once(box: Outbox) -> None:
    ids = [box.put("t", b"x") for _ in range(1_200)]
    assert box.ack(ids[:1_100]) == 1_100
    assert [e.id for e in box.peek(1_000)] == ids[1_100:]


def test_entries_survive_reopening_and_ids_keep_growing(path: Path) -> None:
    with Outbox(path) as box:
        ids = [box.put(f"t/{i}", b"p", kind=Kind.HEARTBEAT) for i in range(4)]
        box.ack(ids[-2:])  # the newest ids are gone: AUTOINCREMENT must not hand them out again
    with Outbox(path) as box:
        assert len(box) == 2
        assert box.size_bytes == 2
        assert [e.id for e in box.peek(10)] == ids[:2]
        assert [e.kind for e in box.peek(10)] == ["heartbeat", "heartbeat"]
        newer = box.put("t/new", b"p")
        assert newer > ids[-1]


def test_file_uses_wal_and_full_sync(box: Outbox, path: Path) -> None:
    box.put("t", b"p")
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1  # committed, visible
    db = box._conn()
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_full_drops_oldest_heartbeats_first(path: Path) -> None:
    with Outbox(path, max_messages=4) as box:
        box.put("hb/1", b"x", kind=Kind.HEARTBEAT)
        box.put("state/1", b"x", kind=Kind.STATE)
        box.put("hb/2", b"x", kind=Kind.HEARTBEAT)
        box.put("alarm/1", b"x", kind=Kind.ALARM)
        box.put("state/2", b"x", kind=Kind.STATE)  # over: hb/1 goes
        assert topics(box) == ["state/1", "hb/2", "alarm/1", "state/2"]
        box.put("snap/1", b"x", kind=Kind.SNAPSHOT)  # over: hb/2 goes
        assert topics(box) == ["state/1", "alarm/1", "state/2", "snap/1"]
        box.put("state/3", b"x", kind=Kind.STATE)  # no heartbeat left: the oldest other goes
        assert topics(box) == ["alarm/1", "state/2", "snap/1", "state/3"]
        assert box.dropped() == {"heartbeat": 2, "state": 1}
        assert len(box) == 4


def test_alarms_and_status_are_never_dropped(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(path, max_messages=3) as box:
        box.put("alarm/1", b"x", kind=Kind.ALARM)
        box.put("status", b"x", kind=Kind.STATUS)
        box.put("hb/1", b"x", kind=Kind.HEARTBEAT)
        box.put("alarm/2", b"x", kind=Kind.ALARM)  # the heartbeat goes
        assert topics(box) == ["alarm/1", "status", "alarm/2"]
        assert box.overflows == 0
        box.put("alarm/3", b"x", kind=Kind.ALARM)  # nothing droppable: grow, and say so
        box.put("alarm/4", b"x", kind=Kind.ALARM)
        assert topics(box) == ["alarm/1", "status", "alarm/2", "alarm/3", "alarm/4"]
        assert len(box) == 5
        assert box.overflows == 2
        assert box.dropped() == {"heartbeat": 1}
        assert any(r.levelname == "ERROR" and "OUTBOX FULL" in r.getMessage() for r in caplog.records)
        box.put("hb/2", b"x", kind=Kind.HEARTBEAT)  # still over the bound: a new heartbeat is dropped itself
        assert "hb/2" not in topics(box)
        assert box.dropped() == {"heartbeat": 2}


def test_byte_bound_drops_as_many_as_needed(path: Path) -> None:
    with Outbox(path, max_bytes=1_000) as box:
        for i in range(4):
            box.put(f"hb/{i}", b"h" * 200, kind=Kind.HEARTBEAT)
        box.put("state/1", b"s" * 100, kind=Kind.STATE)
        assert box.size_bytes == 900
        box.put("snap/1", b"j" * 500, kind=Kind.SNAPSHOT)  # 1400 bytes: 2 heartbeats must go
        assert topics(box) == ["hb/2", "hb/3", "state/1", "snap/1"]
        assert box.size_bytes == 1_000
        assert box.dropped() == {"heartbeat": 2}


def test_drop_counts_survive_reopening(path: Path) -> None:
    with Outbox(path, max_messages=1) as box:
        box.put("hb/1", b"x", kind=Kind.HEARTBEAT)
        box.put("hb/2", b"x", kind=Kind.HEARTBEAT)
    with Outbox(path, max_messages=1) as box:
        assert box.dropped() == {"heartbeat": 1}
        assert topics(box) == ["hb/2"]


def test_unknown_kind_is_refused(box: Outbox) -> None:
    with pytest.raises(ValueError, match="gossip"):
        box.put("t", b"x", kind="gossip")
    assert len(box) == 0


def test_closed_outbox_refuses_use(path: Path) -> None:
    box = Outbox(path)
    with pytest.raises(OutboxClosed):
        box.put("t", b"x")
    box.open()
    box.close()
    with pytest.raises(OutboxClosed):
        box.peek(1)


def test_concurrent_puts_and_acks_keep_the_books_straight(path: Path) -> None:
    """Several producer threads and one acknowledging thread on one outbox."""
    with Outbox(path, max_messages=1_000_000) as box:
        stop = threading.Event()
        acked: list[int] = []

        def producer(n: int) -> None:
            for i in range(200):
                box.put(f"p{n}/{i}", b"x" * 3, kind=Kind.STATE)

        def acker() -> None:
            while not stop.is_set() or len(box):
                batch = box.peek(50)
                box.ack(e.id for e in batch)
                acked.extend(e.id for e in batch)

        threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
        consumer = threading.Thread(target=acker)
        consumer.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        consumer.join(30)
        assert len(box) == 0
        assert box.size_bytes == 0
        assert len(acked) == len(set(acked)) == 800
        assert acked == sorted(acked)  # the consumer saw them in id order
