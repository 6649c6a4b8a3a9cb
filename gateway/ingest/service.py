"""The MQTT side of ingest: two lanes, each a persistent session handing messages to a worker.

* the **alarm lane** takes smoke, exit and agent status (``protocol.ALARM_FILTERS``), in small,
  quick batches. Nothing else reaches its session, so at the broker no heartbeat backlog can
  stand in front of an alarm;
* the **routine lane** takes everything else: camera heartbeats, snapshots, and anything
  off-contract (to be dead-lettered), in large batches. Its session (``sg/v1/#``) also
  receives the alarm lane's messages; it acknowledges those unread, in bulk. That costs
  paho time on safety traffic twice, the price of an alarm lane that nothing routine can
  ever delay (MQTT has no "all but" filter). Where the broker's ACL refuses off-contract
  topics, ``ingest_catch_all: false`` gives it exact filters instead (``ROUTINE_FILTERS``).

Each lane is its own MQTT session, so the broker queues an alarm apart from a heartbeat
backlog, and its own worker thread and transactions, so an alarm never waits in a batch of
heartbeats (DESIGN section 2, "Alarms first"). The paho callback only appends (STYLE habit 1).
A worker forms batches by size and by age, writes each in one transaction, and only then
acknowledges its messages, all together (paho manual ack), so nothing is lost if the process
dies mid-batch.

**Back-pressure.** A lane holds at most ``ingest_queue_max`` messages received but not yet
stored (queued, or in the batch being written). The callback takes a slot per message and, when
none is free, waits in paho's network thread: paho then reads nothing more from the broker's
socket, TCP flow control stops the broker, and the broker queues the rest (Mosquitto 2.0 does
not keep to the Receive Maximum we ask for, eclipse-mosquitto/mosquitto#2301, so the bound must
be ours). The slots come back when the batch is stored and acknowledged. A worker stalled longer
than the keepalive (a database outage) sends no PINGREQ meanwhile, so the broker drops the
connection: paho reconnects once the worker moves again, the broker redelivers what was not
acknowledged (idempotent storage absorbs it) and the old connection's mids are never
acknowledged on the new one (``generation``).

**Urgent messages have a writer of their own.** In the alarm lane, a reading that may raise an
alert (an alarm, a fault, a blocked exit) and every agent status go to a second thread with its
own transactions, beside the routine batches: an alarm waits for no routine batch's commit, only
for one that holds its site's lock (the locks are taken in one order, so the two never deadlock).

**The alarm lane never waits for a slot.** Four messages in five of a province share it with
the alarms (smoke and exit readings, nearly all normal). An urgent message may take a slot past
the bound (up to ``URGENT_HEADROOM`` times it); a routine one that finds the hand-off full is
set aside in the database (``ingest_overflow``, gateway/ingest/overflow.py) and acknowledged
once that commits, and paho reads on: an alarm behind a backlog of readings is read at once,
however far behind the gateway is. The worker takes set-aside readings back while live traffic
leaves it room (``ingest_overflow: false`` restores plain back-pressure).

**A message only the database refuses** (whatever the boundary validation did not catch) fails
its batch: the batch is split in halves and each retried, down to the one message, which goes to
the dead letters as ``storage_rejected``: a few transactions per bad message, not one per
message of the batch. Rejections are logged once per reason with a count (``_RejectLog``), not
a line (or a traceback) per message.

Several processes share the stream through MQTT 5 shared subscriptions; each needs a
distinct, stable worker id, from which both lanes' client ids are made.
"""

from __future__ import annotations

import collections
import logging
import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from psycopg_pool import ConnectionPool

from gateway import metrics
from gateway.config import Settings
from gateway.ingest.batch import BatchProcessor, BatchResult, DeadLetter, Inbound, store_dead_letters
from gateway.ingest.confirm import Confirmer
from gateway.ingest.overflow import OverflowWriter
from gateway.ingest.provisional import ProvisionalAlarms
from gateway.store import overflow as overflow_store
from gateway.store.db import Conn
from protocol import (
    ALARM_FILTERS,
    ROUTINE_FILTERS,
    SUBSCRIPTION,
    RejectReason,
    is_ack_topic,
    is_alarm_topic,
    is_alert_topic,
)
from protocol.mqtt import MqttVersion, ack_all, connect_properties, new_client

log = logging.getLogger(__name__)

_RETRY_DELAYS_S = (0.5, 1, 2, 5, 10)
_UNREAD_FLUSH = 500  # unread (skipped) mids the callback acknowledges itself once this many wait
_REJECT_LOG_EVERY_S = 10.0
URGENT_HEADROOM = 4  # an alarm lane's urgent messages may hold this many times ingest_queue_max
_OVERFLOW_RECHECK_S = 30.0  # an idle lane looks this often for rows another (dead) worker set aside


class _HandOff:
    """The bound on what one lane holds received but not stored (``ingest_queue_max``)."""

    def __init__(self, limit: int, lane: str) -> None:
        self.limit = limit
        self.held = 0
        self.max_seen = 0
        self._lane = lane
        self._free = threading.Condition()
        metrics.QUEUE_DEPTH.labels(lane).set_function(lambda: self.held)
        metrics.QUEUE_DEPTH_MAX.labels(lane).set_function(lambda: self.max_seen)

    def take(self, stopping: threading.Event, *, urgent: bool = False) -> bool:
        """A slot for one message; waits (paho's thread: no more reading) while none is free.

        An ``urgent`` message may go past the bound, up to ``URGENT_HEADROOM`` times it: an alarm
        never waits for a slot that routine readings hold. False when the lane stops meanwhile:
        the message is dropped unacknowledged (the broker redelivers it to the next session)."""
        limit = self.limit * URGENT_HEADROOM if urgent else self.limit
        with self._free:
            if self.held >= limit:
                metrics.BACKPRESSURE.labels(self._lane).inc()
                while self.held >= limit:
                    if stopping.is_set():
                        return False
                    self._free.wait(0.5)
            self.held += 1
            self.max_seen = max(self.max_seen, self.held)
            return True

    def try_take(self) -> bool:
        """A slot if one is free now, never waiting (the alarm lane sets the message aside otherwise)."""
        with self._free:
            if self.held >= self.limit:
                return False
            self.held += 1
            self.max_seen = max(self.max_seen, self.held)
            return True

    @property
    def keeping_up(self) -> bool:
        """Half the slots free or more: live traffic leaves room to take back set-aside readings."""
        return self.held < self.limit // 2 + 1

    def give_back(self, count: int) -> None:
        if count:
            with self._free:
                self.held -= count
                self._free.notify()


class _RejectLog:
    """Rejections logged once per reason with a count: the first of a reason at once (with its
    example), then a summary at most every ``every_s`` (issue 15: a line, or a traceback, per bad
    message filled the log at 200 k bad messages)."""

    def __init__(self, lane: str, every_s: float = _REJECT_LOG_EVERY_S) -> None:
        self._lane = lane
        self._every_s = every_s
        self._seen: set[str] = set()
        self._counts: collections.Counter[str] = collections.Counter()
        self._examples: dict[str, str] = {}
        self._since = time.monotonic()

    def add(self, dead: Sequence[DeadLetter]) -> None:
        for d in dead:
            if d.code not in self._seen:
                self._seen.add(d.code)
                log.warning("ingest %s lane rejected %s: %s: %s (further %s rejections are summed up every %.0f s)",
                            self._lane, d.message.topic, d.code, d.reason, d.code, self._every_s)
                continue
            self._counts[d.code] += 1
            self._examples.setdefault(d.code, f"{d.message.topic}: {d.reason}")
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._counts or (not force and now - self._since < self._every_s):
            return
        log.warning("ingest %s lane rejected in the last %.0f s: %s", self._lane, now - self._since,
                    "; ".join(f"{code} x {n} (e.g. {self._examples[code]})" for code, n in self._counts.most_common()))
        self._counts.clear()
        self._examples.clear()
        self._since = now


class ReaderFirst:
    """While the alarm lane's reader is behind the broker, the process's routine writers step aside.

    In one interpreter every thread takes turns at one GIL: a worker storing routine batches slows
    the network thread that would read on to the next alarm. When the alarm lane's socket shows a
    backlog (``BufferedClient.backlogged``) and it can set readings aside (the overflow), the
    routine writers wait, at most ``MAX_WAIT_S`` at a time, so paho reads at its own pace until it
    is through the backlog. The urgent writer and the overflow writer never wait here.
    """

    MAX_WAIT_S = 0.25  # progress for the routine writers even under a backlog that never ends

    def __init__(self) -> None:
        self._clear = threading.Event()
        self._clear.set()
        self._behind_at = 0.0  # monotonic: the last report of a backlog (a quiet socket reports nothing)

    def reader(self, behind: bool) -> None:
        if behind:
            self._behind_at = time.monotonic()
        if behind == self._clear.is_set():  # only on a change: set/clear take a lock
            if behind:
                self._clear.clear()
            else:
                self._clear.set()

    def wait_turn(self) -> None:
        if not self._clear.is_set() and time.monotonic() - self._behind_at < self.MAX_WAIT_S:
            metrics.READER_FIRST.inc()
            self._clear.wait(self.MAX_WAIT_S)


class Lane(StrEnum):
    ALARM = "alarm"
    ROUTINE = "routine"


@dataclass(frozen=True, slots=True)
class LanePlan:
    lane: Lane
    client_id: str
    filters: Sequence[str]
    batch_size: int
    batch_interval_s: float


def lane_plans(settings: Settings, worker_id: str | None = None) -> list[LanePlan]:
    """The lanes' sessions (``ingest_lanes``); ids are stable per worker (a restarted worker resumes them)."""
    worker = worker_id or settings.ingest.worker_id
    if worker is None and settings.mqtt.shared_group:
        worker = socket.gethostname()  # one worker per host unless told otherwise
    base = f"{settings.mqtt.client_id}-{worker}" if worker else settings.mqtt.client_id
    plans = [
        LanePlan(Lane.ALARM, f"{base}-alarm", ALARM_FILTERS, settings.ingest.alarm_batch_size,
                 settings.ingest.alarm_batch_interval_s),
        LanePlan(Lane.ROUTINE, f"{base}-ingest", (SUBSCRIPTION,) if settings.ingest.catch_all else ROUTINE_FILTERS,
                 settings.ingest.batch_size, settings.ingest.batch_interval_s),
    ]
    return [p for p in plans if p.lane.value in settings.ingest.lanes]


class _LaneWorker:
    """One lane: a paho client (persistent session, manual ack) and the thread writing its batches."""

    def __init__(self, settings: Settings, pool: ConnectionPool[Conn], plan: LanePlan,
                 reader_first: ReaderFirst | None = None) -> None:
        self._settings = settings
        self._reader_first = reader_first or ReaderFirst()
        self._pool = pool
        self.plan = plan
        # Unbounded as a container; what it (with _urgent and the batch in hand) holds is bounded by
        # the hand-off's slots, which paho's callback takes before handing off (back-pressure).
        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._handoff = _HandOff(settings.ingest.queue_max, plan.lane.value)
        self._rejects = _RejectLog(plan.lane.value)
        # Alarm lane: what may raise an alert (an alarm, a fault, a blocked exit, agent status) goes
        # to a writer of its own, beside the routine "still normal" readings of the same lane: it
        # waits for no routine batch's commit (only for one holding its site's lock).
        self._urgent: queue.SimpleQueue[Inbound] | None = queue.SimpleQueue() if plan.lane is Lane.ALARM else None
        self._urgent_worker: threading.Thread | None = None
        self._done_lock = threading.Lock()  # the lane's counts and confirmer, from both writers
        self._provisional = threading.local()  # a ProvisionalAlarms per writer: it tracks the batch in hand
        self._processor = BatchProcessor(settings.liveness)  # the liveness settings are the batch's Rules
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._generation = 0
        self._worker: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        # With sg/v1/# the routine lane also gets the alarm lane's messages: skipped, acknowledged unread.
        self._skip = _skip_catch_all if SUBSCRIPTION in plan.filters else None
        self.accepted = 0  # messages this lane stored (its share of a shared subscription)
        # Messages this lane does not handle, to acknowledge in bulk from the worker: (generation, mid).
        self._unread: collections.deque[tuple[int, int]] = collections.deque()
        self._confirmer: Confirmer | None = None  # started with the first committed batch (agent_ack)
        # Alarm lane: routine readings set aside in the database while the hand-off is full, so
        # that paho reads on to the alarms behind them (gateway/ingest/overflow.py).
        self._overflow: OverflowWriter | None = None
        self._overflow_waiting = threading.Event()  # rows may wait in ingest_overflow
        self._overflow_look_at = 0.0  # monotonic: the next look for rows another worker left

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        settings, plan = self._settings, self.plan
        endpoint = settings.mqtt.endpoint
        client = new_client(endpoint, plan.client_id, settings.mqtt.version, persistent=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if settings.mqtt.version is MqttVersion.V5:
            # Receive Maximum well above the batch size: Mosquitto stops at 20 unacked messages
            # otherwise (DESIGN section 2), and the lane keeps receiving while a batch commits.
            props = connect_properties(
                session_expiry_s=settings.mqtt.session_expiry_s,
                receive_maximum=min(65_535, max(2_000, plan.batch_size * 10)),
            )
            client.connect_async(endpoint.host, endpoint.port, keepalive=30, clean_start=False, properties=props)
        else:
            client.connect_async(endpoint.host, endpoint.port, keepalive=30)
        self._client = client
        if plan.lane is Lane.ALARM and settings.ingest.overflow:
            self._overflow = OverflowWriter(self._pool, self._ack, limit=settings.ingest.queue_max,
                                            lane=plan.lane.value, on_stored=self._overflow_waiting.set)
            self._overflow.start()
            self._overflow_waiting.set()  # rows an earlier run (or a dead worker) left
        self._worker = threading.Thread(target=self._run, name=f"ingest-{plan.lane}", daemon=True)
        self._worker.start()
        if self._urgent is not None:
            self._urgent_worker = threading.Thread(target=self._run_urgent, name=f"ingest-{plan.lane}-urgent",
                                                   daemon=True)
            self._urgent_worker.start()
        client.loop_start()
        log.info("ingest %s lane connecting to %s as %s", plan.lane, endpoint, plan.client_id)

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; unacknowledged messages stay with the broker."""
        self._stopping.set()
        for worker in (self._worker, self._urgent_worker):
            if worker is not None:
                worker.join(timeout=30)
        if self._overflow is not None:
            self._overflow.stop()  # what is set aside is stored and acknowledged, or redelivered
        self._ack_unread()  # what we skip need not come back after the restart
        if self._confirmer is not None:
            self._confirmer.stop()  # what the last batches committed, before the disconnect
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # paho callbacks: hand off, nothing else -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the ingest %s lane: %s", self.plan.lane, reason)
            return
        self._generation += 1
        group = self._settings.mqtt.shared_group
        client.subscribe([(f"$share/{group}/{f}" if group else f, 1) for f in self.plan.filters])
        self._connected.set()
        log.info("ingest %s lane connected (session present: %s)", self.plan.lane,
                 getattr(flags, "session_present", None))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("ingest %s lane lost the broker (%s); paho reconnects", self.plan.lane, reason)

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        if (self._skip is not None and self._skip(topic)) or is_alert_topic(topic):
            if message.qos == 1:  # the alarm lane's, or our own output: acknowledged unread, in bulk
                self._unread.append((self._generation, message.mid))
                if len(self._unread) >= _UNREAD_FLUSH:  # bounded even while the worker is stalled
                    self._ack_unread()
            return
        inbound = Inbound(topic, bytes(message.payload), time.time(), message.mid, message.qos, self._generation)
        if self._urgent is not None and _urgent(inbound.payload):
            if self._handoff.take(self._stopping, urgent=True):  # False: stopping, redelivered later
                self._urgent.put(inbound)
            return
        if self._overflow is not None:
            self._reader_first.reader(behind=getattr(client, "backlogged", False))
            if not self._handoff.try_take():  # full: set aside, and read on to what comes behind
                self._overflow.set_aside(inbound, self._stopping)  # False: stopping, redelivered later
                return
        elif not self._handoff.take(self._stopping):
            return  # stopping: left unacknowledged, the broker redelivers it
        self._queue.put(inbound)

    # worker --------------------------------------------------------------------------------

    def _next_batch(self) -> list[Inbound]:
        """A batch by size and age: what already waits joins at once, then up to the batch's age.

        With set-aside readings to take back, an empty queue is not waited on (that wait, once per
        take-back batch, held a drain's take-back to ~2,000 msg/s)."""
        try:
            # A take-back due (rows waiting and room for them), not merely rows waiting: a lane whose
            # slots urgent messages hold would spin here.
            batch = [self._queue.get(block=not self._overflow_due(), timeout=0.2)]
        except queue.Empty:
            return []
        limit = self.plan.batch_size
        deadline = time.monotonic() + self.plan.batch_interval_s
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
        return batch

    def _run_urgent(self) -> None:
        """The alarm lane's urgent messages: written as they come, with what else is already waiting."""
        urgent = self._urgent
        assert urgent is not None
        while not self._stopping.is_set():
            try:
                batch = [urgent.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < self.plan.batch_size:
                try:
                    batch.append(urgent.get_nowait())
                except queue.Empty:
                    break
            self._write_until_done(batch)
            self._handoff.give_back(len(batch))

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._ack_unread()
            with self._done_lock:
                self._rejects.flush()
            self._reader_first.wait_turn()
            batch = self._next_batch()
            if batch:
                self._write_until_done(batch)
                self._handoff.give_back(len(batch))  # stored (or stopping): paho may read on
            if self._overflow_due():
                self._take_back_overflow()

    def _write_until_done(self, batch: list[Inbound]) -> None:
        attempt = 0
        while True:
            try:
                result = self._write(batch)
            except psycopg.OperationalError as exc:
                # Database away: keep the batch unacknowledged and retry; the broker holds the rest.
                metrics.STORE_ERRORS.inc()
                self._announce_provisional(batch)
                delay = _RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S) - 1)]
                log.warning("ingest %s batch of %d not stored (%s); retrying in %.1fs",
                            self.plan.lane, len(batch), exc, delay)
                attempt += 1
                if self._stopping.wait(delay):
                    return
                continue
            self._ack(batch)
            self._done(result)
            return

    def _done(self, result: BatchResult) -> None:
        with self._done_lock:
            _account(result)
            self._rejects.add(result.dead)
            self.accepted += result.accepted
            self._confirm(result)

    def _overflow_due(self) -> bool:
        """Set-aside rows may wait, and live traffic leaves room to take them back."""
        if self._overflow is None or not self._handoff.keeping_up:
            return False
        if not self._overflow_waiting.is_set() and time.monotonic() >= self._overflow_look_at:
            self._overflow_waiting.set()  # rows a dead worker of the shared subscription left?
        return self._overflow_waiting.is_set()

    def _take_back_overflow(self) -> None:
        """Store one batch of set-aside readings, taken from ``ingest_overflow`` in the same transaction."""
        limit = self._settings.ingest.batch_size  # the routine batch: these readings are all routine
        try:
            with self._pool.connection() as conn, conn.transaction():
                batch = [Inbound(*row) for row in overflow_store.take(conn, limit)]
                result = self._process(conn, batch) if batch else BatchResult()
        except psycopg.OperationalError as exc:
            metrics.STORE_ERRORS.inc()  # left in the table: taken again once the database is back
            log.warning("ingest %s lane could not take back set-aside readings (%s)", self.plan.lane, exc)
            self._overflow_waiting.clear()
            self._overflow_look_at = time.monotonic() + _RETRY_DELAYS_S[-1]
            return
        if len(batch) < limit:
            self._overflow_waiting.clear()
            self._overflow_look_at = time.monotonic() + _OVERFLOW_RECHECK_S
            if self._overflow is not None:
                self._overflow.caught_up()
        self._done(result)

    def _write(self, batch: list[Inbound]) -> BatchResult:
        with self._pool.connection() as conn:
            return self._process(conn, batch)

    def _process(self, conn: Conn, batch: list[Inbound]) -> BatchResult:
        started = time.perf_counter()
        try:
            result = self._processor.process(conn, batch)
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - isolate a poison message, never kill the worker
            # A message the database refuses that the boundary let through must not block the
            # others: bisect the batch down to it (a few transactions, not one per message).
            log.warning("ingest %s batch of %d not stored (%s: %s); isolating the message(s) refused",
                        self.plan.lane, len(batch), type(exc).__name__, exc)
            result = self._write_one_by_one(conn, batch)
        metrics.BATCH_WRITE.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.RECEIVED.inc(len(batch))  # once the batch is done: received = accepted + duplicate + rejected
        return result

    def _write_one_by_one(self, conn: Conn, batch: list[Inbound]) -> BatchResult:
        """Store a batch that failed as a whole: its halves, recursively, down to the refused message(s)."""
        total = BatchResult()
        pending = [batch[: len(batch) // 2], batch[len(batch) // 2:]] if len(batch) > 1 else [batch]
        while pending:
            part = pending.pop(0)
            if not part:
                continue
            try:
                one = self._processor.process(conn, part)
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001 - a message the database refuses: dead-letter it
                if len(part) > 1:
                    half = len(part) // 2
                    pending[:0] = [part[:half], part[half:]]  # in arrival order
                    continue
                dead = DeadLetter(part[0], RejectReason.STORAGE_REJECTED.value,
                                  f"could not be stored: {type(exc).__name__}: {exc}".strip())
                with conn.transaction():
                    store_dead_letters(conn, [dead])
                one = BatchResult(dead=[dead])
            total.accepted += one.accepted
            total.duplicates += one.duplicates
            total.dead += one.dead
            total.alerts += one.alerts
            total.stored_keys += one.stored_keys
        return total

    def _ack(self, batch: list[Inbound]) -> None:
        # A mid belongs to one connection; after a reconnect the broker redelivers instead.
        generation = self._generation
        self._send_acks([m.mid for m in batch if m.qos == 1 and m.generation == generation])

    def _confirm(self, result: BatchResult) -> None:
        """Tell each agent what this committed batch holds for it (gateway/ingest/confirm.py).

        After the commit, so a confirmation is never ahead of the database; gathered for up to
        ``FLUSH_S`` (one message per site, not per batch); lost (a broker crash, a lost
        connection), it only costs the agent a resend, which is stored once.
        """
        if not self._settings.ingest.agent_ack or self._client is None:
            return
        if self._confirmer is None:
            self._confirmer = Confirmer(self._publish_ack, name=f"confirm-{self.plan.lane}")
            self._confirmer.start()
        self._confirmer.add(result.stored_keys, [d.message for d in result.dead])

    def _publish_ack(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is not None:
            # Not connected: paho keeps a QoS 1 message for the next connection; no harm either way.
            client.publish(topic, payload, qos=1, retain=False)
            metrics.AGENT_ACKS.inc()

    def _ack_unread(self) -> None:
        unread, generation = self._unread, self._generation
        mids = []
        while unread:
            try:  # both paho's thread (when many wait) and the worker flush: each mid is popped once
                of, mid = unread.popleft()
            except IndexError:
                break
            if of == generation:
                mids.append(mid)
        self._send_acks(mids)

    def _send_acks(self, mids: list[int]) -> None:
        if self._client is not None and self.connected:
            ack_all(self._client, mids)

    # issue 15: alarms while the database is away -------------------------------------------

    def _announce_provisional(self, batch: list[Inbound]) -> None:
        """Push the batch's fire alarms as provisional alerts (once per batch and key); the batch
        itself stays unacknowledged until it commits (gateway/ingest/provisional.py)."""
        if not self._settings.ingest.provisional_alerts:
            return
        provisional: ProvisionalAlarms | None = getattr(self._provisional, "alarms", None)
        if provisional is None:
            provisional = self._provisional.alarms = ProvisionalAlarms(self._publish_provisional)
        try:
            provisional.announce(batch)
        except Exception:  # never let it stop the retry of the batch
            log.exception("provisional alerts not published")

    def _publish_provisional(self, topic: str, payload: str) -> bool:
        client = self._client
        if client is None or not self.connected:
            return False
        return client.publish(topic, payload, qos=1).rc == mqtt.MQTT_ERR_SUCCESS


def _skip_catch_all(topic: str) -> bool:
    """What a routine lane on sg/v1/# leaves unread: the alarm lane's and our own confirmations."""
    return is_alarm_topic(topic) or is_ack_topic(topic)


def _urgent(payload: bytes) -> bool:
    """A smoke or exit reading that is not plainly normal / clear, or an agent status.

    A byte search, not a parse (this runs on paho's thread, for four messages in five; written
    out, not ``any()`` over a tuple, whose generator cost 6 % of a storm's samples): a payload it
    misjudges is only ordered differently, never handled differently, and the rules judge by ``ts``.
    """
    return b'"normal"' not in payload and b'"clear"' not in payload


def _account(result: BatchResult) -> None:
    metrics.ACCEPTED.inc(result.accepted)
    metrics.DUPLICATES.inc(result.duplicates)
    for dead in result.dead:
        metrics.REJECTED.labels(dead.code).inc()  # logged per reason, with a count (_RejectLog)
    for recorded in result.alerts:
        metrics.ALERT_CHANGES.labels(recorded.alert["kind"], recorded.alert["state"]).inc()


class IngestService:
    """Both lanes of one ingest worker (``safeguard ingest``, or inside ``safeguard serve``)."""

    def __init__(
        self, settings: Settings, pool: ConnectionPool[Conn], *, worker_id: str | None = None
    ) -> None:
        reader_first = ReaderFirst()  # one per process: its lanes share one interpreter lock
        self.lanes = [_LaneWorker(settings, pool, plan, reader_first) for plan in lane_plans(settings, worker_id)]

    @property
    def connected(self) -> bool:
        return all(lane.connected for lane in self.lanes)

    def start(self) -> None:
        for lane in self.lanes:
            lane.start()

    def stop(self) -> None:
        for lane in self.lanes:
            lane.stop()

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(lane.wait_connected(max(0.0, deadline - time.monotonic())) for lane in self.lanes)
