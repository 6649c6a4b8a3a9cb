"""Retention: delete rows older than a cutoff (the supervisor's hourly prune).

Each function deletes inside the caller's transaction and returns how many rows went; which tables
need it (TimescaleDB's retention policies cover some) is the caller's to decide.
"""

from __future__ import annotations

from datetime import datetime

from gateway.store.db import Conn


def delete_readings_before(conn: Conn, cutoff: datetime) -> int:
    """Delete raw readings taken before ``cutoff``; how many."""
    return conn.execute("DELETE FROM readings WHERE ts < %s", (cutoff,)).rowcount


def delete_reading_keys_before(conn: Conn, cutoff: datetime) -> int:
    """Delete the exactly-once keys (migrations/0005) received before ``cutoff``; how many."""
    return conn.execute("DELETE FROM reading_keys WHERE received_at < %s", (cutoff,)).rowcount


def delete_timeline_before(conn: Conn, cutoff: datetime) -> int:
    """Delete camera timeline spans that ended before ``cutoff`` (the daily figures rolled up stay); how many."""
    return conn.execute("DELETE FROM camera_timeline WHERE until < %s", (cutoff,)).rowcount


def delete_dead_letters_before(conn: Conn, cutoff: datetime) -> int:
    """Delete dead letters received before ``cutoff``; how many."""
    return conn.execute("DELETE FROM dead_letters WHERE received_at < %s", (cutoff,)).rowcount
