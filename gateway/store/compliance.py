"""The compliance code's SQL (DESIGN section 5, docs/compliance.md): the heartbeats a period's figures
come from, and the camera timeline and its daily rollup.

:mod:`gateway.compliance` decides (the figures, the verdicts, what each timeline run writes); the
daily figures' own query is :mod:`gateway.store.daily`, shared with the schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypedDict

from psycopg.rows import DictRow

from gateway.rules.engine import Heartbeats
from gateway.store.daily import COLUMNS, PLAIN_BUCKET, daily_query
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


# --- the camera timeline (gateway/compliance/rollup.py) ---------------------------------------

_TIMELINE_LOCK = 0x5A_FE_DA_17  # one timeline writer at a time (the leader; tools and tests may call it too)


def lock_timeline(conn: Conn) -> None:
    """Take the timeline writers' session lock (taken before the transaction, released by :func:`unlock_timeline`)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_TIMELINE_LOCK,))


def unlock_timeline(conn: Conn) -> None:
    """Release the lock :func:`lock_timeline` took."""
    conn.execute("SELECT pg_advisory_unlock(%s)", (_TIMELINE_LOCK,))


def repeatable_read(conn: Conn) -> None:
    """One snapshot for every statement of the transaction just begun."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def progress_snapshot(conn: Conn) -> DictRow | None:
    """The snapshot the last timeline run saw (``snapshot``) and the current one (``now``)."""
    return conn.execute("SELECT snapshot, pg_current_snapshot() AS now FROM timeline_progress").fetchone()


def cameras_to_extend(conn: Conn, seen: Any, *, heartbeats: Heartbeats) -> list[DictRow]:
    """Every camera with a cursor or with readings the run that saw ``seen`` (a snapshot; None: no run yet)
    could not see: site, device, upto (its cursor), first (the earliest such arrival), timeout_s, and
    first_piece (where its timeline's piece holding ``first`` begins)."""
    new_filter = (
        "txid >= pg_snapshot_xmin(%(seen)s::text::pg_snapshot)"
        " AND NOT pg_visible_in_snapshot(txid, %(seen)s::text::pg_snapshot)"
        if seen is not None else "true"
    )
    return conn.execute(
        f"""
        WITH fresh AS (
            SELECT site, device, min(received_at) AS first FROM readings
            WHERE kind = 'camera' AND {new_filter} GROUP BY site, device
        ), cameras AS (
            SELECT coalesce(c.site, f.site) AS site, coalesce(c.device, f.device) AS device, c.upto, f.first
            FROM timeline_cursors c FULL JOIN fresh f ON f.site = c.site AND f.device = c.device
        )
        SELECT cameras.*, {AGENT_TIMEOUT_S} AS timeout_s,
               (SELECT min(t.since) FROM camera_timeline t WHERE t.site = cameras.site
                   AND t.device = cameras.device AND t.until > cameras.first) AS first_piece
        FROM cameras JOIN devices d ON d.site = cameras.site AND d.id = cameras.device
        LEFT JOIN agents a ON a.site = cameras.site
        ORDER BY site, device
        """,
        {"seen": None if seen is None else str(seen), **heartbeats.params()},
    ).fetchall()


class CameraSpans(TypedDict):
    """Cameras as parallel arrays: each one's site, device, the run's [start, end) and its timeout."""

    sites: list[str]
    devices: list[str]
    starts: list[datetime]
    ends: list[datetime]
    timeouts: list[float]


def drop_pieces_from(conn: Conn, cameras: CameraSpans) -> None:
    """Delete each camera's timeline from its start on (the pieces rewritten)."""
    conn.execute(
        "DELETE FROM camera_timeline t USING unnest(%(sites)s::text[], %(devices)s::text[],"
        " %(starts)s::timestamptz[]) AS c(site, device, start)"
        " WHERE t.site = c.site AND t.device = c.device AND (t.since >= c.start OR t.until > c.start)",
        cameras,
    )


def last_pieces(conn: Conn, cameras: CameraSpans) -> list[DictRow]:
    """Each camera's last positive piece before its start: site, device, since, until, online, heard,
    outage_since."""
    return conn.execute(
        "SELECT c.site, c.device, p.since, p.until, p.online, p.heard, p.outage_since"
        " FROM unnest(%(sites)s::text[], %(devices)s::text[], %(starts)s::timestamptz[]) AS c(site, device, start)"
        " CROSS JOIN LATERAL (SELECT since, until, online, heard, outage_since FROM camera_timeline t"
        "   WHERE t.site = c.site AND t.device = c.device AND t.until <= c.start AND t.until > t.since"
        "   ORDER BY t.until DESC LIMIT 1) p",
        cameras,
    ).fetchall()


def span_heartbeats(conn: Conn, cameras: CameraSpans) -> list[DictRow]:
    """Each camera's heartbeats that arrived in [start - timeout, end): site, device, arrival, ts (epoch
    seconds), ok."""
    return conn.execute(
        "SELECT c.site, c.device, extract(epoch FROM r.received_at)::float8 AS arrival,"
        " extract(epoch FROM r.ts)::float8 AS ts, r.status = 'ok' AS ok"
        " FROM unnest(%(sites)s::text[], %(devices)s::text[], %(starts)s::timestamptz[], %(ends)s::timestamptz[],"
        "   %(timeouts)s::float8[]) AS c(site, device, start, stop, timeout_s)"
        " JOIN readings r ON r.site = c.site AND r.device = c.device AND r.kind = 'camera'"
        "   AND r.received_at >= c.start - c.timeout_s * interval '1 second' AND r.received_at < c.stop",
        cameras,
    ).fetchall()


def start_cursors(conn: Conn, cameras: CameraSpans) -> None:
    """A cursor at each camera's start, unless it has one."""
    conn.execute(
        "INSERT INTO timeline_cursors (site, device, upto)"
        " SELECT * FROM unnest(%(sites)s::text[], %(devices)s::text[], %(starts)s::timestamptz[])"
        " ON CONFLICT (site, device) DO NOTHING",
        cameras,
    )


def lengthen_pieces(conn: Conn, pieces: Sequence[tuple[datetime, str, str, datetime, datetime]]) -> None:
    """Each (until, site, device, since, old until): the piece [since, old until) now ends at ``until``."""
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE camera_timeline SET until = %s WHERE site = %s AND device = %s AND since = %s AND until = %s",
            pieces,
        )


TimelinePiece = tuple[str, str, datetime, datetime, bool, bool, bool, datetime | None, float | None]


def copy_pieces(conn: Conn, pieces: Iterable[TimelinePiece]) -> None:
    """Append pieces (site, device, since, until, online, heard, outage_start, outage_since, delay_s)."""
    with conn.cursor().copy(
        "COPY camera_timeline (site, device, since, until, online, heard, outage_start, outage_since, delay_s)"
        " FROM STDIN"
    ) as copy:
        for piece in pieces:
            copy.write_row(piece)


def set_cursors(conn: Conn, cameras: CameraSpans) -> None:
    """Each camera's cursor moves to its end."""
    conn.execute(
        "INSERT INTO timeline_cursors (site, device, upto)"
        " SELECT * FROM unnest(%(sites)s::text[], %(devices)s::text[], %(ends)s::timestamptz[])"
        " ON CONFLICT (site, device) DO UPDATE SET upto = excluded.upto",
        cameras,
    )


def set_progress(conn: Conn, snapshot: str, horizon: datetime, touched: datetime | None) -> None:
    """The run saw ``snapshot``; the horizon is the least cursor (``horizon`` if none); days from ``touched``
    on (if any) are to be rolled up again."""
    # The horizon is the least cursor: every day before it is kept for every camera.
    conn.execute(
        "UPDATE timeline_progress SET snapshot = %s::text::pg_snapshot,"
        " horizon = coalesce((SELECT min(upto) FROM timeline_cursors), %s),"
        " materialized_until = CASE WHEN %s::timestamptz IS NULL THEN materialized_until"
        "   ELSE least(materialized_until, %s::timestamptz) END",  # days rewritten: roll them up again
        (snapshot, horizon, touched, touched),
    )


# --- the daily rollup ---------------------------------------------------------------------------


def progress_for_update(conn: Conn) -> DictRow | None:
    """The timeline's horizon and how far the days are materialised, locked until the transaction ends."""
    return conn.execute("SELECT horizon, materialized_until FROM timeline_progress FOR UPDATE").fetchone()


def first_piece_since(conn: Conn) -> datetime | None:
    """Where the earliest timeline piece begins; None without any."""
    first = conn.execute("SELECT min(since) AS since FROM camera_timeline").fetchone()
    return first["since"] if first else None


def _span(lo: datetime, hi: datetime, zone: str, read: datetime | None) -> dict[str, Any]:
    return {"lo": lo, "hi": hi, "zone": zone, "read": read}


def write_plain_days(conn: Conn, lo: datetime, hi: datetime, zone: str, read: datetime | None) -> int:
    """Plain PostgreSQL: the ``compliance_daily`` rows of the days in [lo, hi) again; how many."""
    span = _span(lo, hi, zone, read)
    conn.execute("DELETE FROM compliance_daily WHERE day >= %(lo)s AND day < %(hi)s", span)
    return conn.execute(
        f"INSERT INTO compliance_daily ({COLUMNS})"
        + daily_query(PLAIN_BUCKET, "WHERE since >= %(lo)s AND since < %(hi)s"),
        span,
    ).rowcount


def refresh_continuous_aggregate(conn: Conn, start: datetime, end: datetime) -> None:
    """TimescaleDB: materialise the days in [start, end) (cannot run in a transaction block)."""
    conn.commit()
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("CALL refresh_continuous_aggregate('compliance_daily', %s, %s)", (start, end))
    finally:
        conn.autocommit = autocommit


def count_days(conn: Conn, lo: datetime, hi: datetime, zone: str, read: datetime | None) -> int:
    """The ``compliance_daily`` rows of the days in [lo, hi)."""
    counted = conn.execute("SELECT count(*) AS n FROM compliance_daily WHERE day >= %(lo)s AND day < %(hi)s",
                           _span(lo, hi, zone, read)).fetchone()
    return int(counted["n"]) if counted else 0


def mark_materialized(conn: Conn, lo: datetime, hi: datetime, zone: str, read: datetime | None) -> None:
    """The days are materialised up to ``hi``, unless a timeline run lowered the mark since it read ``read``."""
    # Not past a lower mark a timeline run set meanwhile (TimescaleDB refreshes outside the
    # locking transaction): the next rollup materialises those rewritten days again.
    conn.execute(
        "UPDATE timeline_progress SET materialized_until = greatest(materialized_until, %(hi)s)"
        " WHERE materialized_until IS NOT DISTINCT FROM %(read)s::timestamptz",
        _span(lo, hi, zone, read),
    )


def daily_rows(conn: Conn, site: str, lo: datetime, hi: datetime, *, zone: str) -> list[DictRow]:
    """The ``compliance_daily`` columns of ``site`` for the days starting in [lo, hi): the days materialised
    as stored, the others aggregated from the timeline."""
    span = {"site": site, "lo": lo, "hi": hi, "zone": zone}
    query = (
        f"SELECT {COLUMNS} FROM compliance_daily WHERE site = %(site)s AND day >= %(lo)s AND day < %(hi)s"
        " AND day < coalesce((SELECT materialized_until FROM timeline_progress), '-infinity')"
        " UNION ALL "
        + daily_query(PLAIN_BUCKET, "WHERE site = %(site)s AND since >= greatest(%(lo)s,"
                      " coalesce((SELECT materialized_until FROM timeline_progress), '-infinity'))"
                      " AND since < %(hi)s")
    )
    return conn.execute(query, span).fetchall()
