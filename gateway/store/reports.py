"""The reports' SQL (docs/reports.md): the ledger's sites and problem counts, and the summary's inspected sites.

:mod:`gateway.reports` takes the figures and the verdicts from :mod:`gateway.compliance.verdicts`
and lays the reports out; here are its queries.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from gateway.store.db import Conn
from gateway.store.problems import SYSTEM

_SITES = """
SELECT id, name, city, county, category, cameras_required FROM sites
WHERE (%(city)s::text IS NULL OR city = %(city)s) AND (%(county)s::text IS NULL OR county = %(county)s)
"""

_PROBLEMS = """
SELECT p.site,
       count(*)::int AS problems,
       count(*) FILTER (WHERE p.rectified_at IS NOT NULL AND p.rectified_at < %(as_of)s)::int AS rectified,
       count(*) FILTER (WHERE (p.rectified_at IS NULL OR p.rectified_at >= %(as_of)s)
                          AND p.deadline <= %(as_of)s)::int AS overdue
FROM problems p JOIN sites s ON s.id = p.site
WHERE (%(city)s::text IS NULL OR s.city = %(city)s) AND (%(county)s::text IS NULL OR s.county = %(county)s)
  AND p.opened_at < %(as_of)s
  AND (p.rectified_at IS NULL OR p.rectified_at >= %(from)s)
GROUP BY p.site
"""


_INSPECTED = """
SELECT DISTINCT p.site FROM problem_history h JOIN problems p ON p.id = h.problem_id JOIN sites s ON s.id = p.site
WHERE s.city = %(city)s AND h.by <> %(system)s AND h.action IN ('closed', 'reopened', 'note')
  AND h.at >= %(from)s AND h.at < %(as_of)s
"""



def ledger_sites(conn: Conn, *, city: str | None, county: str | None) -> list[DictRow]:
    """The sites of ``city``/``county`` (all when None): id, name, city, county, category, cameras_required."""
    return conn.execute(_SITES, {"city": city, "county": county}).fetchall()


def problem_counts(conn: Conn, start: datetime, as_of: datetime, *, city: str | None,
                   county: str | None) -> list[DictRow]:
    """Per site of ``city``/``county``, its problems open at some time in [start, as_of): how many, how many
    rectified before ``as_of`` and how many overdue at ``as_of`` (unrectified = problems - rectified)."""
    return conn.execute(_PROBLEMS, {"city": city, "county": county, "from": start, "as_of": as_of}).fetchall()


def inspected_sites(conn: Conn, start: datetime, as_of: datetime, *, city: str) -> set[str]:
    """The sites of ``city`` whose problems a person closed, reopened or noted in [start, as_of)."""
    return {r["site"] for r in conn.execute(
        _INSPECTED, {"city": city, "system": SYSTEM, "from": start, "as_of": as_of}).fetchall()}
