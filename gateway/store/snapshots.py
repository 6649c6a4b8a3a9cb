"""Exit cameras' snapshots (``sg/v1/{site}/{device}/snapshot``) read back: the latest JPEG."""

from __future__ import annotations

from psycopg.rows import DictRow

from gateway.store.db import Conn

# One index probe on snapshots_device (site, device, received_at DESC): the first entry is the newest.
# `id DESC` only breaks exact ties of received_at (snapshots of one ingest batch).
LATEST_SNAPSHOT_SQL = (
    "SELECT received_at, jpeg FROM snapshots WHERE site = %s AND device = %s"
    " ORDER BY received_at DESC, id DESC LIMIT 1"
)


def latest_snapshot(conn: Conn, site: str, device: str) -> DictRow | None:
    """The device's newest snapshot (received_at, jpeg), or None if it sent none."""
    return conn.execute(LATEST_SNAPSHOT_SQL, (site, device)).fetchone()
