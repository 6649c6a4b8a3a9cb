"""Dead letters (messages ingest refused) as the API lists them."""

from __future__ import annotations

from psycopg.rows import DictRow

from gateway.store.db import Conn


def list_dead_letters(conn: Conn, *, code: str | None, before: int | None, limit: int) -> list[DictRow]:
    """Up to ``limit`` dead letters with reason ``code`` (None: any), newest first, ids below ``before`` (None: all)."""
    return conn.execute(
        "SELECT id, received_at, topic, code, reason, payload_excerpt, payload_size FROM dead_letters"
        " WHERE (%(code)s::text IS NULL OR code = %(code)s) AND (%(before)s::bigint IS NULL OR id < %(before)s)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"code": code, "before": before, "limit": limit},
    ).fetchall()
