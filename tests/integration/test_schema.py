"""`safeguard migrate` gives exactly the declared schema (gateway/store/schema.sql, plus the TimescaleDB features
on that path) and is idempotent: run twice, and from two processes at once, on both storage paths."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.store.db import connect
from gateway.store.migrate import apply_script, apply_timescale, migrate, migration_files
from safeguard.devservers import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.storage]

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "gateway" / "store" / "schema.sql"

_CATALOG = {
    "columns": """SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
                  FROM information_schema.columns WHERE table_schema = 'public'
                  AND table_name <> 'schema_migrations' ORDER BY 1, 2""",
    "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                      WHERE connamespace = 'public'::regnamespace
                      AND conrelid::regclass::text <> 'schema_migrations' ORDER BY 1, 2""",
    "indexes": """SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
                  AND tablename <> 'schema_migrations' ORDER BY 1, 2""",
}
# What TimescaleDB keeps about the schema (ids left out: they differ between databases).
_TIMESCALE_CATALOG = {
    "hypertables": """SELECT hypertable_name, num_dimensions, compression_enabled
                      FROM timescaledb_information.hypertables ORDER BY 1""",
    "dimensions": """SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions
                     ORDER BY 1, 2""",
    "compression": """SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index, orderby_asc
                      FROM timescaledb_information.compression_settings ORDER BY 1, 2""",
    "jobs": """SELECT proc_name, coalesce(hypertable_name, ''), schedule_interval,
                      config - 'hypertable_id' - 'mat_hypertable_id'
               FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY 1, 2""",
    "continuous_aggregates": """SELECT view_name, materialized_only, view_definition
                                FROM timescaledb_information.continuous_aggregates ORDER BY 1""",
}


def _has_timescale(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (1,)


def _catalog(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        queries = {**_CATALOG, **(_TIMESCALE_CATALOG if _has_timescale(conn) else {})}
        return {name: conn.execute(query).fetchall() for name, query in queries.items()}  # type: ignore[call-overload, unused-ignore]  # str query: flagged or not by psycopg version


def _job_ids(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        if not _has_timescale(conn):
            return []
        return conn.execute("SELECT job_id, proc_name, hypertable_name FROM timescaledb_information.jobs"
                            " ORDER BY 1").fetchall()


def _fresh_db(pg: PostgresServer) -> str:
    name = f"s_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return pg.url_for(name)


def _declared(pg: PostgresServer, storage: str) -> str:
    """schema.sql, and on TimescaleDB its features as migrate adds them (the same function)."""
    url = _fresh_db(pg)
    with connect(url) as conn:
        apply_script(conn, SCHEMA_SQL)
        if storage == "timescale":
            apply_timescale(conn, retention_days=90, day_zone="Asia/Shanghai")
        conn.commit()
    return url


def test_migrations_equal_declared_schema(pg_server: PostgresServer, storage: str) -> None:
    migrated, declared = _fresh_db(pg_server), _declared(pg_server, storage)
    with connect(migrated) as conn:
        assert migrate(conn) == [p.stem for p in migration_files()]
        conn.commit()
    expected, actual = _catalog(declared), _catalog(migrated)
    assert actual["columns"], "the schema has no tables"
    assert ("hypertables" in actual) == (storage == "timescale")
    assert actual == expected


def test_migrate_is_idempotent(database_url: str) -> None:
    before, jobs = _catalog(database_url), _job_ids(database_url)
    with connect(database_url) as conn:
        assert migrate(conn) == []
        conn.commit()
    assert _catalog(database_url) == before
    assert _job_ids(database_url) == jobs  # the policies were left alone, not dropped and added again


def test_migrate_from_two_processes_at_once(pg_server: PostgresServer, storage: str) -> None:
    url, declared = _fresh_db(pg_server), _declared(pg_server, storage)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")} | {"SAFEGUARD_DATABASE_URL": url}
    procs = [subprocess.Popen([sys.executable, "-m", "safeguard.cli", "migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    # One applied the migrations; the other waited for the lock and found the schema up to date.
    assert sorted("schema up to date" in err for _, _, err in results) == [False, True], results
    assert _catalog(url) == _catalog(declared)


def test_a_script_is_applied_whole(database_url: str, tmp_path: Path) -> None:
    """Semicolons in comments and literals do not split a script (issue 12: timescale.sql failed so)."""
    script = tmp_path / "script.sql"
    script.write_text("-- a comment; with a semicolon\nCREATE TABLE t (note text);\n"
                      "/* another; one */ INSERT INTO t VALUES ('a; b');\nINSERT INTO t VALUES ($$c;d$$);\n",
                      encoding="utf-8")
    with connect(database_url) as conn:
        apply_script(conn, script)
        assert [r["note"] for r in conn.execute("SELECT note FROM t ORDER BY note")] == ["a; b", "c;d"]


def test_migration_0005_keys_the_recent_readings_already_stored(pg_server: PostgresServer, storage: str) -> None:
    """A database of 0004 (on TimescaleDB: readings a hypertable) with readings gets their keys."""
    url = _fresh_db(pg_server)
    with connect(url) as conn:
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")  # as migrate() makes it
        for path in migration_files():
            if path.stem < "0005":
                apply_script(conn, path)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
        if storage == "timescale":
            apply_timescale(conn, retention_days=90, day_zone="Asia/Shanghai")
        # The same (boot, seq) twice with another ts (stored twice before 0005), and one 30 days old.
        conn.execute(
            "INSERT INTO readings (ts, received_at, site, device, kind, boot, seq, status, payload) VALUES"
            " (now() - interval '1 hour', now() - interval '1 hour', 's', 'cam-1', 'camera', 'b', 1, 'ok', '{}'),"
            " (now() - interval '50 minutes', now() - interval '30 minutes', 's', 'cam-1', 'camera', 'b', 1, 'ok',"
            " '{}'),"
            " (now() - interval '30 days', now() - interval '30 days', 's', 'cam-1', 'camera', 'b', 0, 'ok', '{}')"
        )
        conn.commit()
        assert migrate(conn) == [p.stem for p in migration_files() if p.stem >= "0005"]
        conn.commit()
        keys = conn.execute("SELECT seq, received_at < now() - interval '45 minutes' AS first FROM reading_keys"
                            ).fetchall()
    assert keys == [{"seq": 1, "first": True}]  # once, with its first arrival
