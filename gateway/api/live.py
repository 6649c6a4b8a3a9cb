"""Server-Sent Events of alert changes, fed by PostgreSQL LISTEN/NOTIFY.

Each API process runs one :class:`AlertHub`: a LISTEN connection that learns the
ids of committed ``alert_history`` rows and fans the rows out to connected
clients, so any number of API replicas push every change. A client reconnecting
with ``Last-Event-ID`` first gets what it missed from the table itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from gateway.auth import Principal
from gateway.store.db import ALERT_CHANNEL

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
_CLIENT_QUEUE = 10_000
_BACKFILL_LIMIT = 10_000
_FETCH = "SELECT id, site, alert FROM alert_history WHERE id = ANY(%s) ORDER BY id"
_SINCE = (
    "SELECT id, site, alert FROM alert_history WHERE id > %(after)s"
    " AND (%(site)s::text IS NULL OR site = %(site)s) ORDER BY id LIMIT %(limit)s"
)


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    site: str
    alert: dict[str, Any]

    def event(self) -> str:
        return f"event: alert\nid: {self.id}\ndata: {json.dumps(self.alert, ensure_ascii=False)}\n\n"


class AlertHub:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._clients: set[asyncio.Queue[Change | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_id: int | None = None  # newest change pushed; None until first connected
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for q in list(self._clients):
            q.put_nowait(None)

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
            await listen.execute(f"LISTEN {ALERT_CHANNEL}")
            if self._last_id is None:  # first start: clients before now resume with Last-Event-ID
                row = await (await fetch.execute("SELECT coalesce(max(id), 0) AS id FROM alert_history")).fetchone()
                self._last_id = row["id"] if row else 0
            else:  # catch up on what committed while we were away
                rows = await (await fetch.execute(_SINCE, {"after": self._last_id, "site": None,
                                                           "limit": _BACKFILL_LIMIT})).fetchall()
                self._dispatch(rows)
            self.listening.set()
            ids: asyncio.Queue[int] = asyncio.Queue()
            fetcher = asyncio.create_task(self._fetch_loop(fetch, ids))
            try:
                async for notify in listen.notifies():
                    ids.put_nowait(int(notify.payload))
            finally:
                fetcher.cancel()

    async def _fetch_loop(self, fetch: psycopg.AsyncConnection[dict[str, Any]], ids: asyncio.Queue[int]) -> None:
        while True:
            pending = [await ids.get()]
            while not ids.empty() and len(pending) < 1000:  # gather what arrived together
                pending.append(ids.get_nowait())
            rows = await (await fetch.execute(_FETCH, (pending,))).fetchall()
            self._dispatch(rows)

    def _dispatch(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            change = Change(row["id"], row["site"], row["alert"])
            self._last_id = max(self._last_id or 0, change.id)
            for q in list(self._clients):
                try:
                    q.put_nowait(change)
                except asyncio.QueueFull:  # a stuck client: end its stream, it resumes with Last-Event-ID
                    self._clients.discard(q)
                    with contextlib.suppress(asyncio.QueueFull):
                        q.put_nowait(None)

    async def stream(self, principal: Principal, last_event_id: int | None) -> AsyncIterator[str]:
        """The event stream for one client: missed changes first, then live ones."""
        q: asyncio.Queue[Change | None] = asyncio.Queue(_CLIENT_QUEUE)
        self._clients.add(q)
        try:
            sent = last_event_id or 0
            yield "retry: 2000\n\n"
            if last_event_id is not None:
                async with await psycopg.AsyncConnection.connect(self._url, row_factory=dict_row) as conn:
                    rows = await (await conn.execute(
                        _SINCE, {"after": last_event_id, "site": principal.site, "limit": _BACKFILL_LIMIT}
                    )).fetchall()
                for row in rows:
                    missed = Change(row["id"], row["site"], row["alert"])
                    sent = max(sent, missed.id)
                    yield missed.event()
            while True:
                try:
                    change: Change | None = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if change is None:
                    return
                if change.id <= sent or not principal.sees(change.site):
                    continue
                sent = change.id
                yield change.event()
        finally:
            self._clients.discard(q)
