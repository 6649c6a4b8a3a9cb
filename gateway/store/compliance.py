"""The compliance code's SQL (DESIGN section 5, docs/compliance.md): the heartbeats a period's figures
come from, and the camera timeline and its daily rollup.

:mod:`gateway.compliance` decides (the figures, the verdicts, what each timeline run writes); the
daily figures' own query is :mod:`gateway.store.daily`, shared with the schema.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from gateway.rules.engine import Heartbeats
from gateway.store.db import AGENT_TIMEOUT_S, Conn

# When a site's figures start (issue 13): its registration, or its agent's first birth when later.
# The devices its agent declares are created by that birth, so their earliest creation is the first
# birth (the agent's row keeps only the latest status: a fallback for an agent that declared none).
# NULL: no agent ever reported, so no verdict at all ("not yet reporting").
REPORTING_SINCE = """CASE WHEN coalesce((SELECT min(dv.created_at) FROM devices dv WHERE dv.site = s.id), a.status_at)
    IS NULL THEN NULL ELSE greatest(s.created_at,
    coalesce((SELECT min(dv.created_at) FROM devices dv WHERE dv.site = s.id), a.status_at)) END"""

# One row per camera heartbeat; a camera without heartbeats gives one row with a NULL arrival,
# a site without cameras one row with a NULL device, an unknown site no row at all.
_HEARTBEATS = f"""
WITH site AS (
    SELECT s.id, s.cameras_required, {AGENT_TIMEOUT_S} AS timeout_s, {REPORTING_SINCE} AS reporting_since
    FROM sites s LEFT JOIN agents a ON a.site = s.id
    WHERE %(site)s::text IS NULL OR s.id = %(site)s
)
SELECT site.id AS site, site.cameras_required, site.timeout_s::float8 AS timeout_s, site.reporting_since,
       d.id AS device,
       extract(epoch FROM r.received_at)::float8 AS arrival,
       extract(epoch FROM r.ts)::float8 AS ts,
       r.status = 'ok' AS stream_ok
FROM site
LEFT JOIN devices d ON d.site = site.id AND d.kind = 'camera'
LEFT JOIN readings r ON r.site = d.site AND r.device = d.id AND r.kind = 'camera'
    AND r.received_at >= %(from)s::timestamptz - site.timeout_s * interval '1 second'
    AND r.received_at < %(to)s::timestamptz
ORDER BY site.id, d.id, r.received_at, r.ts
"""


def camera_heartbeats(conn: Conn, start: datetime, end: datetime, *, heartbeats: Heartbeats,
                      site: str | None) -> list[DictRow]:
    """The camera heartbeats that can matter for [start, end) of ``site`` (None: every site), in order: those
    that arrived within it and up to one timeout before it; each row with its site's cameras_required,
    timeout_s and reporting_since."""
    return conn.execute(
        _HEARTBEATS,
        {"site": site, "from": start, "to": end, **heartbeats.params()},
    ).fetchall()


def daily_head(conn: Conn, site: str, *, heartbeats: Heartbeats) -> DictRow | None:
    """The site's cameras_required, timeout_s, reporting_since, the timeline's horizon and its cameras (ids
    in order); None for an unknown site."""
    return conn.execute(
        f"SELECT s.cameras_required, {AGENT_TIMEOUT_S} AS timeout_s, {REPORTING_SINCE} AS reporting_since,"
        " (SELECT horizon FROM timeline_progress) AS horizon,"
        " array(SELECT id FROM devices WHERE site = s.id AND kind = 'camera' ORDER BY id) AS cameras"
        " FROM sites s LEFT JOIN agents a ON a.site = s.id WHERE s.id = %(site)s",
        {**heartbeats.params(), "site": site},
    ).fetchone()
