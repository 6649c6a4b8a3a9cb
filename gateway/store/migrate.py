"""Plain-SQL migrations (``migrations/NNNN_name.sql``), applied once each, in order.

``safeguard migrate`` is idempotent and safe to run from several processes at once
(an advisory lock serialises them). When the TimescaleDB extension is available,
``timescale.sql`` turns ``readings`` into a compressed hypertable with a retention
policy and ``compliance_daily`` into a continuous aggregate (its days begin at midnight in
``day_zone``); otherwise the supervisor prunes old readings and rolls up the days itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.compliance.rollup import continuous_aggregate_sql, is_continuous_aggregate
from gateway.store.db import Conn

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
MIGRATIONS_DIR = _HERE / "migrations"
_LOCK_ID = 0x5A_FE_6A_4D  # arbitrary, constant: the migration advisory lock


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def timescale_available(conn: Conn) -> bool:
    row = conn.execute("SELECT count(*) AS n FROM pg_available_extensions WHERE name = 'timescaledb'"
        " AND current_setting('shared_preload_libraries') LIKE '%%timescaledb%%'").fetchone()
    return bool(row and row["n"])


def migrate(conn: Conn, *, retention_days: int = 90, day_zone: str = "Asia/Shanghai") -> list[str]:
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
            conn.execute(path.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
        if timescale_available(conn):
            log.info("TimescaleDB available: hypertable, compression, retention %d days", retention_days)
            sql = (_HERE / "timescale.sql").read_text(encoding="utf-8")
            for statement in filter(None, (s.strip() for s in sql.split(";"))):
                params = {"retention_days": retention_days} if "%(" in statement else None
                conn.execute(statement, params)
            if not is_continuous_aggregate(conn):
                log.info("compliance_daily: a continuous aggregate, days from midnight in %s", day_zone)
                for statement in continuous_aggregate_sql(day_zone):
                    conn.execute(statement)
        else:
            log.info("TimescaleDB not available: plain PostgreSQL tables, readings pruned by the supervisor")
    return applied_now
