"""The sampler's inputs from PostgreSQL: the site registry with each site's current risk indicators.

One query: per site, its unresolved alerts (``state <> 'resolved'``) counted by severity, and its
camera devices with how many are online now (a ``device_state`` row not marked offline, its
deadline still ahead and its stream ``ok``). Compliance over a period is not recomputed here:
that needs every camera's heartbeats and would be slow over all sites; the camera state now is
the cheap stand-in (docs/inspection.md).
"""

from __future__ import annotations

from datetime import datetime

from gateway.inspection.sampler import (
    DEFAULT_WEIGHTS,
    Level,
    RiskInputs,
    RiskWeights,
    Sample,
    Site,
    draw_sample,
    risk_of,
)
from gateway.store.db import Conn

_QUERY = """
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


def load_registry(conn: Conn, *, city: str | None = None, now: datetime | None = None) -> list[tuple[Site, RiskInputs]]:
    """Every registered site (of ``city`` if given) with its risk indicators, by site id.

    ``now`` (aware) decides which camera heartbeats are still fresh; default: the database's now().
    """
    rows = conn.execute(_QUERY, {"city": city, "now": now}).fetchall()
    return [
        (
            Site(id=r["id"], city=r["city"], county=r["county"], category=r["category"], name=r["name"]),
            RiskInputs(open_critical=r["critical"], open_major=r["major"], open_minor=r["minor"],
                       cameras_required=r["cameras_required"], cameras=r["cameras"], cameras_online=r["online"]),
        )
        for r in rows
    ]


def sample_from_db(
    conn: Conn,
    *,
    level: Level | str,
    seed: int,
    city: str | None = None,
    now: datetime | None = None,
    weights: RiskWeights = DEFAULT_WEIGHTS,
) -> Sample:
    """Load the registry and risks and draw the sample (raises SamplingError as :func:`draw_sample`).

    The whole registry is read even for one city, so that an unknown city's error can list the
    cities that have sites; it is one query over the registry, small next to the readings.
    """
    registry = load_registry(conn, now=now)
    risks = {site.id: risk_of(site, inputs, weights=weights) for site, inputs in registry}
    return draw_sample([site for site, _ in registry], risks, level=level, seed=seed, city=city, weights=weights)
