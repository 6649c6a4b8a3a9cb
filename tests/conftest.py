"""Fixtures: a private PostgreSQL (one per test session, a fresh database per test copied
from a migrated template) and a private Mosquitto per test, both on free ports."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from gateway.config import Settings
from gateway.devservers import MosquittoServer, PostgresServer
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.migrate import migrate
from protocol.mqtt import MqttVersion
from tests.support import ADMIN_TOKEN

TEMPLATE_DB = "sg_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    # Not under pytest's basetemp: another pytest session resets that to 0700, and the server
    # runs as the unprivileged `postgres` user when we are root.
    root = Path(tempfile.mkdtemp(prefix="safeguard-test-pg-"))
    server = PostgresServer(root / "data", fast=True)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: PostgresServer) -> str:
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    with connect(pg_server.url_for(TEMPLATE_DB)) as conn:
        migrate(conn)
        conn.commit()
    return TEMPLATE_DB


@pytest.fixture
def database_url(pg_server: PostgresServer, template_db: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield pg_server.url_for(name)
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = MosquittoServer(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(database_url: str, mosquitto: MosquittoServer) -> Settings:
    return Settings(
        mqtt_url=mosquitto.url,
        mqtt_version=MqttVersion.V5,
        mqtt_client_id=f"gw-{uuid.uuid4().hex[:8]}",
        database_url=database_url,
        api_host="127.0.0.1",
        api_port=0,
        bootstrap_token=SecretStr(ADMIN_TOKEN),
        batch_interval_s=0.05,
        sweep_interval_s=0.2,
        escalate_after_s=60,
    )


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    gw = Gateway(settings)
    gw.start()
    assert gw.ingest is not None
    assert gw.ingest.wait_connected(10)
    yield gw
    gw.stop()
