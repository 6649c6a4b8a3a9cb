"""The SQL of the daily compliance figures: one query per camera per day over ``camera_timeline``.

Shared by the schema (``migrate``: ``compliance_daily`` as a TimescaleDB continuous aggregate) and
the plain rollup (``gateway/compliance/rollup.py``), so that both keep exactly the same figures.
It lives with the store so that the schema does not import the compliance code above it.
"""

from __future__ import annotations

from gateway.store.db import Conn

# Per camera per day, the columns of compliance_daily. ``{bucket}`` is the day of ``since``:
# time_bucket with a time zone in the continuous aggregate, date_trunc in the plain rollup.
DAILY_QUERY = """
SELECT site, device, {bucket} AS day,
       coalesce(sum((extract(epoch FROM until - since) * 1000000)::bigint) FILTER (WHERE online), 0)
           AS online_us,
       count(*) FILTER (WHERE outage_start) AS outages,
       coalesce(max((extract(epoch FROM until - outage_since) * 1000000)::bigint) FILTER (WHERE NOT online), 0)
           AS longest_outage_us,
       count(delay_s) AS heartbeats,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY delay_s) AS delay_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY delay_s) AS delay_p95_s,
       bool_or(heard) AS reporting
FROM camera_timeline
{where}
GROUP BY site, device, {bucket}
"""
PLAIN_BUCKET = "date_trunc('day', since, %(zone)s)"
COLUMNS = ("site, device, day, online_us, outages, longest_outage_us, heartbeats, delay_p50_s, delay_p95_s,"
           " reporting")


def daily_query(bucket: str, where: str = "") -> str:
    return DAILY_QUERY.format(bucket=bucket, where=where)


def continuous_aggregate_sql(zone: str) -> list[str]:
    """Statements turning ``compliance_daily`` into a real-time continuous aggregate (TimescaleDB 2.8+).

    No refresh policy: ``rollup`` (gateway/compliance/rollup.py) materialises each day once every
    camera's timeline has passed it, and again after a rewrite; a policy on a clock would
    materialise days the timeline has not finished yet (a supervisor behind), and they would read
    wrong until the next refresh."""
    quoted = "'" + zone.replace("'", "''") + "'"
    bucket = f"time_bucket(INTERVAL '1 day', since, {quoted})"
    return [
        "DROP TABLE IF EXISTS compliance_daily",
        "CREATE MATERIALIZED VIEW compliance_daily"
        " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS"
        + daily_query(bucket) + " WITH NO DATA",
    ]


def is_continuous_aggregate(conn: Conn) -> bool:
    row = conn.execute(
        "SELECT count(*) AS n FROM pg_extension e WHERE e.extname = 'timescaledb' AND EXISTS ("
        " SELECT 1 FROM pg_class c WHERE c.relname = 'compliance_daily' AND c.relkind = 'v')"
    ).fetchone()
    return bool(row and row["n"])
