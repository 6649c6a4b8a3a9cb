"""The pool's health check with a deadline (gateway/store/db.py), against the real PostgreSQL.

On a loaded machine the check's answer can come just as its deadline passes: the timer then shuts
the socket down after the check has succeeded. Before the fix the pool handed that dead connection
out, and the request that got it failed with "server closed the connection unexpectedly" (CI,
stop 20, and twice in one run of the suite over worker processes)."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from gateway.store.db import check_connection, connect, open_pool

pytestmark = [pytest.mark.integration, pytest.mark.storage]  # the pool on both storage paths


def _answer_at_the_deadline(monkeypatch: pytest.MonkeyPatch, late_s: float) -> None:
    """psycopg's own check answers, then this thread is held ``late_s`` (the machine is busy)."""
    real = ConnectionPool.check_connection

    def slow(conn: psycopg.Connection[object]) -> None:
        real(conn)
        time.sleep(late_s)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(slow))


def test_a_check_that_ran_past_its_deadline_fails_and_the_connection_is_not_handed_out(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connect(database_url, autocommit=True)
    _answer_at_the_deadline(monkeypatch, late_s=0.3)
    with pytest.raises(psycopg.OperationalError, match="took longer than"):
        check_connection(conn, timeout=0.1)
    with pytest.raises(psycopg.OperationalError):  # severed: the pool must never hand it out
        conn.execute("SELECT 1")
    conn.close()


def test_a_check_within_its_deadline_keeps_the_connection(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connect(database_url, autocommit=True)
    _answer_at_the_deadline(monkeypatch, late_s=0.0)
    check_connection(conn, timeout=1.0)
    assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    conn.close()


def test_the_pool_gives_a_working_connection_when_its_checks_run_late(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = open_pool(database_url, min_size=2, max_size=4, timeout=10, check_timeout=0.1)
    try:
        late = {"left": 2}  # the first two checks answer at their deadline, then the machine is quiet
        real = ConnectionPool.check_connection

        def sometimes_slow(conn: psycopg.Connection[object]) -> None:
            real(conn)
            if late["left"] > 0:
                late["left"] -= 1
                time.sleep(0.3)

        monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(sometimes_slow))
        with pool.connection() as conn:
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
        assert late["left"] == 0, "the slow checks ran"
    finally:
        pool.close()
