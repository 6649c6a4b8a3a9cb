"""The MQTT side of ingest: a persistent session handing messages to one worker thread.

The paho callback only enqueues (STYLE habit 1). The worker forms batches by size
and by age, writes each in one transaction, and only then acknowledges the
messages (paho manual ack), so nothing is lost if the process dies mid-batch.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from psycopg_pool import ConnectionPool

from gateway import metrics
from gateway.config import Settings
from gateway.ingest.batch import BatchProcessor, BatchResult, DeadLetter, Inbound, Rules, store_dead_letters
from gateway.store.db import Conn
from protocol import SUBSCRIPTION, is_alert_topic
from protocol.mqtt import MqttVersion, connect_properties, new_client

log = logging.getLogger(__name__)

_RETRY_DELAYS_S = (0.5, 1, 2, 5, 10)


class IngestService:
    def __init__(self, settings: Settings, pool: ConnectionPool[Conn], *, client_id: str | None = None) -> None:
        self._settings = settings
        self._pool = pool
        # Workers sharing a subscription need distinct, stable ids (one persistent session each).
        suffix = f"-{socket.gethostname()}" if settings.mqtt_shared_group else ""
        self._client_id = client_id or f"{settings.mqtt_client_id}-ingest{suffix}"
        self._queue: queue.Queue[Inbound] = queue.Queue()
        self._processor = BatchProcessor(
            Rules(settings.missed_heartbeats, settings.default_heartbeat_s, settings.battery_low_pct)
        )
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._generation = 0
        self._worker: threading.Thread | None = None
        self._client: mqtt.Client | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        settings = self._settings
        endpoint = settings.mqtt
        client = new_client(endpoint, self._client_id, settings.mqtt_version, persistent=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if settings.mqtt_version is MqttVersion.V5:
            # Receive Maximum >= batch size, or Mosquitto stops at 20 unacked messages (DESIGN section 2).
            props = connect_properties(
                session_expiry_s=settings.mqtt_session_expiry_s,
                receive_maximum=min(65_535, max(100, settings.batch_size * 2)),
            )
            client.connect_async(endpoint.host, endpoint.port, keepalive=30, clean_start=False, properties=props)
        else:
            client.connect_async(endpoint.host, endpoint.port, keepalive=30)
        self._client = client
        self._worker = threading.Thread(target=self._run, name="ingest-worker", daemon=True)
        self._worker.start()
        client.loop_start()
        log.info("ingest connecting to %s as %s", endpoint, self._client_id)

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; unacknowledged messages stay with the broker."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # paho callbacks: hand off, nothing else -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the ingest connection: %s", reason)
            return
        self._generation += 1
        group = self._settings.mqtt_shared_group
        client.subscribe(f"$share/{group}/{SUBSCRIPTION}" if group else SUBSCRIPTION, qos=1)
        self._connected.set()
        log.info("ingest connected (session present: %s)", getattr(_flags, "session_present", None))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("ingest lost the broker (%s); paho reconnects", reason)

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if is_alert_topic(message.topic):  # our own output
            client.ack(message.mid, message.qos)
            return
        metrics.RECEIVED.inc()
        self._queue.put(
            Inbound(message.topic, bytes(message.payload), time.time(), message.mid, message.qos, self._generation)
        )

    # worker --------------------------------------------------------------------------------

    def _next_batch(self) -> list[Inbound]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._settings.batch_interval_s
        while len(batch) < self._settings.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if batch:
                self._write_until_done(batch)

    def _write_until_done(self, batch: list[Inbound]) -> None:
        attempt = 0
        while True:
            try:
                result = self._write(batch)
            except psycopg.OperationalError as exc:
                # Database away: keep the batch unacknowledged and retry; the broker holds the rest.
                metrics.STORE_ERRORS.inc()
                delay = _RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S) - 1)]
                log.warning("ingest batch of %d not stored (%s); retrying in %.1fs", len(batch), exc, delay)
                attempt += 1
                if self._stopping.wait(delay):
                    return
                continue
            self._account(result)
            self._ack(batch)
            return

    def _write(self, batch: list[Inbound]) -> BatchResult:
        started = time.perf_counter()
        with self._pool.connection() as conn:
            try:
                result = self._processor.process(conn, batch)
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001 - isolate a poison message, never kill the worker
                # A message the database refuses (e.g. \u0000 in a JSON string) must not block
                # the others: store the batch message by message, dead-lettering what fails.
                log.warning("batch not stored (%s); storing message by message", exc)
                result = self._write_one_by_one(conn, batch)
        metrics.BATCH_WRITE.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        return result

    def _write_one_by_one(self, conn: Conn, batch: list[Inbound]) -> BatchResult:
        total = BatchResult()
        for message in batch:
            try:
                one = self._processor.process(conn, [message])
            except psycopg.OperationalError:
                raise
            except Exception as exc:
                log.exception("message on %s could not be stored", message.topic)
                dead = DeadLetter(message, "storage_rejected", f"could not be stored: {exc}".strip())
                with conn.transaction():
                    store_dead_letters(conn, [dead])
                one = BatchResult(dead=[dead])
            total.accepted += one.accepted
            total.duplicates += one.duplicates
            total.dead += one.dead
            total.alerts += one.alerts
        return total

    @staticmethod
    def _account(result: BatchResult) -> None:
        metrics.ACCEPTED.inc(result.accepted)
        metrics.DUPLICATES.inc(result.duplicates)
        for dead in result.dead:
            metrics.REJECTED.labels(dead.code).inc()
            log.warning("rejected %s: %s: %s", dead.message.topic, dead.code, dead.reason)
        for recorded in result.alerts:
            metrics.ALERT_CHANGES.labels(recorded.alert["kind"], recorded.alert["state"]).inc()

    def _ack(self, batch: list[Inbound]) -> None:
        client = self._client
        if client is None:
            return
        for message in batch:
            # A mid belongs to one connection; after a reconnect the broker redelivers instead.
            if message.qos > 0 and message.generation == self._generation:
                client.ack(message.mid, message.qos)
