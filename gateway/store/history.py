"""The alert change feed read back from ``alert_history``: SSE streams and the MQTT relay.

``alerts.record_history`` writes each row and notifies ``ALERT_CHANNEL`` with its id; here are the
LISTEN, the reads by id and after an id (replay, catch-up) and the relay's pending rows.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import DictRow

from gateway.store.db import ALERT_CHANNEL, AsyncConn, Conn

_LISTEN = f"LISTEN {ALERT_CHANNEL}"
_BY_IDS = "SELECT id, site, alert FROM alert_history WHERE id = ANY(%s) ORDER BY id"
_SINCE = (
    "SELECT id, site, alert FROM alert_history WHERE id > %(after)s"
    " AND (%(site)s::text IS NULL OR site = %(site)s) ORDER BY id LIMIT %(limit)s"
)
_LATEST = "SELECT coalesce(max(id), 0) AS id FROM alert_history"


def listen(conn: Conn) -> None:
    """LISTEN on ``ALERT_CHANNEL``: ``conn.notifies()`` then yields each committed change's history id."""
    conn.execute(_LISTEN)


async def listen_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """``listen`` on an asyncio connection (any row factory: only its notifies are read)."""
    await conn.execute(_LISTEN)


def changes_since(conn: Conn, after: int, *, site: str | None, limit: int) -> list[DictRow]:
    """Up to ``limit`` changes (id, site, alert) after id ``after``, of ``site`` (None: every site), in id order."""
    return conn.execute(_SINCE, {"after": after, "site": site, "limit": limit}).fetchall()


async def changes_since_async(conn: AsyncConn, after: int, *, site: str | None, limit: int) -> list[DictRow]:
    """``changes_since`` on an asyncio connection."""
    return await (await conn.execute(_SINCE, {"after": after, "site": site, "limit": limit})).fetchall()


async def changes_by_id_async(conn: AsyncConn, ids: list[int]) -> list[DictRow]:
    """The changes (id, site, alert) with these ids, in id order."""
    return await (await conn.execute(_BY_IDS, (ids,))).fetchall()


async def latest_change_id_async(conn: AsyncConn) -> int:
    """The newest change's id, 0 when there is none."""
    row = await (await conn.execute(_LATEST)).fetchone()
    return row["id"] if row else 0


def unrelayed(conn: Conn, limit: int) -> list[DictRow]:
    """Up to ``limit`` changes (id, site, alert) not yet relayed to MQTT, oldest first."""
    return conn.execute(
        "SELECT id, site, alert FROM alert_history WHERE NOT relayed ORDER BY id LIMIT %s", (limit,)
    ).fetchall()


def mark_relayed(conn: Conn, change_id: int) -> None:
    """Note that change ``change_id`` was relayed (the broker acknowledged it); the caller commits."""
    conn.execute("UPDATE alert_history SET relayed = true WHERE id = %s", (change_id,))
