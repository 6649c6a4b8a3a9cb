"""API roles and site scoping (DESIGN sections 4, 6, 7), token storage, pagination and health routes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.runtime import Gateway
from gateway.store.db import connect
from tests.support import Agent, SseReader, two_sites, wait_for
from tests.support import TwoSites as World

pytestmark = pytest.mark.integration


def encode_cursor(value: str) -> str:
    """A cursor as the API makes them (unpadded URL-safe base64 of the value)."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")

SITE_A = "site-a"
SITE_B = "site-b"
DEVICES: list[dict[str, Any]] = [
    {"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"},
    {"id": "exit-1", "kind": "exit", "name": "east exit", "location": "1F"},
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def world(gateway: Gateway) -> Iterator[World]:
    with two_sites(gateway, DEVICES, site_a=SITE_A, site_b=SITE_B, cameras_required=0) as sites:
        yield sites


def alarm(world: World, agent: Agent, device: str = "smoke-1") -> dict[str, Any]:
    agent.smoke(device, "alarm")
    return wait_for(
        lambda: world.admin.alert(kind="fire_alarm", site=agent.site, device=device, state="open"),
        what=f"fire alarm at {agent.site}/{device}",
    )


def blocked(world: World, agent: Agent, device: str) -> dict[str, Any]:
    agent.exit(device, "blocked", 0.5)
    return wait_for(
        lambda: world.admin.alert(kind="exit_blocked", site=agent.site, device=device),
        what=f"exit blocked at {agent.site}/{device}",
    )


# --------------------------------------------------------------------------- roles on alert actions


@pytest.mark.parametrize("role", ["fire_brigade", "admin"])
def test_fire_brigade_and_admin_may_ack_and_resolve(world: World, role: str) -> None:
    api = world.api(role)
    fire = alarm(world, world.agent_a)
    response = api.http.post(f"/api/v1/alerts/{fire['id']}/ack", json={"note": "en route"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "acknowledged"
    expected_name = "brigade-7" if role == "fire_brigade" else "ops"
    assert body["acknowledged_by"] == expected_name
    response = api.http.post(f"/api/v1/alerts/{fire['id']}/resolve", json={"note": "false alarm"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "resolved"
    assert response.json()["resolved_by"] == expected_name

    exit_alert = blocked(world, world.agent_b, "exit-1")
    response = api.http.post(f"/api/v1/alerts/{exit_alert['id']}/resolve")  # no body: note is optional
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "resolved"


@pytest.mark.parametrize("role", ["inspector", "institution"])
def test_inspector_and_institution_may_not_ack_or_resolve(world: World, role: str) -> None:
    api = world.api(role)
    fire = alarm(world, world.agent_a)  # site A: the institution token's own site
    exit_alert = blocked(world, world.agent_a, "exit-1")
    for alert in (fire, exit_alert):
        for step in ("ack", "resolve"):
            response = api.http.post(f"/api/v1/alerts/{alert['id']}/{step}", json={"note": "me"})
            assert response.status_code == 403, (step, response.text)
            assert "detail" in response.json()
    # Read access is fine, and nothing changed.
    for alert in (fire, exit_alert):
        response = api.http.get(f"/api/v1/alerts/{alert['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "open"


# --------------------------------------------------------------------------- institution scoping


def test_institution_token_sees_only_its_site_on_every_route(world: World) -> None:
    inst = world.api("institution").http
    fire_b = alarm(world, world.agent_b)
    fire_a = alarm(world, world.agent_a)

    sites = inst.get("/api/v1/sites")
    assert sites.status_code == 200, sites.text
    assert [s["id"] for s in sites.json()["items"]] == [SITE_A]
    assert inst.get(f"/api/v1/sites/{SITE_A}").status_code == 200
    assert inst.get(f"/api/v1/sites/{SITE_B}").status_code == 403
    assert inst.get(f"/api/v1/sites/{SITE_A}/devices").status_code == 200
    assert inst.get(f"/api/v1/sites/{SITE_B}/devices").status_code == 403

    alerts = inst.get("/api/v1/alerts")
    assert alerts.status_code == 200, alerts.text
    assert {a["site"] for a in alerts.json()["items"]} == {SITE_A}
    assert fire_a["id"] in [a["id"] for a in alerts.json()["items"]]
    assert inst.get("/api/v1/alerts", params={"site": SITE_A}).status_code == 200
    assert inst.get("/api/v1/alerts", params={"site": SITE_B}).status_code == 403
    assert inst.get(f"/api/v1/alerts/{fire_a['id']}").status_code == 200
    hidden = inst.get(f"/api/v1/alerts/{fire_b['id']}")
    assert hidden.status_code == 404, hidden.text
    # Acting on another site's alert does not reveal it either.
    assert inst.post(f"/api/v1/alerts/{fire_b['id']}/ack").status_code == 404

    for site in (SITE_A, SITE_B, "site-c"):
        put = inst.put(f"/api/v1/sites/{site}", json={"name": "mine now"})
        assert put.status_code == 403, (site, put.text)
    assert world.admin.http.get("/api/v1/sites/site-c").status_code == 404
    assert world.admin.http.get(f"/api/v1/sites/{SITE_A}").json()["name"] == "A school"
    assert inst.get("/api/v1/dead-letters").status_code == 403


def test_institution_sse_stream_shows_only_its_site(world: World) -> None:
    reader = SseReader(world.gateway.api_url, world.tokens["institution"])
    admin_reader = SseReader(world.gateway.api_url, world.tokens["admin"])
    try:
        fire_b = alarm(world, world.agent_b)
        fire_a = alarm(world, world.agent_a)
        event = reader.next()
        assert event["event"] == "alert"
        assert event["data"]["site"] == SITE_A
        assert event["data"]["id"] == fire_a["id"]
        # The admin stream carried both, B's first; the institution's skipped B's.
        seen = [admin_reader.next()["data"]["id"] for _ in range(2)]
        assert seen == [fire_b["id"], fire_a["id"]]
        # Later B changes are not shown either; a later A change is.
        world.admin.http.post(f"/api/v1/alerts/{fire_b['id']}/ack")
        world.admin.http.post(f"/api/v1/alerts/{fire_a['id']}/ack")
        event = reader.next()
        assert event["data"]["site"] == SITE_A
        assert event["data"]["state"] == "acknowledged"
        assert reader.events.empty()
    finally:
        reader.close()
        admin_reader.close()
    # Replay with Last-Event-ID is scoped too.
    replay = SseReader(world.gateway.api_url, world.tokens["institution"], last_event_id=0)
    try:
        sites = set()
        for _ in range(2):
            sites.add(replay.next()["data"]["site"])
        assert sites == {SITE_A}
    finally:
        replay.close()


# --------------------------------------------------------------------------- authentication and tokens


def test_missing_or_bad_token_is_401(world: World) -> None:
    base = world.gateway.api_url
    for path in ("/api/v1/alerts", "/api/v1/sites", f"/api/v1/sites/{SITE_A}", "/api/v1/dead-letters"):
        response = httpx.get(f"{base}{path}", timeout=10)
        assert response.status_code == 401, (path, response.text)
        assert "detail" in response.json()
        for header in ("Bearer nope", "Bearer sg_" + "x" * 43, "Basic dXNlcjpwYXNz", "Bearer"):
            response = httpx.get(f"{base}{path}", headers={"Authorization": header}, timeout=10)
            assert response.status_code == 401, (path, header, response.text)
    assert httpx.get(f"{base}/api/v1/alerts/stream", timeout=10).status_code == 401
    assert httpx.post(f"{base}/api/v1/alerts/1/ack", timeout=10).status_code == 401


def test_tokens_are_stored_hashed(world: World) -> None:
    with connect(world.gateway.settings.database.url) as conn:
        rows = conn.execute("SELECT t::text AS line, token_hash FROM api_tokens t").fetchall()
    assert len(rows) == len(world.tokens)
    for token in world.tokens.values():
        for row in rows:
            assert token not in row["line"]
            assert token.encode() not in bytes(row["token_hash"])
            assert token.encode().hex() not in row["line"]
    # And the tokens work.
    for who in world.tokens:
        assert world.api(who).http.get("/api/v1/alerts").status_code == 200


# --------------------------------------------------------------------------- pagination and health


def test_alerts_cursor_pagination_newest_first(world: World) -> None:
    exits = [f"exit-{i}" for i in range(1, 6)]
    created = [blocked(world, world.agent_a, device)["id"] for device in exits]
    assert created == sorted(created)

    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = world.admin.http.get("/api/v1/alerts", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([a["id"] for a in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "pagination does not end"
    assert [len(p) for p in pages] == [2, 2, 1]
    ids = [i for p in pages for i in p]
    assert ids == sorted(created, reverse=True)
    assert len(set(ids)) == len(ids)
    # The institution token pages through its own site only, same shape.
    inst = world.api("institution").http.get("/api/v1/alerts", params={"limit": 5}).json()
    assert inst["next_cursor"] is None
    assert [a["id"] for a in inst["items"]] == ids


@pytest.mark.parametrize("path", ["/api/v1/alerts", "/api/v1/dead-letters"])
@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!",
        encode_cursor("-1"),
        encode_cursor("abc"),
        "%%%",
        encode_cursor("\u00b2"),  # str.isdigit() is true for a superscript two; int() refuses it
        pytest.param(encode_cursor(str(2**63)), id="beyond-bigint"),  # was a 500 (fixed in 987974a)
        pytest.param(encode_cursor("9" * 30), id="30-digits"),
    ],
)
def test_bad_cursor_is_400(world: World, path: str, cursor: str) -> None:
    response = world.admin.http.get(path, params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert "detail" in response.json()


def test_health_ready_and_metrics_without_token(world: World) -> None:
    base = world.gateway.api_url
    blocked(world, world.agent_a, "exit-1")
    health = httpx.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 200, health.text
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True
    assert body["checks"] == {"broker": True, "database": True}
    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'sg_open_alerts{kind="exit_blocked"} 1.0' in metrics.text
    assert 'sg_open_alerts{kind="fire_alarm"} 0.0' in metrics.text


@pytest.mark.parametrize("role", ["fire_brigade", "inspector", "institution", "admin"])
def test_me_tells_the_token_its_role(world: World, role: str) -> None:
    response = world.api(role).http.get("/api/v1/me")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["role"] == role
    assert (body["site"] is not None) == (role == "institution")
