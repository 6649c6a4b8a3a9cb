"""Site deletion (scenario and test sites leave nothing behind) and tokens with a life: listed,
revoked, expiring (issue 13 point 5), from the command line and the API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from gateway.auth import Role, authenticate, create_token
from gateway.runtime import Gateway
from gateway.store.db import connect
from simulators.scenario import fleet
from tests.support import Agent, Api, safeguard, scalar, wait_for

pytestmark = pytest.mark.integration

SITE = "scn-del-1"


@pytest.fixture
def agent(gateway: Gateway) -> Iterator[Agent]:
    made = Agent(gateway.settings.mqtt.url, SITE, heartbeat_s=30)
    yield made
    with contextlib.suppress(Exception):
        made.close()


def _rows_of(database_url: str, site: str) -> dict[str, int]:
    """Rows that name ``site`` in every table with a site column."""
    with psycopg.connect(database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t"
            " USING (table_schema, table_name) WHERE c.table_schema = current_schema() AND c.column_name = 'site'"
            " AND t.table_type = 'BASE TABLE'")]
        counts = {t: conn.execute(f"SELECT count(*) FROM {t} WHERE site = %s", (site,)).fetchone()[0]  # type: ignore[index]
                  for t in tables}
        counts["sites"] = conn.execute("SELECT count(*) FROM sites WHERE id = %s", (site,)).fetchone()[0]  # type: ignore[index]
    return {t: n for t, n in counts.items() if n}


@pytest.mark.storage  # readings and the timeline are hypertables on TimescaleDB
def test_deleting_a_site_leaves_nothing_of_it(gateway: Gateway, agent: Agent) -> None:
    api = Api(gateway.api_url)
    api.put_site(SITE, name="scenario", city="Hangzhou", county="Xihu", cameras_required=1)
    api.put_site("scn-keep-1", name="other", city="Hangzhou", county="Xihu")
    agent.birth([{"id": "cam-1", "kind": "camera"}, {"id": "smoke-1", "kind": "smoke"}])
    agent.heartbeat("cam-1")
    agent.smoke("smoke-1", "alarm")
    alert = wait_for(lambda: api.alert(site=SITE, kind="fire_alarm"), what="the fire alarm")
    assert api.http.post(f"/api/v1/alerts/{alert['id']}/ack", json={"note": "drill"}).status_code == 200
    database_url = gateway.settings.database.url
    with connect(database_url) as conn:
        create_token(conn, role=Role.INSTITUTION, name="school", site=SITE)
    before = _rows_of(database_url, SITE)
    assert {"readings", "alerts", "alert_history", "devices", "api_tokens"} <= set(before), before

    refused = safeguard("sites", "delete", SITE, database_url=database_url)
    assert refused.returncode == 2
    assert "give --yes" in refused.stderr
    assert _rows_of(database_url, SITE) == before

    response = api.http.delete(f"/api/v1/sites/{SITE}")
    assert response.status_code == 200, response.text
    assert response.json()["deleted"]["alerts"] >= 1
    assert _rows_of(database_url, SITE) == {}
    assert api.http.get("/api/v1/sites/scn-keep-1").status_code == 200  # the others stay
    assert api.http.delete(f"/api/v1/sites/{SITE}").status_code == 404
    gone = safeguard("sites", "delete", SITE, "--yes", database_url=database_url)
    assert gone.returncode == 2
    assert f"site {SITE!r} is not registered" in gone.stderr


def test_sites_delete_from_the_command_line(database_url: str) -> None:
    with connect(database_url) as conn:
        conn.execute("INSERT INTO sites (id, name) VALUES ('cli-del', 'x')")
        conn.commit()
    result = safeguard("sites", "delete", "cli-del", "--yes", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "deleted site cli-del: 1 sites" in result.stderr
    assert scalar(database_url, "SELECT count(*) FROM sites") == 0


def test_a_scenario_run_removes_the_sites_it_registered(gateway: Gateway) -> None:
    api_url, database_url = gateway.api_url, gateway.settings.database.url
    common = ("--sites", "2", "--prefix", "scn", "--duration", "1", "--heartbeat-s", "1",
              "--mqtt-url", gateway.settings.mqtt.url, "--mqtt-version", "5", "--api-url", api_url,
              "--token", "test-admin-token-0123456789")
    kept = safeguard("simulate", *common, "--keep-sites")
    assert kept.returncode == 0, kept.stderr
    assert scalar(database_url, "SELECT count(*) FROM sites WHERE id LIKE 'scn-%%'") == 2
    removed = safeguard("simulate", *common)
    assert removed.returncode == 0, removed.stderr
    assert "deleted the 2 sites this run registered" in removed.stderr
    assert scalar(database_url, "SELECT count(*) FROM sites WHERE id LIKE 'scn-%%'") == 0


def test_tokens_listed_revoked_and_expiring(gateway: Gateway) -> None:
    database_url = gateway.settings.database.url
    created = safeguard("token", "create", "--role", "inspector", "--name", "bureau", "--expires", "30d",
                        database_url=database_url)
    assert created.returncode == 0, created.stderr
    assert "valid until" in created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert httpx.get(f"{gateway.api_url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    listing = safeguard("token", "list", database_url=database_url)
    assert listing.returncode == 0, listing.stderr
    (row,) = [line.split("\t") for line in listing.stdout.splitlines()[1:] if "\tbureau\t" in line]
    assert row[1:4] == ["active", "inspector", "-"]
    assert token not in listing.stdout

    api = Api(gateway.api_url)
    items = api.http.get("/api/v1/tokens").json()["items"]
    (listed,) = [i for i in items if i["name"] == "bureau"]
    assert listed["status"] == "active"
    assert listed["expires_at"].endswith("Z")
    assert "token_hash" not in listed
    inspector = httpx.Client(base_url=gateway.api_url, headers={"Authorization": f"Bearer {token}"})
    assert inspector.get("/api/v1/tokens").status_code == 403  # admins only

    assert api.http.delete(f"/api/v1/tokens/{listed['id']}").status_code == 200
    assert inspector.get("/api/v1/me").status_code == 401  # refused from the next request on
    assert api.http.delete(f"/api/v1/tokens/{listed['id']}").status_code == 404
    again = safeguard("token", "revoke", row[0], database_url=database_url)
    assert again.returncode == 2
    assert "no live token" in again.stderr


def test_an_expired_token_is_refused(database_url: str) -> None:
    with connect(database_url) as conn:
        token = create_token(conn, role=Role.FIRE_BRIGADE, name="drill",
                             expires_at=datetime.now(UTC) + timedelta(hours=1))
        assert authenticate(conn, token, None) is not None
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'drill'")
        conn.commit()
        assert authenticate(conn, token, None) is None
        with pytest.raises(ValueError, match="already passed"):
            create_token(conn, role=Role.FIRE_BRIGADE, name="late", expires_at=datetime.now(UTC) - timedelta(days=1))
    listing = safeguard("token", "list", database_url=database_url)
    assert "\texpired\tfire_brigade\t" in listing.stdout


def test_fleet_prefix_is_what_the_run_deletes() -> None:
    assert [s.id for s in fleet(2, prefix="scn").sites] == ["scn-0001", "scn-0002"]
