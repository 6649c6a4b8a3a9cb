"""Durable on-disk outbox: every reading waits here until the gateway confirmed it.

The shape is ThingsBoard's storage interface (read a batch, then acknowledge it):
``put`` appends, ``peek`` reads the oldest entries without removing them, ``ack``
deletes entries outright. Life cycle of a reading (issue 15; docs/edge-agent-publisher.md)::

    put --> to send --peek_priority/publish--> PUBACK: sent() --> awaiting (due = resend time)
               ^                                                     |          |
               +------------------- requeue_due() at ``due`` --------+          |
                                                     confirm() (the gateway's ack) --> deleted

The broker's PUBACK only means "the broker has it" (Mosquitto holds it in memory): ``sent``
keeps the entry, with the time to send it again (a timeout doubled per attempt, capped)
unless the gateway's confirmation (``confirm``: device, boot and seq ranges) deletes it first.
An entry with no ``(device, boot, seq)`` (a snapshot; readings of a schema-2 file whose payload
is not readable) is deleted at its PUBACK, as before. Awaiting entries keep their lane and
their place in it: a resend goes in send order again.

Durability: SQLite in WAL mode with ``synchronous=FULL``, so a ``put`` that returned
has been fsynced and survives a power cut (issue 3, point 5). Ids come from
``AUTOINCREMENT``, so they only grow, even across deletes and reopens: id order is
put order, which the publisher relies on to deliver in order.

Bounded size: at most ``max_messages`` entries and ``max_bytes`` of payload. When a
``put`` goes over, the outbox drops, oldest first, heartbeats, then any other
droppable entry; alarms and agent status are never dropped. If only those are left
it grows beyond the bound and logs an error for every such ``put``. Every drop is
counted per kind, in the file itself (the counts survive restarts).

Thread-safe: one connection, every call under one lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # == len(_MIGRATIONS)
_ACK_CHUNK = 500  # SQLite's default limit on bound parameters is far above; keeps statements small


class Kind(StrEnum):
    """What an entry is; decides what the full policy may drop."""

    ALARM = "alarm"  # a smoke alarm: never dropped
    STATUS = "status"  # agent status: never dropped
    STATE = "state"  # a state (smoke, exit): dropped after heartbeats
    SNAPSHOT = "snapshot"  # a JPEG: dropped after heartbeats
    HEARTBEAT = "heartbeat"  # a periodic "still the same": dropped first


class _Tier(IntEnum):
    """Drop order when full: lowest tier first, oldest first within a tier."""

    HEARTBEAT = 0
    OTHER = 1
    PROTECTED = 2


_TIER = {
    Kind.HEARTBEAT: _Tier.HEARTBEAT,
    Kind.STATE: _Tier.OTHER,
    Kind.SNAPSHOT: _Tier.OTHER,
    Kind.ALARM: _Tier.PROTECTED,
    Kind.STATUS: _Tier.PROTECTED,
}


class _Lane(IntEnum):
    """Send order (module doc): lowest lane first, oldest first within a lane."""

    CURRENT_ALARM = 0  # a device's newest entry, an alarm
    CURRENT = 1  # a device's newest entry, anything else
    SAFETY = 2
    SNAPSHOT = 3
    HEARTBEAT = 4


_LANE = {
    Kind.ALARM: _Lane.SAFETY,
    Kind.STATUS: _Lane.SAFETY,
    Kind.STATE: _Lane.SAFETY,
    Kind.SNAPSHOT: _Lane.SNAPSHOT,
    Kind.HEARTBEAT: _Lane.HEARTBEAT,
}


def _lane(kind: Kind, *, current: bool) -> _Lane:
    if not current:
        return _LANE[kind]
    return _Lane.CURRENT_ALARM if kind is Kind.ALARM else _Lane.CURRENT


# ----------------------------------------------------------------------------- named SQL

# An entry's own lane from its kind, in SQL (built from _LANE: one mapping).
_OWN_LANE = "CASE kind " + " ".join(f"WHEN '{k.value}' THEN {int(v)}" for k, v in _LANE.items()) + " END"

# sg/v1/{site}/{device}/{type} -> device, in SQL (migration 3 only; protocol.topics builds topics).
_AFTER_SITE = "substr(topic, instr(substr(topic, 7), '/') + 7)"
_DEVICE_OF_TOPIC = f"substr({_AFTER_SITE}, 1, instr({_AFTER_SITE}, '/') - 1)"

_MIGRATIONS = (
    # 1: the first outbox (FIFO by id).
    """
    CREATE TABLE IF NOT EXISTS outbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- only grows: id order is put order
        topic   TEXT    NOT NULL,
        payload BLOB    NOT NULL,
        retain  INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        tier    INTEGER NOT NULL,                   -- drop order when full (_Tier)
        created REAL    NOT NULL                    -- epoch seconds of the put
    );
    CREATE INDEX IF NOT EXISTS outbox_tier ON outbox (tier, id);
    CREATE TABLE IF NOT EXISTS dropped (
        kind TEXT PRIMARY KEY,
        n    INTEGER NOT NULL
    );
    """,
    # 2: send order by lane (issue 10). Entries of a version 1 file carry no device, so they
    # take their kind's lane (safety before snapshots before heartbeats) and none is current.
    f"""
    ALTER TABLE outbox ADD COLUMN lane INTEGER NOT NULL DEFAULT {int(_Lane.SAFETY)};  -- send order (_Lane)
    ALTER TABLE outbox ADD COLUMN state_of TEXT;  -- the device whose state this is (smoke, exit), or NULL
    UPDATE outbox SET lane = {_OWN_LANE};
    CREATE INDEX IF NOT EXISTS outbox_lane ON outbox (lane, id);
    """,
    # 3: kept until the gateway confirms (issue 15). A reading's (device, boot, seq) is what the
    # confirmation names; a version 2 file's readings get theirs from topic and payload. Entries
    # there were all still to send (due 0).
    f"""
    ALTER TABLE outbox ADD COLUMN device TEXT;  -- a reading's device, boot and seq, else NULL
    ALTER TABLE outbox ADD COLUMN boot TEXT;
    ALTER TABLE outbox ADD COLUMN seq INTEGER;
    ALTER TABLE outbox ADD COLUMN due REAL NOT NULL DEFAULT 0;  -- 0: to send; else broker has it, resend then
    ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;  -- sends the broker acknowledged
    UPDATE outbox SET
        device = {_DEVICE_OF_TOPIC},
        boot = json_extract(CAST(payload AS TEXT), '$.boot'),
        seq = json_extract(CAST(payload AS TEXT), '$.seq')
    WHERE kind IN ('alarm', 'state', 'heartbeat') AND json_valid(CAST(payload AS TEXT))
      AND json_type(CAST(payload AS TEXT), '$.seq') = 'integer'
      AND json_type(CAST(payload AS TEXT), '$.boot') = 'text';
    CREATE INDEX IF NOT EXISTS outbox_ready ON outbox (lane, id) WHERE due = 0;
    CREATE INDEX IF NOT EXISTS outbox_due ON outbox (due) WHERE due > 0;
    CREATE INDEX IF NOT EXISTS outbox_key ON outbox (device, boot, seq);
    """,
)
_TOTALS = "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox"
_INSERT = (
    "INSERT INTO outbox (topic, payload, retain, kind, tier, lane, state_of, created, device, boot, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The previous current entry of a device goes back to its own lane (walks lanes 0-1 only: one row per device).
_DEMOTE = f"UPDATE outbox SET lane = {_OWN_LANE} WHERE lane <= {int(_Lane.CURRENT)} AND state_of = ?"
_COLUMNS = "id, topic, payload, retain, kind, created"
_PEEK = f"SELECT {_COLUMNS} FROM outbox WHERE id > ? ORDER BY id LIMIT ?"
# Walks the (lane, id) index from its start; the skipped ids (in flight, a window's worth) are passed as
# one JSON array, so their number is not bounded by SQLite's limit on parameters.
# Entries awaiting the gateway's confirmation (due > 0) are not to send: the partial index holds the others.
_PEEK_PRIORITY = (
    f"SELECT {_COLUMNS} FROM outbox WHERE due = 0 AND id NOT IN (SELECT value FROM json_each(?))"
    " ORDER BY lane, id LIMIT ?"
)
# A device's current state is never dropped: the newest word on it is what matters after an outage.
_VICTIM = (
    f"SELECT id, kind, length(payload) FROM outbox WHERE tier = ? AND lane > {int(_Lane.CURRENT)} ORDER BY id LIMIT 1"
)
_DELETE_ONE = "DELETE FROM outbox WHERE id = ?"
_COUNT_DROP = "INSERT INTO dropped (kind, n) VALUES (?, 1) ON CONFLICT (kind) DO UPDATE SET n = n + 1"
_DROPPED = "SELECT kind, n FROM dropped"
_DELETE_MANY = "DELETE FROM outbox WHERE id IN ({marks}) RETURNING length(payload)"
# At the PUBACK: a reading waits for the gateway (resend after timeout x 2^attempts, capped); anything
# else (no seq: nothing will confirm it) is done.
_SENT = (
    "UPDATE outbox SET due = ? + min(?, ? * (1 << min(attempts, 30))), attempts = attempts + 1"
    " WHERE id IN ({marks}) AND seq IS NOT NULL"
)
_DELETE_UNCONFIRMABLE = "DELETE FROM outbox WHERE id IN ({marks}) AND seq IS NULL RETURNING length(payload)"
_CONFIRM = "DELETE FROM outbox WHERE device = ? AND boot = ? AND seq BETWEEN ? AND ? RETURNING length(payload)"
_REQUEUE = "UPDATE outbox SET due = 0 WHERE due > 0 AND due <= ?"
_AWAITING = "SELECT count(*) FROM outbox WHERE due > 0"


@dataclass(frozen=True, slots=True)
class Entry:
    """One message waiting for the broker's acknowledgement."""

    id: int
    topic: str
    payload: bytes
    retain: bool
    kind: str
    created: float


class OutboxClosed(RuntimeError):
    """The outbox was used before ``open()`` or after ``close()``."""


class Outbox:
    """A bounded, durable queue of MQTT messages in one SQLite file, read in send order.

    ``max_messages`` and ``max_bytes`` (payload bytes) bound the size; see the module
    docstring for the policy when full. Use as a context manager or call
    ``open()``/``close()``.
    """

    def __init__(self, path: Path | str, *, max_messages: int = 100_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be positive")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._bytes = 0
        self._overflows = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Self:
        with self._lock:
            if self._db is not None:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves; the connection is shared
            # between the caller's threads and the publisher's drain thread, under self._lock.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            try:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"{self.path}: cannot use WAL journal (got {mode!r})")
                # FULL: a commit is fsynced before it returns, so a put survives a power cut.
                db.execute("PRAGMA synchronous=FULL")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(
                        f"{self.path} has outbox schema {version}, newer than this agent's {SCHEMA_VERSION}"
                    )
                for step in range(version, SCHEMA_VERSION):
                    # One transaction per step, the version bumped inside it: a crash leaves a whole step.
                    db.executescript(f"BEGIN IMMEDIATE; {_MIGRATIONS[step]}; PRAGMA user_version={step + 1}; COMMIT;")
                    if version:
                        log.info("outbox %s migrated to schema %d", self.path, step + 1)
                count, size = db.execute(_TOTALS).fetchone()
            except BaseException:
                db.close()
                raise
            self._db, self._count, self._bytes = db, int(count), int(size)
        if count:
            log.info("outbox %s reopened with %d messages (%d bytes) waiting", self.path, count, size)
        return self

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxClosed(f"outbox {self.path} is not open")
        return self._db

    # ------------------------------------------------------------------ the interface

    def put(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        kind: Kind | str = Kind.STATE,
        state_of: str | None = None,
        key: tuple[str, str, int] | None = None,
    ) -> int:
        """Append a message; returns its id once it is on disk. May drop older entries (module doc).

        ``state_of``: the device whose current safety state this message is (a smoke or exit
        reading); the newest such entry of each device is sent first (module doc).
        ``key``: a reading's ``(device, boot, seq)``, which the gateway's confirmation names; without
        it the entry is done at its PUBACK.
        """
        device, boot, seq = key if key is not None else (None, None, None)
        kind = Kind(kind)
        lane = _lane(kind, current=state_of is not None)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                if state_of is not None:
                    db.execute(_DEMOTE, (state_of,))
                row = (topic, payload, int(retain), kind.value, _TIER[kind], lane, state_of, time.time(),
                       device, boot, seq)
                cursor = db.execute(_INSERT, row)
                entry_id = cursor.lastrowid
                assert entry_id is not None
                count, size = self._count + 1, self._bytes + len(payload)
                count, size = self._make_room(db, count, size)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count, self._bytes = count, size
            return entry_id

    def _make_room(self, db: sqlite3.Connection, count: int, size: int) -> tuple[int, int]:
        """Drop droppable entries until within bounds (inside the put's transaction)."""
        while count > self.max_messages or size > self.max_bytes:
            victim = None
            for tier in (_Tier.HEARTBEAT, _Tier.OTHER):
                victim = db.execute(_VICTIM, (tier,)).fetchone()
                if victim is not None:
                    break
            if victim is None:
                # Only alarms, status and current states left: losing one is worse than using more disk.
                self._overflows += 1
                log.error(
                    "OUTBOX FULL of alarms/status/current states: %s holds %d messages, %d bytes (bounds %d, %d); "
                    "growing beyond the bound rather than dropping an alarm -- is the broker reachable?",
                    self.path, count, size, self.max_messages, self.max_bytes,
                )
                break
            victim_id, victim_kind, victim_size = victim
            db.execute(_DELETE_ONE, (victim_id,))
            db.execute(_COUNT_DROP, (victim_kind,))
            count, size = count - 1, size - int(victim_size)
            log.warning("outbox full: dropped %s message %d (%d bytes)", victim_kind, victim_id, victim_size)
        return count, size

    def peek(self, n: int, *, after: int = 0) -> list[Entry]:
        """Up to ``n`` oldest entries with an id above ``after``, in put order; removes nothing."""
        return self._select(_PEEK, (after, n))

    def peek_priority(self, n: int, *, skip: Collection[int] = ()) -> list[Entry]:
        """Up to ``n`` entries in send order (module doc), leaving out the ids in ``skip`` (the
        ones already in flight); removes nothing. Each call sees the lanes as they are now, so an
        alarm put since the last call comes before the heartbeats that were waiting."""
        return self._select(_PEEK_PRIORITY, (json.dumps(list(skip)), n))

    def _select(self, sql: str, params: tuple[object, ...]) -> list[Entry]:
        with self._lock:
            rows = self._conn().execute(sql, params).fetchall()
        return [Entry(int(i), str(t), bytes(p), bool(r), str(k), float(c)) for i, t, p, r, k, c in rows]

    def ack(self, ids: Iterable[int]) -> int:
        """Delete the acknowledged entries; unknown ids (already acked or dropped) are ignored.

        Returns how many entries were deleted.
        """
        wanted: Sequence[int] = list(ids)
        if not wanted:
            return 0
        deleted = freed = 0
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(wanted), _ACK_CHUNK):
                    chunk = wanted[start : start + _ACK_CHUNK]
                    sql = _DELETE_MANY.format(marks=",".join("?" * len(chunk)))
                    sizes = db.execute(sql, chunk).fetchall()
                    deleted += len(sizes)
                    freed += sum(int(s) for (s,) in sizes)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count -= deleted
            self._bytes -= freed
        return deleted

    def sent(self, ids: Iterable[int], *, timeout_s: float, max_timeout_s: float, now: float | None = None) -> int:
        """The broker acknowledged these entries (PUBACK): readings now await the gateway's
        confirmation and are sent again ``timeout_s`` from ``now`` (doubled per earlier attempt, at
        most ``max_timeout_s``) unless confirmed; the others are deleted. Returns how many were deleted."""
        wanted: Sequence[int] = list(ids)
        if not wanted:
            return 0
        at = time.time() if now is None else now
        deleted = freed = 0
        with self._lock, self._not_synced() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(wanted), _ACK_CHUNK):
                    chunk = wanted[start : start + _ACK_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    db.execute(_SENT.format(marks=marks), (at, max_timeout_s, timeout_s, *chunk))
                    sizes = db.execute(_DELETE_UNCONFIRMABLE.format(marks=marks), chunk).fetchall()
                    deleted += len(sizes)
                    freed += sum(int(s) for (s,) in sizes)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count -= deleted
            self._bytes -= freed
        return deleted

    def confirm(self, confirmed: Iterable[tuple[str, str, Sequence[tuple[int, int]]]]) -> int:
        """Delete the readings the gateway confirmed: ``(device, boot, [(first, last), ...])``,
        ranges inclusive, whether the entry awaits confirmation or is still to send (or in flight:
        its PUBACK then finds nothing). Unknown ones are ignored. Returns how many were deleted."""
        deleted = freed = 0
        with self._lock, self._not_synced() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for device, boot, ranges in confirmed:
                    for first, last in ranges:
                        sizes = db.execute(_CONFIRM, (device, boot, first, last)).fetchall()
                        deleted += len(sizes)
                        freed += sum(int(s) for (s,) in sizes)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count -= deleted
            self._bytes -= freed
        return deleted

    @contextlib.contextmanager
    def _not_synced(self) -> Iterator[sqlite3.Connection]:
        """A commit that need not survive a power cut: lost, it only means a resend (a reading back
        to "awaiting" or "to send"), which the gateway stores once. WAL with synchronous=NORMAL
        stays consistent; the next FULL commit (a put) fsyncs it too. Saves two fsyncs a batch."""
        db = self._conn()
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield db
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def requeue_due(self, now: float | None = None) -> int:
        """Entries whose confirmation did not come by their resend time go back to be sent (in
        their lane, in their place). Returns how many."""
        with self._lock:
            cursor = self._conn().execute(_REQUEUE, (time.time() if now is None else now,))
            return cursor.rowcount

    def awaiting(self) -> int:
        """Entries the broker acknowledged that wait for the gateway's confirmation."""
        with self._lock:
            return int(self._conn().execute(_AWAITING).fetchone()[0])

    # ------------------------------------------------------------------ figures

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Payload bytes waiting."""
        return self._bytes

    def dropped(self) -> dict[str, int]:
        """Messages dropped by the full policy, per kind, since the file was created."""
        with self._lock:
            return {str(k): int(n) for k, n in self._conn().execute(_DROPPED).fetchall()}

    @property
    def overflows(self) -> int:
        """Puts (since open) that left the outbox above its bound: only undroppable entries remained."""
        return self._overflows
