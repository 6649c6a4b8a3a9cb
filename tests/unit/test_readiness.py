"""``/readyz`` logs the database's reachability when it changes, not at every probe (issue 14):
an orchestrator probing every few seconds must not flood the log while the database is away."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.store.db import Conn


class _Conn:
    def execute(self, _sql: str) -> None:
        return None


class FlakyPool:
    """Stands in for the pool: hands out a connection while ``up``, else raises as psycopg does."""

    def __init__(self) -> None:
        self.up = True

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[_Conn]:
        if not self.up:
            raise psycopg.OperationalError("connection refused")
        yield _Conn()


def probe(client: TestClient) -> dict[str, Any]:
    response = client.get("/readyz")
    body: dict[str, Any] = response.json()
    assert response.status_code == (200 if body["ready"] else 503)
    return body


def readiness_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("readiness:")]


def test_a_database_away_is_logged_once_and_its_return_once(caplog: pytest.LogCaptureFixture) -> None:
    pool = FlakyPool()
    app = create_app(Settings(), cast("ConnectionPool[Conn]", pool), broker_ready=lambda: True)
    client = TestClient(app)  # no lifespan: the live push is not started, /readyz needs none of it
    with caplog.at_level(logging.INFO, logger="gateway.api.app"):
        assert probe(client) == {"ready": True, "checks": {"broker": True, "database": True}}
        assert readiness_lines(caplog) == []

        pool.up = False
        for _ in range(20):  # a probe every few seconds for a minute or so
            assert probe(client) == {"ready": False, "checks": {"broker": True, "database": False}}
        away = readiness_lines(caplog)
        assert len(away) == 1
        assert "database not reachable: OperationalError: connection refused" in away[0]

        pool.up = True
        for _ in range(5):
            assert probe(client)["ready"] is True
        assert readiness_lines(caplog)[1:] == ["readiness: database reachable again after 20 failed probe(s)"]

        pool.up = False  # away again: news again
        assert probe(client)["ready"] is False
    assert len(readiness_lines(caplog)) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
