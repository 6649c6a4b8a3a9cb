"""Connections and small value conversions shared by every store module."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

Conn = psycopg.Connection[DictRow]

# A site's liveness timeout in seconds (DESIGN section 5), in queries that join its agent as ``a``:
# the agent's announced heartbeat_s (the default when it never said one) x the missed heartbeats.
AGENT_TIMEOUT_S = "(coalesce(a.heartbeat_s, %(default_heartbeat_s)s) * %(missed_heartbeats)s)::float8"

# Channel carrying alert_history ids as they commit (API SSE hubs and the relay listen).
ALERT_CHANNEL = "sg_alert_changes"


def connect(url: str, *, autocommit: bool = False) -> Conn:
    return psycopg.connect(url, row_factory=dict_row, autocommit=autocommit)


def open_pool(url: str, *, min_size: int = 1, max_size: int = 8, name: str = "safeguard") -> ConnectionPool[Conn]:
    pool: ConnectionPool[Conn] = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        name=name,
        open=False,
        check=ConnectionPool.check_connection,
    )
    pool.open(wait=True, timeout=30)
    return pool


def rfc3339(value: datetime | None) -> str | None:
    """API times: RFC 3339 in UTC with a ``Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def lock_sites(conn: Conn, sites: Iterable[str]) -> set[str]:
    """Serialise alert evaluation per site across ingest workers, API and supervisor; return
    which of ``sites`` are registered (locked all the same: an unknown name's lock is harmless).

    One statement whatever the number of sites (a batch touches hundreds). Locks are taken in
    the order of their keys, so that two transactions never wait on each other in a cycle (two
    sites whose names hash alike share a key: sorting by name alone could still cross).
    """
    names = list(set(sites))
    if not names:
        return set()
    rows = conn.execute(
        "SELECT k.s, EXISTS (SELECT 1 FROM sites WHERE id = k.s) AS registered"
        " FROM (SELECT s, pg_advisory_xact_lock(1, hashtext(s)) FROM"
        "  (SELECT s FROM unnest(%s::text[]) AS s ORDER BY hashtext(s)) AS ordered) AS k",
        (names,),
    ).fetchall()
    return {r["s"] for r in rows if r["registered"]}
