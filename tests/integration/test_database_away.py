"""The database away (issue 15): the API answers 503 at once, and a fire alarm still reaches people.

Each test has a PostgreSQL of its own (the session's server is shared by every other test), which
it stops, or freezes with SIGSTOP (the nastiest case: the kernel still accepts connections and
data, and nothing ever answers), and brings back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.migrate import migrate
from safeguard.devservers import MosquittoServer, PostgresServer
from tests.support import ADMIN_TOKEN, Agent, AlertSubscriber, Api, SseReader, child_pids, scalar, wait_for

pytestmark = pytest.mark.integration

SITE = "site-away"


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    # Not under pytest's basetemp (tests/conftest.py says why).
    root = Path(tempfile.mkdtemp(prefix="safeguard-test-pg-away-"))
    server = PostgresServer(root / "data", fast=True)
    server.start()
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE away")
    with connect(server.url_for("away")) as conn:
        migrate(conn)
        conn.commit()
    yield server
    if server.running:
        signal_server(server, signal.SIGCONT)
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def away_settings(own_pg: PostgresServer, mosquitto: MosquittoServer) -> Settings:
    return Settings(
        mqtt_url=mosquitto.url, mqtt_client_id=f"gw-{uuid.uuid4().hex[:8]}", database_url=own_pg.url_for("away"),
        api_host="127.0.0.1", api_port=0, bootstrap_token=SecretStr(ADMIN_TOKEN), batch_interval_s=0.05,
        sweep_interval_s=0.2,
    )


def server_processes(server: PostgresServer) -> list[int]:
    """The postmaster and its children (each backend is a session leader of its own: killpg misses them)."""
    assert server.pid is not None
    return [server.pid, *child_pids(server.pid)]


def signal_server(server: PostgresServer, sig: signal.Signals) -> None:
    for pid in server_processes(server):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """SIGSTOP the whole server: it accepts connections (the kernel does) and answers nothing."""
    os.kill(server.pid or 0, signal.SIGSTOP)  # first: no new backend is forked meanwhile
    signal_server(server, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_server(server, signal.SIGCONT)


def assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"] == "database_unavailable"
    assert response.json()["detail"]


def test_api_answers_503_while_the_database_is_stopped_or_frozen(
    own_pg: PostgresServer, away_settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    """Before issue 15: 25-30 s and then 500 (stopped); no answer at all (frozen)."""
    with Gateway(away_settings, ingest=False, supervise=False) as gw:
        api = Api(gw.api_url)
        api.http.timeout = httpx.Timeout(60)
        api.put_site(SITE, name="Away")
        assert api.http.get("/api/v1/alerts").status_code == 200
        assert httpx.get(f"{gw.api_url}/readyz", timeout=60).json()["checks"]["database"] is True

        with frozen(own_pg):
            assert_503(api.http.get("/api/v1/alerts"))
            assert_503(api.http.get(f"/api/v1/sites/{SITE}"))
            ready = httpx.get(f"{gw.api_url}/readyz", timeout=60)
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] is False
        assert api.http.get("/api/v1/alerts").status_code == 200  # thawed: back at once
        # Ready again; readiness logs its changes (issue 14), so the stop below is news to the log.
        assert httpx.get(f"{gw.api_url}/readyz", timeout=60).status_code == 200

        own_pg.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gateway.api.app"):
            assert_503(api.http.get("/api/v1/alerts"))
            assert_503(api.http.post("/api/v1/alerts/1/ack", json={"note": "x"}))
            ready = httpx.get(f"{gw.api_url}/readyz", timeout=60)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False
        assert any("readiness: database not reachable" in r.getMessage() for r in caplog.records)

        own_pg.start()  # the pool reconnects within a couple of seconds (RECONNECT_MAX_DELAY_S)
        wait_for(lambda: api.http.get("/api/v1/alerts").status_code == 200 or None, what="the API back")
        assert httpx.get(f"{gw.api_url}/readyz", timeout=60).status_code == 200


def store_errors() -> float:
    return REGISTRY.get_sample_value("sg_ingest_store_errors_total") or 0.0


@pytest.mark.parametrize("away", ["stopped", "frozen"])
def test_fire_alarm_while_the_database_is_away_is_pushed_provisionally_then_stored_once(
    own_pg: PostgresServer, away_settings: Settings, away: str,
) -> None:
    """Before issue 15 the alarm reached no one (no MQTT, no SSE) until the database was back."""
    key = f"{SITE}/smoke-1/fire_alarm"
    with Gateway(away_settings) as gw:
        assert gw.ingest is not None
        assert gw.ingest.wait_connected(10)
        api = Api(gw.api_url)
        api.put_site(SITE, name="Away")
        agent = Agent(away_settings.mqtt.url, SITE)
        agent.birth([{"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"}])
        wait_for(lambda: api.http.get(f"/api/v1/sites/{SITE}/devices").json()["items"] or None, what="birth stored")
        watcher = AlertSubscriber(away_settings.mqtt.url)
        reader = SseReader(gw.api_url)
        try:
            with contextlib.ExitStack() as outage:
                if away == "frozen":
                    outage.enter_context(frozen(own_pg))
                else:
                    own_pg.stop()
                    outage.callback(own_pg.start)
                errors_before = store_errors()
                agent.smoke("smoke-1", "alarm")

                _, pushed = watcher.next()
                assert pushed["provisional"] is True
                assert (pushed["key"], pushed["kind"], pushed["severity"], pushed["state"]) == (
                    key, "fire_alarm", "critical", "open")
                assert pushed["id"] is None
                event = reader.next()
                assert event["id"] is None  # not a stored change: Last-Event-ID stays as it was
                assert event["data"] == pushed
                # The batch is retried (and refused) again and again: published once all the same.
                wait_for(lambda: store_errors() >= errors_before + 3 or None, timeout=60, what="three retries")
            # The database back: the stored alert follows, once, with the same key.
            _, stored = watcher.next(timeout=60)
            assert "provisional" not in stored
            assert (stored["key"], stored["kind"], stored["state"]) == (key, "fire_alarm", "open")
            assert isinstance(stored["id"], int)
            assert isinstance(stored["change_id"], int)
            stored_event = reader.next(timeout=60)
            assert stored_event["id"] == stored["change_id"]
            assert stored_event["data"] == stored
            url = away_settings.database.url
            wait_for(lambda: scalar(url, "SELECT count(*) FROM alert_history WHERE NOT relayed") == 0 or None,
                     what="everything relayed")
            agent.smoke("smoke-1", "alarm")  # a repeat, stored at once: no provisional any more
            agent.smoke("smoke-1", "normal")
            _, normal = watcher.next()
            assert (normal["key"], normal["detail"]["detector_normal"]) == (key, True)
            assert "provisional" not in normal
            assert watcher.drain() == []
            assert scalar(url, "SELECT count(*) FROM alerts WHERE kind = 'fire_alarm'") == 1
        finally:
            reader.close()
            watcher.close()
            agent.close()
