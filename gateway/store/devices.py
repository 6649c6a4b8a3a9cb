"""Devices as the API lists them: what the agent declared and what was last heard of each."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from gateway.store.db import Conn


def list_devices(conn: Conn, site: str, now: datetime) -> list[DictRow]:
    """The site's devices in id order: each one's state, whether it is online at ``now``, its newest snapshot's time."""
    return conn.execute(
        "SELECT d.id, d.kind, d.name, d.location, d.declared, ds.last_seen, ds.status, ds.reading,"
        " (ds.site IS NOT NULL AND NOT ds.offline AND ds.deadline > %s) AS online,"
        " (SELECT max(received_at) FROM snapshots sn WHERE sn.site = d.site AND sn.device = d.id) AS snapshot_at"
        " FROM devices d LEFT JOIN device_state ds ON ds.site = d.site AND ds.device = d.id"
        " WHERE d.site = %s ORDER BY d.id",
        (now, site),
    ).fetchall()
