"""The agent's MQTT side: retained birth and Last Will, readings through the durable outbox.

Flow (issue 3, point 5; DESIGN section 3)::

    send() --validate--> Outbox.put (fsynced)      drain thread --publish QoS 1--> broker --> gateway
                                                    ^                                  |          |
                                 Outbox.sent <------+------- PUBACK (on_publish: mid) --+          |
                                 Outbox.confirm <--- sg/v1/{site}/agent/ack (seq ranges) <----------+

- ``send`` builds the contract payload (``ts``, ``boot``, ``seq`` + fields), validates it
  with :mod:`protocol.messages` and puts it in the outbox. It never touches the network.
- One drain thread owns the connection. Per connection it creates a fresh paho client (so
  paho holds no stale in-flight messages of its own that it would resend after
  a reconnect, out of our order), waits for a successful CONNACK, publishes the retained
  birth, then publishes the outbox in send order (``Outbox.peek_priority``: each smoke and
  exit device's current state, alarms first, then the other alarms and states, snapshots,
  heartbeats; DESIGN section 2 "Alarms first") with at most ``window`` messages
  unacknowledged, where window = min(max_in_flight, the broker's MQTT 5 Receive Maximum).
  paho numbers messages with 16-bit ids and refuses a publish whose id is still in flight
  (``info.rc`` = MQTT_ERR_QUEUE_SIZE, nothing raised), hence the bound.
- Every time there is room in the window the drain asks the outbox again for the first
  entries in send order that are not in flight, so an alarm put while a backlog drains
  waits for one window at most, not for the heartbeats queued before it.
- A reading leaves the outbox only when the gateway confirmed it (issue 15): it publishes,
  after each commit, the ``seq`` ranges it stored or dead-lettered on
  ``sg/v1/{site}/agent/ack``, to which the publisher subscribes on every connection. The
  PUBACK only means "the broker has it" (the broker may hold it in memory and crash):
  ``Outbox.sent`` then keeps the entry with a time to send it again, ``ack_timeout_s``
  doubled per attempt up to ``ack_timeout_max_s``, unless a confirmation deletes it first.
  Snapshots (no ``seq``) are done at their PUBACK. ``gateway_ack=False`` (a gateway older
  than the confirmation) goes back to "done at the PUBACK". After a reconnect (or an
  agent restart over the same file) everything not acknowledged is sent again, in send
  order. Duplicates are possible and harmless: the gateway stores each
  ``(site, device, boot, seq)`` once. An MQTT 5 PUBACK with a failure reason (an ACL
  refusal) is final: the entry is deleted, logged and counted, not resent forever.
- A confirmation that is not valid (malformed, over ``ACK_MAX_BYTES``, on another site's
  topic) is logged, counted (``bad_acks``) and ignored; it can delete nothing.
- paho callbacks only hand off (a queue and an event); the outbox is touched by the
  drain thread and by ``send`` only.
- Bad credentials (CONNACK "bad user name or password" / "not authorized") stop the
  retries: the error is logged and kept in :attr:`Publisher.error`; the outbox keeps
  the messages for the next start.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.outbox import Kind, Outbox
from protocol.messages import (
    MAX_PAYLOAD_BYTES,
    AgentAck,
    AgentStatus,
    DeclaredDevice,
    ExitReading,
    Heartbeat,
    SmokeReading,
    SmokeState,
    StreamState,
    decode_ack,
    encode,
)
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client
from protocol.topics import MessageType, ack_topic, device_topic, status_topic

log = logging.getLogger(__name__)

_MODELS: dict[MessageType, type[Heartbeat | SmokeReading | ExitReading]] = {
    MessageType.HEARTBEAT: Heartbeat,
    MessageType.SMOKE: SmokeReading,
    MessageType.EXIT: ExitReading,
}
_JPEG_MAGIC = b"\xff\xd8\xff"
MAX_MID = 65_535  # MQTT packet identifiers are 16 bits, 0 is not used
# CONNACK reasons after which retrying cannot help (MQTT 5 codes 134/135; 3.1.1 return codes 4/5).
_AUTH_FAILURES = frozenset({"Bad user name or password", "Not authorized"})
_WAKE_S = 1.0  # the drain thread's longest sleep when nothing wakes it (a safety net, not polling)
# Readings that state a device's safety state: the newest one per device goes first after an outage.
_STATE_TYPES = frozenset({MessageType.SMOKE, MessageType.EXIT})
_REQUEUE_EVERY_S = 1.0  # how often entries past their resend time go back to be sent


class PublisherError(RuntimeError):
    """The publisher gave up (bad credentials); the message says why."""


@dataclass(frozen=True, slots=True)
class PublisherStats:
    connected: bool
    connects: int  # successful CONNACKs
    published: int  # PUBLISH packets handed to paho (resends included)
    acked: int  # outbox entries deleted on PUBACK
    refused: int  # publishes paho refused (info.rc != success); the entry stays and is retried
    rejected: int  # MQTT 5 PUBACKs with a failure reason (e.g. not authorized): deleted, logged
    in_flight: int  # published, PUBACK not yet seen
    max_in_flight_seen: int  # high-water mark of in_flight
    window: int  # current in-flight bound: min(max_in_flight, broker Receive Maximum)
    backlog: int  # entries in the outbox (awaiting the gateway's confirmation included)
    confirmed: int = 0  # outbox entries deleted by the gateway's confirmation (stored or duplicate)
    gateway_refused: int = 0  # outbox entries the gateway confirmed as dead-lettered: deleted, logged
    resent: int = 0  # entries sent again because no confirmation came in time
    bad_acks: int = 0  # confirmations ignored: malformed, too big, or on another site's topic


class _Connection:
    """One paho client for one connection; its callbacks only record and wake."""

    def __init__(self, client: mqtt.Client, wake: threading.Event, ack_topic: str | None) -> None:
        self.client = client
        self.wake = wake
        self.ack_topic = ack_topic
        self.connack = threading.Event()
        self.reason: ReasonCode | None = None
        self.receive_maximum: int | None = None
        self.lost = threading.Event()
        self.acks: queue.SimpleQueue[tuple[int, ReasonCode | None]] = queue.SimpleQueue()
        self.confirmations: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, props: Any) -> None:
        if self.ack_topic is not None and not reason.is_failure:
            # Sent before any of our publishes on this socket, so the broker has the subscription
            # before the gateway can confirm one of them. A clean session: confirmations published
            # while we were away are lost, and those readings are sent again after their timeout.
            client.subscribe(self.ack_topic, qos=1)
        self.reason = reason
        self.receive_maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self.connack.set()
        self.wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, _reason: Any, _props: Any) -> None:
        self.lost.set()
        self.wake.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode | None, _props: Any) -> None:
        self.acks.put((mid, reason))
        self.wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.confirmations.put((message.topic, bytes(message.payload)))
        self.wake.set()


class Publisher:
    """Publishes a site's messages through a durable outbox; see the module docstring.

    ``version`` is the MQTT protocol version (a setting: the demo broker speaks 3.1.1 only).
    ``heartbeat_s`` is the interval the agent promises in its birth; ``devices`` are
    declared in every birth. ``client_id`` must be stable and unique per site.
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        site: str,
        version: MqttVersion,
        outbox: Outbox,
        *,
        heartbeat_s: int,
        devices: Sequence[DeclaredDevice],
        client_id: str,
        max_in_flight: int = 100,
        agent_version: str,
        keepalive_s: int = 30,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        gateway_ack: bool = True,
        ack_timeout_s: float = 60.0,
        ack_timeout_max_s: float = 900.0,
    ) -> None:
        if not 1 <= max_in_flight <= MAX_MID:
            raise ValueError(f"max_in_flight must be within 1..{MAX_MID}, got {max_in_flight}")
        if not 0 < ack_timeout_s <= ack_timeout_max_s:
            raise ValueError(f"need 0 < ack_timeout_s <= ack_timeout_max_s, got {ack_timeout_s}, {ack_timeout_max_s}")
        self.endpoint = endpoint
        self.site = site
        self.version = version
        self.outbox = outbox
        self.heartbeat_s = heartbeat_s
        self.devices = tuple(devices)
        self.client_id = client_id
        self.max_in_flight = max_in_flight
        self.agent_version = agent_version
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.connect_timeout_s = connect_timeout_s
        self.status_topic = status_topic(site)  # validates the site id now
        self.ack_topic = ack_topic(site)
        self.gateway_ack = gateway_ack
        self.ack_timeout_s = ack_timeout_s
        self.ack_timeout_max_s = ack_timeout_max_s
        self.boot = ""
        self.error: PublisherError | None = None
        self._seq: dict[str, int] = {}
        self._send_lock = threading.Lock()  # seq order == outbox order per device
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: _Connection | None = None
        self._window = max_in_flight
        self._in_flight: dict[int, int | None] = {}  # mid -> outbox id (None: a status message)
        self._stats_lock = threading.Lock()
        self._connects = self._published = self._acked = self._refused = self._high_water = 0
        self._rejected = 0
        self._confirmed = self._gateway_refused = self._resent = self._bad_acks = 0
        self._next_requeue = 0.0
        self._warned_unconfirmed = False
        self._stop_timeout = 5.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """A new boot: fresh ``boot`` id, ``seq`` from 0; connects in the background."""
        if self._thread is not None:
            raise RuntimeError("publisher already started")
        self.boot = uuid.uuid4().hex[:16]
        self._seq.clear()
        self.error = None
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"publisher-{self.site}", daemon=True)
        self._thread.start()

    def stop(self, *, drain_s: float = 0.0, timeout: float = 5.0) -> None:
        """Clean shutdown: optionally wait up to ``drain_s`` for the outbox to empty, then (if
        connected) publish the retained offline status and disconnect. What is left stays in
        the outbox for the next start."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + drain_s
        while drain_s > 0 and len(self.outbox) and self.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop_timeout = timeout
        self._stopping.set()
        self._wake.set()
        thread.join(timeout + self.connect_timeout_s + 5)
        if thread.is_alive():
            log.error("publisher thread of %s did not stop", self.site)
        self._thread = None

    @property
    def connected(self) -> bool:
        """True only between a successful CONNACK and the loss of that connection."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stats(self) -> PublisherStats:
        with self._stats_lock:
            return PublisherStats(
                connected=self.connected, connects=self._connects, published=self._published,
                acked=self._acked, refused=self._refused, rejected=self._rejected, in_flight=len(self._in_flight),
                max_in_flight_seen=self._high_water, window=self._window, backlog=len(self.outbox),
                confirmed=self._confirmed, gateway_refused=self._gateway_refused, resent=self._resent,
                bad_acks=self._bad_acks,
            )

    # ------------------------------------------------------------------ building messages

    def next_seq(self, device: str) -> int:
        """The next ``seq`` of ``device`` in this boot (0 first); consumes it."""
        with self._send_lock:
            seq = self._seq.get(device, -1) + 1
            self._seq[device] = seq
            return seq

    def send(
        self,
        device: str,
        message_type: MessageType,
        fields: Mapping[str, Any],
        *,
        ts: float | None = None,
        kind: Kind | None = None,
    ) -> int:
        """Validate and queue one reading; returns its ``seq``. Raises ValueError if invalid.

        ``kind`` (the outbox's drop class) defaults to: a smoke ``alarm`` -> alarm, a camera
        heartbeat -> heartbeat, anything else -> state. A device adapter that repeats an
        unchanged state every ``heartbeat_s`` may pass ``Kind.HEARTBEAT`` for the repeats.
        """
        if not self.boot:
            raise RuntimeError("send() before start(): there is no boot id yet")
        model = _MODELS.get(message_type)
        if model is None:
            raise ValueError(f"{message_type} is not a reading type (use send_snapshot for snapshots)")
        topic = device_topic(self.site, device, message_type)
        with self._send_lock:
            seq = self._seq.get(device, -1) + 1
            body = {**fields, "ts": time.time() if ts is None else ts, "boot": self.boot, "seq": seq}
            # Validate the very bytes that go on the wire, as the gateway will (JSON mode: "ok" is a
            # StreamState there, and NaN is refused). Raises pydantic.ValidationError (a ValueError).
            payload = json.dumps(body, separators=(",", ":")).encode()
            reading = model.model_validate_json(payload)
            if kind is None:
                kind = _default_kind(reading)
            self.outbox.put(topic, payload, kind=kind, state_of=device if message_type in _STATE_TYPES else None,
                            key=(device, self.boot, seq))
            self._seq[device] = seq  # consumed only once the message is safely queued
        self._wake.set()
        return seq

    def send_snapshot(self, device: str, jpeg: bytes) -> None:
        if not jpeg.startswith(_JPEG_MAGIC):
            raise ValueError("snapshot is not a JPEG image")
        if len(jpeg) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"snapshot is {len(jpeg)} bytes, the contract's limit is {MAX_PAYLOAD_BYTES}")
        self.outbox.put(device_topic(self.site, device, MessageType.SNAPSHOT), jpeg, kind=Kind.SNAPSHOT)
        self._wake.set()

    def _status(self, *, online: bool) -> bytes:
        if not online:
            return encode(AgentStatus(online=False, ts=time.time(), boot=self.boot))
        return encode(AgentStatus(
            online=True, ts=time.time(), boot=self.boot, agent_version=self.agent_version,
            heartbeat_s=self.heartbeat_s, devices=self.devices,
        ))

    # ------------------------------------------------------------------ the drain thread

    def _run(self) -> None:
        delay = self.reconnect_min_s
        try:
            while not self._stopping.is_set():
                conn = self._connect()
                if conn is None:
                    if self.error is not None:
                        return
                    self._sleep(delay)
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
                delay = self.reconnect_min_s
                try:
                    self._serve(conn)
                finally:
                    self._close(conn)
        except Exception:  # the thread must not die silently
            log.exception("publisher of %s failed", self.site)
            raise

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _connect(self) -> _Connection | None:
        """A fresh client, connected and accepted by the broker, or None (``error`` set if fatal)."""
        client = new_client(self.endpoint, self.client_id, self.version)
        will = encode(AgentStatus(online=False, boot=self.boot))  # no ts: the gateway uses its arrival
        client.will_set(self.status_topic, will, qos=1, retain=True)
        client.max_inflight_messages_set(self.max_in_flight)  # we bound in-flight ourselves
        client.max_queued_messages_set(0)
        # paho's own reconnect is not used (one client per connection), keep it from racing ours.
        client.reconnect_delay_set(min_delay=3600, max_delay=3600)
        conn = _Connection(client, self._wake, self.ack_topic if self.gateway_ack else None)
        try:
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=self.keepalive_s)
        except (OSError, ValueError) as exc:
            log.warning("cannot reach broker %s: %s", self.endpoint, exc)
            return None
        client.loop_start()
        deadline = time.monotonic() + self.connect_timeout_s
        while not conn.connack.is_set() and not conn.lost.is_set():
            if self._stopping.is_set() or time.monotonic() > deadline:
                break
            conn.connack.wait(0.1)
        reason = conn.reason
        if reason is None or reason.is_failure:
            self._close(conn)
            if reason is not None and str(reason) in _AUTH_FAILURES:
                self.error = PublisherError(
                    f"broker {self.endpoint} refused the agent of site {self.site}: {reason}; "
                    "not retrying -- check the broker URL's user name and password"
                )
                log.error("%s", self.error)
            elif not self._stopping.is_set():
                log.warning("broker %s did not accept the connection: %s", self.endpoint, reason or "no CONNACK")
            return None
        self._window = min(self.max_in_flight, conn.receive_maximum or self.max_in_flight)
        with self._stats_lock:
            self._connects += 1
        self._connected.set()
        log.info("connected to %s as %s (boot %s, window %d)", self.endpoint, self.client_id, self.boot,
                 self._window)
        return conn

    def _serve(self, conn: _Connection) -> None:
        """Birth, then drain the outbox in send order until the connection is lost or we stop."""
        self._publish(conn, self.status_topic, self._status(online=True), retain=True, entry_id=None)
        while not conn.lost.is_set():
            self._wake.clear()
            self._take_confirmations(conn)
            self._take_acks(conn)
            self._requeue()
            if self._stopping.is_set():
                self._go_offline(conn)
                return
            room = self._window - len(self._in_flight)
            if room > 0:
                # Not a cursor: an entry put since the last peek may belong ahead of the ones
                # left (a live alarm). In-flight entries stay in the outbox until their PUBACK.
                in_flight = [i for i in self._in_flight.values() if i is not None]
                for entry in self.outbox.peek_priority(room, skip=in_flight):
                    if not self._publish(conn, entry.topic, entry.payload, retain=entry.retain, entry_id=entry.id):
                        break
            self._wake.wait(_WAKE_S)

    def _publish(self, conn: _Connection, topic: str, payload: bytes, *, retain: bool, entry_id: int | None) -> bool:
        info = conn.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho does not raise: a refused publish (no connection, or a message id still
            # in flight) is only visible here. The entry stays in the outbox for the next try.
            with self._stats_lock:
                self._refused += 1
            log.warning("publish on %s refused by paho: %s", topic, mqtt.error_string(info.rc))
            conn.lost.set()
            return False
        with self._stats_lock:
            self._in_flight[info.mid] = entry_id
            self._published += 1
            self._high_water = max(self._high_water, len(self._in_flight))
        return True

    def _take_acks(self, conn: _Connection) -> None:
        done: list[int] = []
        refused: list[int] = []
        while True:
            try:
                mid, reason = conn.acks.get_nowait()
            except queue.Empty:
                break
            with self._stats_lock:
                entry_id = self._in_flight.pop(mid, None)
            if reason is not None and reason.is_failure:
                # The broker answered and refused this message (MQTT 5 PUBACK reason, e.g. an ACL):
                # sending it again would be refused again and block everything behind it.
                with self._stats_lock:
                    self._rejected += 1
                log.error("broker rejected outbox entry %s: %s; dropped", entry_id, reason)
                if entry_id is not None:
                    refused.append(entry_id)
            elif entry_id is not None:
                done.append(entry_id)
        if refused:
            self.outbox.ack(refused)
        if done and self.gateway_ack:
            # The broker has them; readings stay until the gateway confirms (or their resend time).
            self.outbox.sent(done, timeout_s=self.ack_timeout_s, max_timeout_s=self.ack_timeout_max_s)
            with self._stats_lock:
                self._acked += len(done)
        elif done:
            deleted = self.outbox.ack(done)
            with self._stats_lock:
                self._acked += deleted

    def _take_confirmations(self, conn: _Connection) -> None:
        while True:
            try:
                topic, payload = conn.confirmations.get_nowait()
            except queue.Empty:
                return
            self.confirm(topic, payload)

    def confirm(self, topic: str, payload: bytes) -> None:
        """Apply one confirmation from the gateway (the drain thread calls it for each one that
        arrives); a bad one is logged and counted, never raised: it must not stop the drain."""
        if topic != self.ack_topic:
            self._bad_ack(f"on {topic!r}, not this site's {self.ack_topic!r}")
            return
        try:
            ack: AgentAck = decode_ack(payload)
        except ValueError as exc:
            self._bad_ack(f"{exc} (payload {payload[:80]!r})")
            return
        confirmed = self.outbox.confirm((d.device, d.boot, d.seq) for d in ack.acks)
        refused = self.outbox.confirm((d.device, d.boot, d.refused) for d in ack.acks if d.refused)
        with self._stats_lock:
            self._confirmed += confirmed
            self._gateway_refused += refused
        if refused:
            devices = ", ".join(sorted({d.device for d in ack.acks if d.refused}))
            log.error("the gateway refused %d of our readings (devices %s): they are in its dead letters; "
                      "deleted from the outbox, not sent again", refused, devices)
        self._wake.set()  # room in the outbox: nothing else to do, but stop() may be waiting

    def _bad_ack(self, why: str) -> None:
        with self._stats_lock:
            self._bad_acks += 1
        log.warning("ignored a confirmation %s", why)

    def _requeue(self) -> None:
        """Readings the broker took but the gateway did not confirm by their resend time go again."""
        if not self.gateway_ack:
            return
        now = time.monotonic()
        if now < self._next_requeue:
            return
        self._next_requeue = now + _REQUEUE_EVERY_S
        again = self.outbox.requeue_due()
        if not again:
            return
        with self._stats_lock:
            self._resent += again
            never = self._confirmed + self._gateway_refused == 0
        log.info("%d readings not confirmed by the gateway in time; sending them again", again)
        if never and not self._warned_unconfirmed:
            self._warned_unconfirmed = True
            log.warning(
                "the gateway has confirmed nothing since this agent started (%s): readings stay in the outbox "
                "and are sent again with backoff. If the gateway predates confirmations (sg/v1/%s/agent/ack), "
                "set outbox.gateway_ack: false; if the broker's ACL does not let this site read that topic, fix "
                "the ACL (docs/operations.md)", self.ack_topic, self.site,
            )

    def _go_offline(self, conn: _Connection) -> None:
        """A clean stop says so (a clean DISCONNECT does not fire the Will)."""
        try:
            info = conn.client.publish(self.status_topic, self._status(online=False), qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                info.wait_for_publish(self._stop_timeout)
        except (RuntimeError, ValueError) as exc:
            log.warning("offline status not confirmed by the broker: %s", exc)
        self._take_acks(conn)

    def _close(self, conn: _Connection) -> None:
        """Disconnect and stop the client's thread; acks that arrived still count; the rest is resent."""
        self._connected.clear()
        conn.client.disconnect()
        conn.client.loop_stop()
        self._take_confirmations(conn)
        self._take_acks(conn)
        with self._stats_lock:
            left = len(self._in_flight)
            self._in_flight.clear()
        if left and not self._stopping.is_set():
            log.info("connection to %s lost with %d messages unacknowledged; they will be resent",
                     self.endpoint, left)


def _default_kind(reading: Heartbeat | SmokeReading | ExitReading) -> Kind:
    if isinstance(reading, SmokeReading) and reading.state is SmokeState.ALARM:
        return Kind.ALARM
    if isinstance(reading, Heartbeat) and reading.stream is StreamState.OK:
        return Kind.HEARTBEAT  # routine; a stream fault (frozen, dark, lost) is a state change
    return Kind.STATE
