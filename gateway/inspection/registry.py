"""The sampler's inputs from PostgreSQL: the site registry with each site's current risk indicators
(:func:`gateway.store.inspection.registry`; docs/inspection.md says why the camera state now stands
in for compliance), and the sample drawn from them.
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
from gateway.store import inspection as store
from gateway.store.db import Conn


def load_registry(conn: Conn, *, city: str | None = None, now: datetime | None = None) -> list[tuple[Site, RiskInputs]]:
    """Every registered site (of ``city`` if given) with its risk indicators, by site id.

    ``now`` (aware) decides which camera heartbeats are still fresh; default: the database's now().
    """
    rows = store.registry(conn, city=city, now=now)
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
