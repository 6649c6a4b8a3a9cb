"""Server-Sent Events of alert changes, fed by PostgreSQL LISTEN/NOTIFY.

Each API process runs one :class:`AlertHub`: one LISTEN connection (and one to fetch the rows it
names) that learns the ids of committed ``alert_history`` rows and fans each row out to every
connected stream, so any number of streams and API replicas cost the database two connections per
process. Built to hold many clients (issue 15):

* a client reconnecting with ``Last-Event-ID`` first gets what it missed, read from the table in
  pages through the app's pool, at most ``sse_replay_concurrency`` resumes at a time (the others
  wait their turn; none opens a connection of its own, none is turned away);
* each stream has a bounded queue (``sse_client_queue`` changes): a client that does not read
  fills it, and its stream is then ended, so the server holds a bounded amount for it; the client
  reconnects with ``Last-Event-ID`` and the replay gives it the rest;
* provisional alerts (raised by ingest while the database is away, published on
  ``sg/v1/alerts/{site}``) come in through :class:`ProvisionalFeed`, an MQTT subscriber, and go
  out on the same streams, without an SSE id (docs/api.md, "Provisional alerts").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import paho.mqtt.client as mqtt
import psycopg
from prometheus_client import Counter, Gauge
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.auth import Principal
from gateway.config import Settings
from gateway.store import history as history_store
from gateway.store.db import AsyncConn, Conn
from protocol import ALERTS_FILTER, alert_key
from protocol.mqtt import new_client

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
REPLAY_PAGE = 500
_REPLAY_WAIT_S = 30.0  # a resume waits this long for a pooled connection once its turn came
_BACKFILL_PAGE = 1000
_PROVISIONAL_KEPT = 1000  # provisional alerts remembered for streams that start later

STREAMS = Gauge("sg_sse_streams", "SSE streams connected to this API process")
DROPPED = Counter("sg_sse_dropped_total", "SSE streams ended because their client did not read")
REPLAYED = Counter("sg_sse_replayed_total", "Alert changes replayed to resuming SSE streams")
PROVISIONAL_PUSHED = Counter("sg_sse_provisional_total", "Provisional alerts pushed to SSE streams")


@dataclass(frozen=True, slots=True)
class Change:
    """One committed alert change, its event text made once for every stream."""

    id: int | None  # None: a provisional alert (no change id: it is not stored yet)
    site: str
    key: str
    text: bytes

    @classmethod
    def of(cls, row: dict[str, Any]) -> Change:
        alert = row["alert"]
        data = json.dumps({**alert, "change_id": row["id"]}, ensure_ascii=False)  # as the MQTT relay's
        return cls(row["id"], row["site"], _key_of(alert), f"event: alert\nid: {row['id']}\ndata: {data}\n\n".encode())

    @classmethod
    def provisional(cls, alert: dict[str, Any]) -> Change:
        # No ``id:`` line: the browser keeps its Last-Event-ID, which must stay a stored change's id.
        data = json.dumps(alert, ensure_ascii=False)
        return cls(None, alert["site"], _key_of(alert), f"event: alert\ndata: {data}\n\n".encode())


def _key_of(alert: dict[str, Any]) -> str:
    key = alert.get("key")  # rows written before issue 15 have none: the same key, from its parts
    return key if isinstance(key, str) else alert_key(alert["site"], alert.get("device"), alert["kind"])


@dataclass(eq=False)
class _Stream:
    principal: Principal
    queue: asyncio.Queue[Change]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class AlertHub:
    def __init__(self, settings: Settings, pool: ConnectionPool[Conn]) -> None:
        self._url = settings.database.url
        self._pool = pool
        self._queue_size = settings.api.sse_client_queue
        self._replay_slots = asyncio.Semaphore(settings.api.sse_replay_concurrency)
        self._clients: set[_Stream] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_id: int | None = None  # newest change pushed; None until first connected
        self._provisional: OrderedDict[str, Change] = OrderedDict()
        self.listening = asyncio.Event()

    @property
    def streams(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in list(self._clients):
            client.dropped.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.OperationalError, OSError) as exc:
                self.listening.clear()
                log.warning("alert hub lost the database (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        async with (
            await psycopg.AsyncConnection.connect(self._url, autocommit=True) as listen,
            await psycopg.AsyncConnection.connect(self._url, autocommit=True, row_factory=dict_row) as fetch,
        ):
            await history_store.listen_async(listen)
            if self._last_id is None:  # first start: clients before now resume with Last-Event-ID
                self._last_id = await history_store.latest_change_id_async(fetch)
            else:  # catch up on what committed while we were away, page by page (all of it)
                while True:
                    rows = await history_store.changes_since_async(fetch, self._last_id, site=None,
                                                                   limit=_BACKFILL_PAGE)
                    self._dispatch(rows)
                    if len(rows) < _BACKFILL_PAGE:
                        break
            self.listening.set()
            ids: asyncio.Queue[int] = asyncio.Queue()
            fetcher = asyncio.create_task(self._fetch_loop(fetch, ids))
            try:
                async for notify in listen.notifies():
                    ids.put_nowait(int(notify.payload))
            finally:
                fetcher.cancel()

    async def _fetch_loop(self, fetch: AsyncConn, ids: asyncio.Queue[int]) -> None:
        while True:
            pending = [await ids.get()]
            while not ids.empty() and len(pending) < 1000:  # gather what arrived together
                pending.append(ids.get_nowait())
            rows = await history_store.changes_by_id_async(fetch, pending)
            self._dispatch(rows)

    def _dispatch(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            change = Change.of(row)
            self._last_id = max(self._last_id or 0, row["id"])
            self._provisional.pop(change.key, None)  # stored now: that one replaces the provisional
            self._fan_out(change)

    def push_provisional(self, alert: dict[str, Any]) -> None:
        """A provisional alert from ingest (via MQTT): to every stream that sees its site."""
        change = Change.provisional(alert)
        self._provisional[change.key] = change
        self._provisional.move_to_end(change.key)
        while len(self._provisional) > _PROVISIONAL_KEPT:
            self._provisional.popitem(last=False)
        PROVISIONAL_PUSHED.inc()
        self._fan_out(change)

    def _fan_out(self, change: Change) -> None:
        for client in list(self._clients):
            if not client.principal.sees(change.site):
                continue
            try:
                client.queue.put_nowait(change)
            except asyncio.QueueFull:  # it does not read: end its stream; it resumes with Last-Event-ID
                self._drop(client)

    def _drop(self, client: _Stream) -> None:
        self._clients.discard(client)
        client.dropped.set()
        DROPPED.inc()
        log.warning("SSE stream of %s ended: %d changes queued unread (sse_client_queue)",
                    client.principal.name, client.queue.qsize())

    def open(self, principal: Principal) -> _Stream:
        """Register a stream before its replay, so that no change falls between the two."""
        client = _Stream(principal, asyncio.Queue(self._queue_size))
        self._clients.add(client)
        return client

    def close(self, client: _Stream) -> None:
        self._clients.discard(client)

    def _replay_page(self, site: str | None, after: int) -> list[dict[str, Any]]:
        with self._pool.connection(timeout=_REPLAY_WAIT_S) as conn:
            return history_store.changes_since(conn, after, site=site, limit=REPLAY_PAGE)

    async def _replay(self, principal: Principal, after: int) -> AsyncIterator[list[Change]]:
        """What was committed after ``after``, page by page; a slot is held only while a page is read
        (a slow reader never keeps a resume waiting)."""
        while True:
            async with self._replay_slots:
                rows = await asyncio.to_thread(self._replay_page, principal.site, after)
            if rows:
                REPLAYED.inc(len(rows))
                after = rows[-1]["id"]
                yield [Change.of(row) for row in rows]
            if len(rows) < REPLAY_PAGE:
                return

    async def events(self, client: _Stream, last_event_id: int | None) -> AsyncGenerator[bytes]:
        """The event stream for one client: missed changes first, then live ones, each once."""
        try:
            yield b"retry: 2000\n\n"
            replayed: set[int] = set()
            if last_event_id is not None:
                try:
                    async for page in self._replay(client.principal, last_event_id):
                        replayed.update(change.id for change in page if change.id is not None)
                        yield b"".join(change.text for change in page)
                except psycopg.OperationalError as exc:  # the database away: the client tries again later
                    log.warning("SSE replay for %s ended: %s", client.principal.name, exc)
                    return
            for kept in list(self._provisional.values()):
                if client.principal.sees(kept.site):
                    yield kept.text
            queue = client.queue
            while True:
                if queue.empty():
                    try:
                        first = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    pending = [first]
                else:
                    pending = []
                while not queue.empty():  # what queued meanwhile goes in the same write
                    pending.append(queue.get_nowait())
                # Queued while the replay ran and already in it (ids may commit out of order, so
                # not "id <= last sent": a lower id committed later is new).
                chunk = b"".join(c.text for c in pending if c.id is None or c.id not in replayed)
                if chunk:
                    yield chunk
        finally:
            self.close(client)


class EventStreamResponse(Response):
    """``text/event-stream`` that also ends when the hub drops the stream.

    Starlette's ``StreamingResponse`` waits in ``send`` for as long as a client does not read; this
    one stops waiting when the stream is dropped (its queue full) or the client disconnects.
    """

    media_type = "text/event-stream"

    def __init__(self, hub: AlertHub, client: _Stream, last_event_id: int | None, headers: dict[str, str]) -> None:
        # Not Response.__init__: it would declare a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._hub, self._client, self._last_event_id = hub, client, last_event_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self._client
        STREAMS.inc()
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            finished = False
            async with anyio.create_task_group() as tasks:

                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tasks.cancel_scope.cancel()

                async def until_dropped() -> None:
                    await client.dropped.wait()
                    tasks.cancel_scope.cancel()

                tasks.start_soon(until_disconnect)
                tasks.start_soon(until_dropped)
                body = self._hub.events(client, self._last_event_id)
                try:
                    async for chunk in body:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    finished = True
                except OSError:  # the client went away (ASGI 2.4: send raises, instead of a disconnect)
                    pass
                finally:
                    await body.aclose()
                tasks.cancel_scope.cancel()
            if client.dropped.is_set() or finished:
                # End the response if the socket takes it; a client that reads nothing gets its
                # connection closed by the server instead (uvicorn logs an incomplete response).
                with anyio.move_on_after(1.0), contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            STREAMS.dec()
            self._hub.close(client)


class ProvisionalFeed:
    """The API's MQTT subscription to ``sg/v1/alerts/+``: provisional alerts go to the hub.

    Ingest may run in another process than the API, and while the database is away there is no
    NOTIFY to carry anything; the broker is what both still share. Stored changes come through
    LISTEN/NOTIFY as before, so only messages marked ``"provisional": true`` are taken here.
    """

    def __init__(self, settings: Settings, hub: AlertHub) -> None:
        self._settings = settings
        self._hub = hub
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.subscribed = threading.Event()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        settings = self._settings
        endpoint = settings.mqtt.endpoint
        client = new_client(endpoint, f"{settings.mqtt.client_id}-api-{uuid.uuid4().hex[:8]}", settings.mqtt.version)
        client.on_connect = lambda c, _u, _f, reason, _p: None if reason.is_failure else c.subscribe(ALERTS_FILTER, 1)
        client.on_subscribe = lambda *_a: self.subscribed.set()
        client.on_disconnect = lambda *_a: self.subscribed.clear()
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_async(endpoint.host, endpoint.port, keepalive=30)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if b'"provisional"' not in message.payload:  # stored changes: the hub has them from NOTIFY
            return
        try:
            alert = json.loads(message.payload)
        except ValueError:
            log.warning("unreadable message on %s ignored", message.topic)
            return
        if not (isinstance(alert, dict) and alert.get("provisional") is True and isinstance(alert.get("site"), str)
                and isinstance(alert.get("kind"), str)):
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._hub.push_provisional, alert)

