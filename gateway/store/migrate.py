"""Plain-SQL migrations (``migrations/NNNN_name.sql``), applied once each, in order.

``safeguard migrate`` is idempotent and safe to run from several processes at once
(an advisory lock serialises them). When the TimescaleDB extension is usable (installed and
preloaded by the server), ``timescale.sql`` turns ``readings`` into a compressed hypertable with
a retention policy and ``compliance_daily`` into a continuous aggregate (its days begin at
midnight in ``day_zone``); otherwise the supervisor prunes old readings itself.

Every file is applied as one script, in one round trip: never split on ``;`` (issue 12: a
semicolon in a comment of ``timescale.sql`` broke the split).
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.store import RETENTION_DAYS
from gateway.store.daily import continuous_aggregate_sql, is_continuous_aggregate
from gateway.store.db import Conn

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
MIGRATIONS_DIR = _HERE / "migrations"
_LOCK_ID = 0x5A_FE_6A_4D  # arbitrary, constant: the migration advisory lock


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def apply_script(conn: Conn, path: Path) -> None:
    """Run the SQL file as one script (the simple query protocol takes several statements)."""
    conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[call-overload, unused-ignore]  # str query: flagged or not by psycopg version


def timescale_available(conn: Conn) -> bool:
    """TimescaleDB can be used here: created in this database, or installed and preloaded.

    Installed but not in ``shared_preload_libraries`` is not enough: ``CREATE EXTENSION`` would
    fail, so that server keeps the plain path (and says why)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS created,"
        " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS installed,"
        " 'timescaledb' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))"
        "   AS preloaded"
    ).fetchone()
    assert row is not None
    if row["installed"] and not (row["created"] or row["preloaded"]):
        log.warning("TimescaleDB is installed but not preloaded (start PostgreSQL with"
                    " shared_preload_libraries=timescaledb): using plain PostgreSQL")
    return bool(row["created"] or (row["installed"] and row["preloaded"]))


def retention_policies(conn: Conn) -> set[str]:
    """The tables whose old rows a TimescaleDB retention policy drops (the supervisor prunes the others)."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS e").fetchone()
    if not (row and row["e"]):
        return set()
    return {r["hypertable_name"] for r in conn.execute(
        "SELECT hypertable_name FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_retention' AND hypertable_schema = current_schema()"
    )}


def apply_timescale(conn: Conn, *, retention_days: int, day_zone: str) -> None:
    """The TimescaleDB features over the plain schema (idempotent; inside the caller's transaction)."""
    log.info("TimescaleDB available: hypertables, compression, retention %d days", retention_days)
    conn.execute("SELECT set_config('safeguard.retention_days', %s, true)", (str(retention_days),))
    apply_script(conn, _HERE / "timescale.sql")
    if not is_continuous_aggregate(conn):
        log.info("compliance_daily: a continuous aggregate, days from midnight in %s", day_zone)
        for statement in continuous_aggregate_sql(day_zone):
            conn.execute(statement)
    # Databases migrated before the rollup materialised the aggregate had a refresh policy (see there).
    conn.execute("SELECT remove_continuous_aggregate_policy('compliance_daily', if_exists => true)")


def migrate(conn: Conn, *, retention_days: int = RETENTION_DAYS, day_zone: str = "Asia/Shanghai") -> list[str]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in conn.execute("SELECT version FROM schema_migrations")}
        for path in migration_files():
            version = path.stem
            if version in done:
                continue
            log.info("applying migration %s", version)
            apply_script(conn, path)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
        if timescale_available(conn):
            apply_timescale(conn, retention_days=retention_days, day_zone=day_zone)
        else:
            log.info("TimescaleDB not available: plain PostgreSQL tables, readings pruned by the supervisor")
    return applied_now
