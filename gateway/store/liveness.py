"""Liveness (DESIGN section 5): devices past their deadline, and declared devices never heard from.

The supervisor leader runs these inside its sweep transactions, with the sites locked in between
(``db.lock_sites``); the store only finds and marks, the rules decide the alerts.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from gateway.rules.engine import Heartbeats
from gateway.store.db import AGENT_TIMEOUT_S, Conn


def silent_sites(conn: Conn, at: datetime) -> list[str]:
    """Sites with a device past its deadline at ``at`` and not yet marked offline."""
    return [r["site"] for r in conn.execute(
        "SELECT DISTINCT site FROM device_state WHERE deadline < %s AND NOT offline", (at,)
    )]


def mark_silent_offline(conn: Conn, at: datetime, sites: list[str]) -> list[DictRow]:
    """Mark offline the devices of ``sites`` past their deadline at ``at``; each one's site, device, kind,
    last_seen and timeout_s (epoch seconds)."""
    return conn.execute(
        "UPDATE device_state ds SET offline = true FROM devices d"
        " WHERE ds.deadline < %s AND NOT ds.offline AND ds.site = ANY(%s)"
        " AND d.site = ds.site AND d.id = ds.device"
        " RETURNING ds.site, ds.device, d.kind, extract(epoch FROM ds.last_seen)::float8 AS last_seen,"
        " extract(epoch FROM ds.deadline - ds.last_seen)::float8 AS timeout_s",
        (at, sites),
    ).fetchall()


# Declared by an online agent, nothing ever stored, the timeout passed since the declaration,
# and no offline alert for it since that declaration (one resolved by hand is not raised again
# until the agent declares its devices anew).
_UNHEARD = f"""
    SELECT d.site, d.id AS device, d.kind, extract(epoch FROM a.status_at)::float8 AS declared_at,
           {AGENT_TIMEOUT_S} AS timeout_s
    FROM devices d JOIN agents a ON a.site = d.site AND a.online
    WHERE d.declared AND d.kind IN ('camera', 'smoke') AND d.site = ANY(coalesce(%(sites)s, ARRAY[d.site]))
      AND a.status_at < %(now)s - {AGENT_TIMEOUT_S} * interval '1 second'
      AND NOT EXISTS (SELECT 1 FROM device_state ds WHERE ds.site = d.site AND ds.device = d.id)
      AND NOT EXISTS (SELECT 1 FROM alerts al WHERE al.site = d.site AND al.device = d.id
                      AND al.kind IN ('camera_offline', 'detector_offline') AND al.opened_at >= a.status_at)
"""


def unheard_devices(conn: Conn, now: datetime, sites: list[str] | None, *, heartbeats: Heartbeats) -> list[DictRow]:
    """Declared cameras and smoke detectors of ``sites`` (None: all) never heard from within their timeout at
    ``now``; each one's site, device, kind, declared_at and timeout_s (epoch seconds)."""
    return conn.execute(
        _UNHEARD,
        {"now": now, **heartbeats.params(), "sites": sites},
    ).fetchall()
