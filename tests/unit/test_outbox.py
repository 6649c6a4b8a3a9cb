"""The durable outbox: order, send order (alarms first), acknowledgement, reopening, migration,
and the policy when full."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent import outbox as outbox_module
from edge_agent.outbox import SCHEMA_VERSION, Kind, Outbox, OutboxClosed


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


@pytest.fixture
def box(path: Path) -> Iterator[Outbox]:
    with Outbox(path) as outbox:
        yield outbox


def topics(outbox: Outbox) -> list[str]:
    return [e.topic for e in outbox.peek(10_000)]


def send_order(outbox: Outbox) -> list[str]:
    return [e.topic for e in outbox.peek_priority(10_000)]


def reading(box: Outbox, device: str, n: int, kind: Kind = Kind.STATE) -> int:
    """A smoke or exit reading of ``device`` (its topic names it and its number)."""
    return box.put(f"{device}/{n}", b"r", kind=kind, state_of=device)


def drain(box: Outbox, window: int, between: Callable[[int], None] = lambda _sent: None) -> list[str]:
    """What the publisher does: keep ``window`` entries in flight, peeked in send order without
    the ones in flight, the oldest in flight acknowledged first; ``between(n)`` runs before every
    peek with the number sent so far (puts while draining). Returns the topics in sending order."""
    sent: list[str] = []
    in_flight: list[int] = []
    while True:
        between(len(sent))
        for entry in box.peek_priority(window - len(in_flight), skip=in_flight):
            sent.append(entry.topic)
            in_flight.append(entry.id)
        if not in_flight:
            return sent
        box.ack([in_flight.pop(0)])


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


# --------------------------------------------------------------------------- send order


def test_send_order_current_state_alarms_first_then_safety_snapshots_heartbeats(box: Outbox) -> None:
    box.put("hb/1", b"x", kind=Kind.HEARTBEAT)
    reading(box, "smoke-1", 0)
    reading(box, "exit-1", 0)
    box.put("hb/2", b"x", kind=Kind.HEARTBEAT)
    box.put("snap/1", b"x", kind=Kind.SNAPSHOT)
    box.put("cam-1/frozen", b"x", kind=Kind.STATE)  # a camera's stream fault: a state, no current state
    reading(box, "exit-1", 1)
    reading(box, "smoke-2", 0, Kind.HEARTBEAT)  # a periodic repeat is still the detector's current state
    box.put("status", b"x", kind=Kind.STATUS)
    box.put("hb/3", b"x", kind=Kind.HEARTBEAT)
    reading(box, "smoke-1", 1, Kind.ALARM)  # put last
    assert send_order(box) == [
        "smoke-1/1",  # current states, the alarm first
        "exit-1/1", "smoke-2/0",
        "smoke-1/0", "exit-1/0", "cam-1/frozen", "status",  # the other alarms, states, status: oldest first
        "snap/1",
        "hb/1", "hb/2", "hb/3",
    ]
    assert topics(box)[-1] == "smoke-1/1"  # put order itself is unchanged
    assert box.peek_priority(2) == box.peek_priority(2)  # removes nothing


def test_only_heartbeats_go_in_put_order(box: Outbox) -> None:
    for i in range(300):
        box.put(f"hb/{i}", b"x", kind=Kind.HEARTBEAT)
    assert send_order(box) == topics(box) == [f"hb/{i}" for i in range(300)]
    assert drain(box, window=20) == [f"hb/{i}" for i in range(300)]
    assert len(box) == 0


def test_only_alarms_each_device_newest_first_then_the_rest_oldest_first(box: Outbox) -> None:
    for n in range(4):
        for device in ("smoke-1", "smoke-2", "smoke-3"):
            reading(box, device, n, Kind.ALARM)
    box.put("alarm/no-device", b"x", kind=Kind.ALARM)
    assert send_order(box) == [
        "smoke-1/3", "smoke-2/3", "smoke-3/3",
        *(f"{d}/{n}" for n in range(3) for d in ("smoke-1", "smoke-2", "smoke-3")),
        "alarm/no-device",
    ]


def test_a_device_with_many_states_has_one_current_entry(box: Outbox, path: Path) -> None:
    for n in range(500):
        reading(box, "exit-1", n)
        box.put(f"hb/{n}", b"x", kind=Kind.HEARTBEAT)
    order = send_order(box)
    assert order[0] == "exit-1/499"
    assert order[1:500] == [f"exit-1/{n}" for n in range(499)]
    assert order[500:] == [f"hb/{n}" for n in range(500)]
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM outbox WHERE lane <= 1").fetchone()[0] == 1


def test_entries_put_while_draining_go_ahead_of_the_heartbeat_backlog(box: Outbox) -> None:
    for i in range(200):
        box.put(f"hb/{i}", b"x", kind=Kind.HEARTBEAT)
    reading(box, "smoke-1", 0)

    def live(sent: int) -> None:
        # After the first window, one entry is sent per acknowledgement: each count comes once.
        if sent == 60:  # mid-drain: a fire alarm, a camera's fault, a heartbeat
            reading(box, "smoke-1", 1, Kind.ALARM)
            box.put("cam-1/frozen", b"x", kind=Kind.STATE)
            box.put("hb/live", b"x", kind=Kind.HEARTBEAT)
        if sent == 61:
            reading(box, "smoke-1", 2)  # back to normal while the alarm is in flight

    sent = drain(box, window=10, between=live)
    assert sorted(sent) == sorted({*(f"hb/{i}" for i in range(200)), "hb/live", "cam-1/frozen",
                                   "smoke-1/0", "smoke-1/1", "smoke-1/2"})  # each once
    assert sent[0] == "smoke-1/0"
    assert sent[1:60] == [f"hb/{i}" for i in range(59)]
    # Each goes with the very next peek, ahead of the 141 heartbeats left: the alarm, then the
    # detector's newer state (current), then the camera's fault (a state).
    assert sent[60:63] == ["smoke-1/1", "smoke-1/2", "cam-1/frozen"]
    assert sent[63:-1] == [f"hb/{i}" for i in range(59, 200)]
    assert sent[-1] == "hb/live"  # a live heartbeat waits behind the heartbeat backlog
    assert len(box) == 0


def test_reopened_mid_drain_sends_everything(path: Path) -> None:
    with Outbox(path) as box:
        for i in range(100):
            box.put(f"hb/{i}", b"x", kind=Kind.HEARTBEAT)
            if i % 10 == 0:
                reading(box, f"smoke-{i % 3}", i)
        first = box.peek_priority(30)
        box.ack(e.id for e in first[:20])  # the agent dies with 10 in flight
        in_flight = [e.topic for e in first[20:]]
        expected_rest = [e.topic for e in box.peek_priority(10_000)]
    with Outbox(path) as box:
        rest = drain(box, window=7)
    assert rest == expected_rest  # the same send order after a restart, the in-flight ones again
    assert rest[:10] == in_flight
    assert sorted([e.topic for e in first[:20]] + rest) == sorted(
        [f"hb/{i}" for i in range(100)] + [f"smoke-{i % 3}/{i}" for i in range(0, 100, 10)]
    )


def test_current_state_is_never_dropped(path: Path) -> None:
    with Outbox(path, max_messages=3) as box:
        reading(box, "exit-1", 0)  # the oldest entry, but exit-1's current state
        box.put("state/x", b"x", kind=Kind.STATE)
        box.put("hb/1", b"x", kind=Kind.HEARTBEAT)
        box.put("state/y", b"x", kind=Kind.STATE)  # over: the heartbeat goes
        assert topics(box) == ["exit-1/0", "state/x", "state/y"]
        box.put("state/z", b"x", kind=Kind.STATE)  # over: the oldest state that is no one's current one
        assert topics(box) == ["exit-1/0", "state/y", "state/z"]
        reading(box, "exit-1", 1)  # exit-1/0 is no longer current: it goes
        assert topics(box) == ["state/y", "state/z", "exit-1/1"]
        assert box.dropped() == {"heartbeat": 1, "state": 2}
        reading(box, "smoke-1", 0, Kind.HEARTBEAT)  # a current state, even of kind heartbeat: state/y goes
        assert topics(box) == ["state/z", "exit-1/1", "smoke-1/0"]


def test_peek_priority_walks_the_lane_index(box: Outbox) -> None:
    """Fast with 100,000 entries: no sort, the (lane, id) index of entries to send (not those
    awaiting the gateway's confirmation) is read from its start."""
    query = "EXPLAIN QUERY PLAN " + outbox_module._PEEK_PRIORITY
    plan = " ".join(str(row[3]) for row in box._conn().execute(query, ("[1]", 10)))
    assert "USING INDEX outbox_ready" in plan
    assert "TEMP B-TREE" not in plan


# --------------------------------------------------------------------------- schema

# What the previous agent (outbox schema 1) left on disk: its DDL, verbatim.
_SCHEMA_V1 = """
CREATE TABLE outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    retain  INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    tier    INTEGER NOT NULL,
    created REAL    NOT NULL
);
CREATE INDEX outbox_tier ON outbox (tier, id);
CREATE TABLE dropped (kind TEXT PRIMARY KEY, n INTEGER NOT NULL);
PRAGMA user_version = 1;
"""


def schema(path: Path) -> tuple[object, ...]:
    with sqlite3.connect(path) as db:
        return (
            db.execute("PRAGMA user_version").fetchone()[0],
            [row[1:] for row in db.execute("PRAGMA table_info(outbox)")],
            sorted(db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall()),
        )


def test_an_outbox_of_schema_1_is_migrated(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.executescript(_SCHEMA_V1)
        rows = [("hb/1", "heartbeat", 0), ("smoke-1/0", "state", 1), ("snap/1", "snapshot", 1),
                ("hb/2", "heartbeat", 0), ("smoke-1/1", "alarm", 2), ("exit-1/0", "state", 1)]
        db.executemany("INSERT INTO outbox (topic, payload, retain, kind, tier, created) VALUES (?, X'70', 0, ?, ?, 0)",
                       rows)
        db.execute("INSERT INTO dropped VALUES ('heartbeat', 7)")
    with Outbox(old) as box:
        assert len(box) == 6
        assert box.dropped() == {"heartbeat": 7}
        # Version 1 entries name no device: none is current, each takes its kind's lane.
        assert send_order(box) == ["smoke-1/0", "smoke-1/1", "exit-1/0", "snap/1", "hb/1", "hb/2"]
        newer = reading(box, "smoke-1", 2)
        assert newer > 6
        assert send_order(box)[0] == "smoke-1/2"
    with Outbox(old) as box:  # opening again changes nothing
        assert len(box) == 7
    fresh = tmp_path / "fresh.sqlite"
    Outbox(fresh).open().close()
    assert schema(old) == schema(fresh)  # one schema, however the file was made
    assert schema(fresh)[0] == SCHEMA_VERSION


def test_an_outbox_of_a_newer_agent_is_refused(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(sqlite3.DatabaseError, match="newer than this agent"):
        Outbox(path).open()


# --------------------------------------------------------------------------- kept until confirmed (issue 15)

T0 = 1_000_000.0  # a fixed clock: sent() and requeue_due() take ``now``


def keyed(box: Outbox, device: str, seq: int, kind: Kind = Kind.STATE, boot: str = "b1") -> int:
    """A reading with its (device, boot, seq), as the publisher puts it; topic ``device/seq``."""
    state_of = device if kind is not Kind.HEARTBEAT else None
    return box.put(f"{device}/{seq}", b"r", kind=kind, state_of=state_of, key=(device, boot, seq))


def test_a_reading_stays_after_its_puback_until_the_gateway_confirms_it(box: Outbox) -> None:
    ids = [keyed(box, "cam-1", s, Kind.HEARTBEAT) for s in range(5)]
    snapshot = box.put("cam-1/snapshot", b"\xff\xd8\xff", kind=Kind.SNAPSHOT)  # no seq: nothing confirms it
    assert box.sent([*ids, snapshot], timeout_s=60, max_timeout_s=900, now=T0) == 1  # the snapshot is done
    assert len(box) == 5
    assert box.awaiting() == 5
    assert box.peek_priority(10) == []  # the broker has them: nothing to send
    assert box.confirm([("cam-1", "b1", [(0, 1), (3, 3)])]) == 3
    assert topics(box) == ["cam-1/2", "cam-1/4"]
    assert box.confirm([("cam-1", "b2", [(0, 10)]), ("cam-2", "b1", [(0, 10)])]) == 0  # another boot, device
    assert box.confirm([("cam-1", "b1", [(0, 1)])]) == 0  # again: nothing left to delete
    assert len(box) == 2
    assert box.size_bytes == 2
    assert box._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for the next put


def test_a_confirmation_may_come_before_the_puback(box: Outbox) -> None:
    entry = keyed(box, "smoke-1", 0)
    assert box.confirm([("smoke-1", "b1", [(0, 0)])]) == 1  # still in flight, already committed
    assert box.sent([entry], timeout_s=60, max_timeout_s=900, now=T0) == 0  # its PUBACK finds nothing
    assert len(box) == 0
    assert box.awaiting() == 0


def test_unconfirmed_readings_are_sent_again_after_a_timeout_that_doubles(box: Outbox) -> None:
    entry = keyed(box, "cam-1", 0, Kind.HEARTBEAT)
    due = []
    now = T0
    for _ in range(6):
        box.sent([entry], timeout_s=10, max_timeout_s=50, now=now)
        due.append(box._conn().execute("SELECT due FROM outbox").fetchone()[0] - now)
        assert box.requeue_due(now + due[-1] - 0.001) == 0  # not yet
        assert box.peek_priority(10) == []
        assert box.requeue_due(now + due[-1]) == 1
        assert [e.id for e in box.peek_priority(10)] == [entry]  # to send again
        now += due[-1]
    assert due == [10, 20, 40, 50, 50, 50]  # doubled per attempt, capped


def test_resent_readings_keep_their_lane_and_place(box: Outbox) -> None:
    """After a resend time, what the broker lost goes in send order again: each device's current
    state first (the alarm first of all), then the other states, then heartbeats."""
    ids = [keyed(box, "cam-1", s, Kind.HEARTBEAT) for s in range(3)]
    ids += [keyed(box, "exit-1", 0), keyed(box, "exit-1", 1), keyed(box, "smoke-1", 0, Kind.ALARM)]
    order = send_order(box)
    assert order == ["smoke-1/0", "exit-1/1", "exit-1/0", "cam-1/0", "cam-1/1", "cam-1/2"]
    box.sent(ids, timeout_s=5, max_timeout_s=5, now=T0)
    fresh = keyed(box, "cam-1", 3, Kind.HEARTBEAT)  # put meanwhile: the only one to send now
    assert send_order(box) == ["cam-1/3"]
    box.ack([fresh])
    assert box.requeue_due(T0 + 5) == 6
    assert send_order(box) == order
    box.confirm([("exit-1", "b1", [(1, 1)]), ("cam-1", "b1", [(0, 0)])])
    assert send_order(box) == ["smoke-1/0", "exit-1/0", "cam-1/1", "cam-1/2"]


def test_awaiting_readings_survive_reopening_with_their_resend_time(path: Path) -> None:
    with Outbox(path) as box:
        ids = [keyed(box, "cam-1", s, Kind.HEARTBEAT) for s in range(3)]
        box.sent(ids[:2], timeout_s=30, max_timeout_s=30, now=T0)
    with Outbox(path) as box:
        assert len(box) == 3
        assert box.awaiting() == 2
        assert send_order(box) == ["cam-1/2"]
        assert box.requeue_due(T0 + 30) == 2
        assert send_order(box) == ["cam-1/0", "cam-1/1", "cam-1/2"]


# What the previous agent (outbox schema 2) left on disk: schema 1 then its migration, verbatim.
_SCHEMA_V2_STEP = f"""
ALTER TABLE outbox ADD COLUMN lane INTEGER NOT NULL DEFAULT 2;
ALTER TABLE outbox ADD COLUMN state_of TEXT;
UPDATE outbox SET lane = {outbox_module._OWN_LANE};
CREATE INDEX outbox_lane ON outbox (lane, id);
PRAGMA user_version = 2;
"""


def test_an_outbox_of_schema_2_is_migrated_and_its_readings_can_be_confirmed(tmp_path: Path) -> None:
    old = tmp_path / "v2.sqlite"
    rows = [
        ("sg/v1/s-1/cam-1/heartbeat", b'{"ts":1.0,"boot":"b0","seq":7,"stream":"ok","fps":1.0}', "heartbeat", 0, 4,
         None),
        ("sg/v1/s-1/smoke-1/smoke", b'{"ts":1.0,"boot":"b0","seq":3,"state":"alarm"}', "alarm", 2, 0, "smoke-1"),
        ("sg/v1/s-1/exit-1/snapshot", b"\xff\xd8\xff\xe0", "snapshot", 1, 3, None),
        ("sg/v1/s-1/exit-1/exit", b"not json", "state", 1, 1, "exit-1"),
    ]
    with sqlite3.connect(old) as db:
        db.executescript(_SCHEMA_V1.replace("PRAGMA user_version = 1;", "") + _SCHEMA_V2_STEP)
        db.executemany("INSERT INTO outbox (topic, payload, retain, kind, tier, lane, state_of, created)"
                       " VALUES (?, ?, 0, ?, ?, ?, ?, 0)", rows)
    with Outbox(old) as box:
        assert len(box) == 4
        keys = box._conn().execute("SELECT device, boot, seq, due FROM outbox ORDER BY id").fetchall()
        assert keys == [("cam-1", "b0", 7, 0), ("smoke-1", "b0", 3, 0), (None, None, None, 0), (None, None, None, 0)]
        assert send_order(box)[0] == "sg/v1/s-1/smoke-1/smoke"  # lanes kept
        ids = [e.id for e in box.peek(10)]
        # Readings await the gateway; the snapshot and the unreadable one are done at their PUBACK.
        assert box.sent(ids, timeout_s=60, max_timeout_s=60, now=T0) == 2
        assert box.confirm([("cam-1", "b0", [(7, 7)]), ("smoke-1", "b0", [(0, 5)])]) == 2
        assert len(box) == 0
    fresh = tmp_path / "fresh.sqlite"
    Outbox(fresh).open().close()
    assert schema(old) == schema(fresh)
