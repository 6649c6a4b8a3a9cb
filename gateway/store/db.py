"""Connections and small value conversions shared by every store module."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from protocol.alerts import rfc3339 as _rfc3339

Conn = psycopg.Connection[DictRow]
AsyncConn = psycopg.AsyncConnection[DictRow]

# A site's liveness timeout in seconds (DESIGN section 5), in queries that join its agent as ``a``:
# the agent's announced heartbeat_s (the default when it never said one) x the missed heartbeats.
AGENT_TIMEOUT_S = "(coalesce(a.heartbeat_s, %(default_heartbeat_s)s) * %(missed_heartbeats)s)::float8"

# Channel carrying alert_history ids as they commit (API SSE hubs and the relay listen).
ALERT_CHANNEL = "sg_alert_changes"


def connect(url: str, *, autocommit: bool = False) -> Conn:
    return psycopg.connect(url, row_factory=dict_row, autocommit=autocommit)


# A pooled connection's health check may take this long (a frozen server answers nothing; issue 15).
CHECK_TIMEOUT_S = 0.5
# Reconnecting after the database went away: attempts at most this far apart (psycopg_pool doubles
# its delay without bound: after a minute away, the next attempt could be a minute after it is back).
RECONNECT_MAX_DELAY_S = 2.0
# A new connection to a server that accepts TCP but never answers (SIGSTOP'd) gives up after this (libpq: >= 2).
CONNECT_TIMEOUT_S = 3


def _sever(conn: Conn) -> None:
    """Shut the connection's socket down under it: a query blocked on it fails at once."""
    with contextlib.suppress(OSError, psycopg.Error), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def check_connection(conn: Conn, *, timeout: float = CHECK_TIMEOUT_S) -> None:
    """The pool's check (an empty query) with a deadline.

    psycopg's own check has none: against a frozen (SIGSTOP'd) server the kernel still accepts what
    we send and the answer never comes, so a request would hang until TCP gives up (minutes). Past
    ``timeout`` the socket is shut down, the check raises ``OperationalError`` and the pool drops the
    connection.
    """
    lock, done, severed = threading.Lock(), [False], [False]

    def expire() -> None:
        with lock:
            if not done[0]:
                severed[0] = True
                _sever(conn)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        ConnectionPool.check_connection(conn)
    finally:
        with lock:
            done[0] = True
        timer.cancel()
    if severed[0]:
        # The answer came, but at the deadline, and the timer shut the socket down meanwhile: on a
        # loaded machine this handed out a dead connection ("server closed the connection
        # unexpectedly" in the request that got it). The pool must drop it, as a failed check.
        raise psycopg.OperationalError(f"the connection's check took longer than {timeout:g}s")


class _Pool(ConnectionPool[Conn]):
    """psycopg_pool's pool, but a connection that fails its check is followed by the next at once,
    and reconnection attempts are never more than ``RECONNECT_MAX_DELAY_S`` apart.

    psycopg_pool (3.2, 3.3) sleeps about a second after each failed check. With the dead idle
    connections a database restart or failover leaves, a request allowed ``api_db_timeout_s`` =
    0.5 s would then answer 503 though the database is up. Here: the next idle connection, or a
    new one (the pool connects in the background), until the request's deadline.
    """

    def _getconn_with_check_loop(self, deadline: float) -> Conn:  # psycopg_pool 3.2/3.3 internals
        while True:
            conn = self._getconn_unchecked(deadline - time.monotonic())
            try:
                self._check_connection(conn)
            except Exception:  # noqa: BLE001 - as psycopg_pool: any failed check discards the connection
                self._putconn(conn, from_getconn=True)  # broken: the pool drops it and connects anew
                if time.monotonic() >= deadline:
                    raise PoolTimeout("no working connection before the deadline") from None
                time.sleep(0.02)  # not a busy loop while every idle connection is failing
                continue
            except BaseException:
                self._putconn(conn, from_getconn=True)
                raise
            return conn

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        if attempt is not None:  # a retry: its delay is doubled next, up to RECONNECT_MAX_DELAY_S
            attempt.delay = min(attempt.delay, RECONNECT_MAX_DELAY_S / AttemptWithBackoff.DELAY_BACKOFF)
        super()._add_connection(attempt, growing)


def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 8, name: str = "safeguard", timeout: float = 30.0,
    check_timeout: float = CHECK_TIMEOUT_S,
) -> ConnectionPool[Conn]:
    """A pool whose ``connection()`` waits at most ``timeout`` (``PoolTimeout``, an ``OperationalError``)."""
    pool: ConnectionPool[Conn] = _Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_S},
        name=name,
        open=False,
        timeout=timeout,
        check=functools.partial(check_connection, timeout=check_timeout),
    )
    pool.open(wait=True, timeout=30)
    return pool


def ping(conn: Conn) -> None:
    """One empty round trip: raises if the database does not answer (readiness)."""
    conn.execute("SELECT 1")


def try_session_lock(conn: Conn, key: int) -> bool:
    """Take the session-level advisory lock ``key`` if it is free (held until the session ends); whether we hold it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
    return bool(row and row["ok"])


def rfc3339(value: datetime | None) -> str | None:
    """API times: RFC 3339 in UTC with a ``Z``."""
    return None if value is None else _rfc3339(value)


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
