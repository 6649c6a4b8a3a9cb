"""Supervisor leadership (PostgreSQL advisory lock) and retention, on a real PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg
import pytest

from gateway.config import Settings
from gateway.store.db import connect, from_epoch, open_pool
from gateway.supervisor import LEADER_LOCK, Supervisor
from tests.support import run_timescale_jobs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.storage]


def _leader_backends(database_url: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            (LEADER_LOCK,),
        ).fetchall()
    return [r[0] for r in rows]


def test_one_leader_and_takeover_when_it_dies(settings: Settings) -> None:
    pool = open_pool(settings.database.url, max_size=4)
    first, second = Supervisor(settings, pool), Supervisor(settings, pool)
    try:
        first.start()
        wait_for(lambda: first.is_leader, what="the first supervisor to lead")
        second.start()
        time.sleep(settings.liveness.sweep_interval_s * 5)  # give the second every chance to (wrongly) lead too
        assert not second.is_leader
        assert len(_leader_backends(settings.database.url)) == 1

        # Kill the leader's database session: the lock goes with it and someone leads again.
        (pid,) = _leader_backends(settings.database.url)
        with psycopg.connect(settings.database.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: len(_leader_backends(settings.database.url)) == 1 and pid not in
                 _leader_backends(settings.database.url), what="a new leader session")

        # Stop whoever leads now: the other takes over.
        leader, other = (first, second) if first.is_leader else (second, first)
        leader.stop()
        wait_for(lambda: other.is_leader, what="takeover by the remaining supervisor")
    finally:
        first.stop()
        second.stop()
        pool.close()


def test_prune_deletes_old_readings_timeline_and_dead_letters_only(settings: Settings, storage: str) -> None:
    now = time.time()
    old, recent = from_epoch(now - 100 * 86_400), from_epoch(now - 86_400)
    with connect(settings.database.url) as conn:
        conn.execute("INSERT INTO sites (id, created_at) VALUES ('s1', '2000-01-01Z')")
        conn.execute("INSERT INTO devices (site, id, kind, created_at) VALUES ('s1', 'cam-1', 'camera', '2000-01-01Z')")
        for seq, ts in enumerate((old, recent)):
            conn.execute(
                "INSERT INTO readings VALUES (%s, %s, 's1', 'cam-1', 'camera', 'b', %s, 'ok', '{}')", (ts, ts, seq)
            )
            conn.execute("INSERT INTO reading_keys VALUES ('s1', 'cam-1', 'b', %s, %s)", (seq, ts))
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, code, reason, payload_excerpt, payload_size)"
                " VALUES (%s, 't', 'c', 'r', '', 0)", (ts,)
            )
        conn.commit()
    pool = open_pool(settings.database.url, max_size=2)
    try:
        supervisor = Supervisor(settings, pool)
        while supervisor.keep_daily(now).behind:  # the timeline from the old reading's day on, rolled up
            pass
        counts = supervisor.prune(now)
    finally:
        pool.close()
    cutoff = from_epoch(now - 90 * 86_400)
    if storage == "timescale":
        # The retention policies drop the old chunks, whole, when TimescaleDB runs their jobs.
        assert counts == {"reading_keys": 1, "dead_letters": 1}
        assert run_timescale_jobs(settings.database.url, "policy_retention") == 2
        slack = timedelta(days=7)  # camera_timeline's chunk: the one holding the cutoff stays
    else:
        assert counts.pop("camera_timeline") > 0
        assert counts == {"readings": 1, "reading_keys": 1, "dead_letters": 1}
        slack = timedelta(0)
    with connect(settings.database.url) as conn:
        left = conn.execute("SELECT ts FROM readings").fetchall()
        timeline = conn.execute("SELECT min(since) AS since, min(until) AS until FROM camera_timeline").fetchone()
        days = conn.execute("SELECT min(day) AS day, count(*) AS n FROM compliance_daily").fetchone()
    assert left == [{"ts": recent}]
    assert timeline is not None
    assert timeline["since"] > old
    assert timeline["until"] >= cutoff - slack
    assert days is not None  # the daily figures stay (on TimescaleDB: the aggregate keeps what it materialised)
    assert days["day"] < old
    assert days["n"] >= 100
