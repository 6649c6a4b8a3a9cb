"""The inspection sampler's SQL (docs/inspection.md): the site registry with each site's current risk indicators.

One query: per site, its unresolved alerts (``state <> 'resolved'``) counted by severity, and its
camera devices with how many are online now (a ``device_state`` row not marked offline, its
deadline still ahead and its stream ``ok``). Compliance over a period is not recomputed here:
that needs every camera's heartbeats and would be slow over all sites; the camera state now is
the cheap stand-in.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from gateway.store.db import Conn

_REGISTRY = """
SELECT s.id, s.name, s.city, s.county, s.category, s.cameras_required,
       coalesce(a.critical, 0) AS critical, coalesce(a.major, 0) AS major, coalesce(a.minor, 0) AS minor,
       coalesce(c.cameras, 0) AS cameras, coalesce(c.online, 0) AS online
FROM sites s
LEFT JOIN (
    SELECT site,
           count(*) FILTER (WHERE severity = 'critical')::int AS critical,
           count(*) FILTER (WHERE severity = 'major')::int AS major,
           count(*) FILTER (WHERE severity = 'minor')::int AS minor
    FROM alerts
    WHERE state <> 'resolved'
    GROUP BY site
) a ON a.site = s.id
LEFT JOIN (
    SELECT d.site, count(*)::int AS cameras,
           count(*) FILTER (WHERE NOT ds.offline AND ds.status = 'ok'
                            AND ds.deadline > coalesce(%(now)s::timestamptz, now()))::int AS online
    FROM devices d
    LEFT JOIN device_state ds ON ds.site = d.site AND ds.device = d.id
    WHERE d.kind = 'camera'
    GROUP BY d.site
) c ON c.site = s.id
WHERE %(city)s::text IS NULL OR s.city = %(city)s::text
ORDER BY s.id
"""


def registry(conn: Conn, *, city: str | None, now: datetime | None) -> list[DictRow]:
    """Every registered site (of ``city`` if given), by id, with its unresolved alerts by severity (critical,
    major, minor) and its cameras and those online at ``now`` (aware; None: the database's now())."""
    return conn.execute(_REGISTRY, {"city": city, "now": now}).fetchall()
