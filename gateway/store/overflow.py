"""``ingest_overflow``: raw messages an overloaded alarm lane set aside (gateway/ingest/overflow.py).

Written by COPY BINARY (a few microseconds a row, one round trip a batch) and taken back in
arrival order with ``FOR UPDATE SKIP LOCKED`` inside the transaction that stores them, so a
row leaves the table exactly when its reading is committed, and several workers can drain
the table at once without taking the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from psycopg.rows import tuple_row

from gateway.store.db import Conn


class SetAside(NamedTuple):
    """A message as it arrived: topic, payload bytes, arrival (epoch seconds)."""

    topic: str
    payload: bytes
    received_at: float


def put(conn: Conn, messages: Sequence[SetAside]) -> None:
    """Append ``messages`` (in the caller's transaction)."""
    with conn.cursor().copy(
        "COPY ingest_overflow (topic, payload, received_at) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["text", "bytea", "float8"])
        for message in messages:
            copy.write_row(message)


def take(conn: Conn, limit: int) -> list[SetAside]:
    """Remove and return up to ``limit`` of the oldest rows no other transaction holds.

    Inside the caller's transaction: rolled back, the rows are back in the table."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "WITH taken AS (SELECT id FROM ingest_overflow ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " DELETE FROM ingest_overflow o USING taken WHERE o.id = taken.id"
            " RETURNING o.id, o.topic, o.payload, o.received_at",
            (limit,),
        )
        rows = sorted(cur.fetchall())
    return [SetAside(topic, bytes(payload), received_at) for _, topic, payload, received_at in rows]


def count(conn: Conn) -> int:
    """Rows waiting (an estimate is not enough: the supervisor and the tests ask "any left?")."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT count(*) FROM ingest_overflow")
        row = cur.fetchone()
    return int(row[0]) if row else 0
