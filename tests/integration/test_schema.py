"""`safeguard migrate` gives exactly the declared schema (gateway/store/schema.sql) and is idempotent."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from gateway.devservers import PostgresServer
from gateway.store.db import connect
from gateway.store.migrate import migrate, migration_files

pytestmark = pytest.mark.integration

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


def _catalog(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in _CATALOG.items()}  # type: ignore[call-overload, unused-ignore]  # str query: flagged or not by psycopg version


def _fresh_db(pg: PostgresServer) -> str:
    name = f"s_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return pg.url_for(name)


def test_migrations_equal_declared_schema(pg_server: PostgresServer) -> None:
    migrated, declared = _fresh_db(pg_server), _fresh_db(pg_server)
    with connect(migrated) as conn:
        assert migrate(conn) == [p.stem for p in migration_files()]
        conn.commit()
    with psycopg.connect(declared) as conn:
        conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))  # type: ignore[call-overload, unused-ignore]  # str query: flagged or not by psycopg version
    expected, actual = _catalog(declared), _catalog(migrated)
    assert actual["columns"], "the schema has no tables"
    assert actual == expected


def test_migrate_is_idempotent(database_url: str) -> None:
    before = _catalog(database_url)
    with connect(database_url) as conn:
        assert migrate(conn) == []
        conn.commit()
    assert _catalog(database_url) == before
