"""The alarm lane's overflow: routine readings set aside in PostgreSQL so it can read on to an alarm.

In a province four messages in five are smoke and exit readings, nearly all "still normal",
and they share the alarm lane with the alarms (MQTT has no filter on the payload). Once the
lane's hand-off is full, paho would stop reading and the broker would hold an alarm behind
every reading queued before it: under a sustained overload it waited 20-40 s (issue 10).

So while the hand-off is full, a routine reading the lane receives is not waited for: it is
set aside. This writer appends what was set aside to ``ingest_overflow`` by COPY every
``FLUSH_S`` (one round trip, microseconds a row, against ~80 µs a message for the whole
store path), and only after that commits acknowledges it to the broker: set aside is stored,
as durably as a reading, and a kill at any instant loses nothing (what was not committed is
unacknowledged, and the broker delivers it again). The lane keeps reading at the pace of paho,
so an alarm behind a backlog of readings is read, and stored, at once.

The lane's worker takes the set-aside rows back (``store.overflow.take``, oldest first, in the
transaction that stores them) whenever it is keeping up with live traffic. Any worker of the
shared subscription drains rows a dead worker left. The rules judge by ``ts``, so a reading
stored late is judged as it was meant.

Bounded: at most ``limit`` messages wait for the writer; past that (the database away or
slower than paho) paho waits, as without the overflow, and the broker holds the rest.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool

from gateway import metrics
from gateway.ingest.batch import Inbound
from gateway.store import overflow as overflow_store
from gateway.store.db import Conn

log = logging.getLogger(__name__)

FLUSH_S = 0.05  # set-aside messages wait at most this long for their COPY (and their PUBACK)
_RETRY_S = 1.0


class OverflowWriter:
    """Appends what the alarm lane sets aside to ``ingest_overflow``, then acknowledges it."""

    def __init__(
        self, pool: ConnectionPool[Conn], acknowledge: Callable[[list[Inbound]], None], *, limit: int,
        lane: str, on_stored: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._acknowledge = acknowledge
        self._on_stored = on_stored
        self._limit = limit
        self._lane = lane
        self._pending: collections.deque[Inbound] = collections.deque()
        self._room = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"overflow-{lane}", daemon=True)
        self._episode = 0  # messages set aside since the lane last kept up: logged at start and end
        metrics.OVERFLOW_PENDING.labels(lane).set_function(lambda: len(self._pending))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Store what waits (a last try), then end; what is left stays unacknowledged."""
        self._stopping.set()
        with self._room:
            self._room.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def set_aside(self, message: Inbound, stopping: threading.Event) -> bool:
        """Take ``message`` (paho's thread); waits while ``limit`` wait already. False: stopping."""
        with self._room:
            while len(self._pending) >= self._limit:
                if stopping.is_set() or self._stopping.is_set():
                    return False
                self._room.wait(0.5)
        if not self._episode:
            log.warning("ingest %s lane is behind: routine readings are set aside in the database"
                        " (ingest_overflow) so that alarms are read at once", self._lane)
        self._episode += 1
        self._pending.append(message)
        return True

    def caught_up(self) -> None:
        """The lane's worker found the overflow empty: the end of an episode, if there was one."""
        if self._episode and not self._pending:
            log.warning("ingest %s lane caught up: %d routine readings were set aside and are stored",
                        self._lane, self._episode)
            self._episode = 0

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(FLUSH_S)
            if self._pending and not self._flush() and not stopping:
                self._stopping.wait(_RETRY_S)
            if stopping:
                return

    def _flush(self) -> bool:
        batch = list(self._pending)  # only this thread pops: what paho appends meanwhile waits a turn
        try:
            with self._pool.connection() as conn, conn.transaction():
                overflow_store.put(conn, [overflow_store.SetAside(m.topic, m.payload, m.received_at)
                                          for m in batch])
        except psycopg.Error as exc:
            metrics.STORE_ERRORS.inc()
            log.warning("ingest %s lane could not set %d readings aside (%s); retrying",
                        self._lane, len(batch), exc)
            return False
        for _ in batch:
            self._pending.popleft()
        with self._room:
            self._room.notify_all()
        metrics.OVERFLOW.labels(self._lane).inc(len(batch))
        self._acknowledge(batch)
        self._on_stored()
        return True

