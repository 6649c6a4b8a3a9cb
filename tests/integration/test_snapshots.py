"""GET /api/v1/sites/{site}/devices/{device}/snapshot: the latest JPEG an exit sent over MQTT."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.snapshots import LATEST_SNAPSHOT_SQL
from protocol import MessageType, device_topic
from tests.support import Agent, two_sites, wait_for
from tests.support import TwoSites as World

pytestmark = pytest.mark.integration

SITE_A = "site-a"
SITE_B = "site-b"
DEVICES: list[dict[str, Any]] = [
    {"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"},
    {"id": "exit-1", "kind": "exit", "name": "east exit", "location": "1F"},
    {"id": "exit-2", "kind": "exit", "name": "west exit", "location": "1F"},
]


def jpeg(width: int, height: int, value: int) -> bytes:
    """A small real JPEG (the gateway refuses snapshots without the JPEG magic bytes)."""
    image = np.full((height, width, 3), value, dtype=np.uint8)
    cv2.rectangle(image, (2, 2), (width // 2, height // 2), (0, 0, 255), -1)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


@pytest.fixture
def world(gateway: Gateway) -> Iterator[World]:
    with two_sites(gateway, DEVICES, site_a=SITE_A, site_b=SITE_B) as sites:
        yield sites


def path(site: str, device: str) -> str:
    return f"/api/v1/sites/{site}/devices/{device}/snapshot"


def publish(world: World, agent: Agent, device: str, image: bytes) -> datetime:
    """Publish a snapshot over MQTT and wait until the API serves it; returns its X-Snapshot-At."""
    agent.publish_raw(device_topic(agent.site, device, MessageType.SNAPSHOT), image)

    def served() -> httpx.Response | None:
        response = world.admin.http.get(path(agent.site, device))
        return response if response.status_code == 200 and response.content == image else None

    response = wait_for(served, what=f"snapshot of {agent.site}/{device}")
    return datetime.fromisoformat(response.headers["x-snapshot-at"])


def test_latest_snapshot_is_served_as_published(world: World) -> None:
    first = jpeg(64, 48, 40)
    second = jpeg(80, 60, 200)
    assert first != second
    at_first = publish(world, world.agent_a, "exit-1", first)
    at_second = publish(world, world.agent_a, "exit-1", second)
    assert at_second > at_first

    response = world.admin.http.get(path(SITE_A, "exit-1"))
    assert response.status_code == 200, response.text
    assert response.content == second  # exactly the newest bytes
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    stamp = response.headers["x-snapshot-at"]
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp) == at_second
    # The devices list announces the same time.
    devices = {d["id"]: d for d in world.admin.http.get(f"/api/v1/sites/{SITE_A}/devices").json()["items"]}
    assert devices["exit-1"]["latest_snapshot_at"] == stamp
    assert devices["exit-2"]["latest_snapshot_at"] is None

    # Every role may read it (the institution its own site).
    for who in ("fire_brigade", "inspector", "institution", "admin"):
        got = world.http(who).get(path(SITE_A, "exit-1"))
        assert got.status_code == 200, (who, got.text)
        assert got.content == second


def test_snapshot_404s(world: World) -> None:
    publish(world, world.agent_a, "exit-1", jpeg(32, 32, 90))
    for site, device in (
        (SITE_A, "exit-2"),  # a known exit with no snapshot yet
        (SITE_A, "smoke-1"),  # a device that never sends any
        (SITE_A, "exit-9"),  # an unknown device
        (SITE_B, "exit-1"),  # the same device id at another site has none
        ("site-zz", "exit-1"),  # an unknown site
    ):
        response = world.admin.http.get(path(site, device))
        assert response.status_code == 404, (site, device, response.text)
        assert "detail" in response.json()


def test_institution_is_refused_other_sites_and_no_token_is_401(world: World) -> None:
    publish(world, world.agent_b, "exit-1", jpeg(32, 32, 120))
    inst = world.http("institution")
    for site in (SITE_B, "site-zz"):  # refused before anything is looked up: nothing is revealed
        response = inst.get(path(site, "exit-1"))
        assert response.status_code == 403, (site, response.text)
        assert "detail" in response.json()
    base = world.gateway.api_url
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = httpx.get(f"{base}{path(SITE_B, 'exit-1')}", headers=headers, timeout=10)
        assert response.status_code == 401, response.text
        assert "detail" in response.json()
    # Unlike the SSE stream, the snapshot route takes no ?access_token=.
    token = world.tokens["admin"]
    response = httpx.get(f"{base}{path(SITE_B, 'exit-1')}", params={"access_token": token}, timeout=10)
    assert response.status_code == 401, response.text


def test_latest_snapshot_query_uses_the_device_index(world: World) -> None:
    with connect(world.gateway.settings.database.url) as conn:
        conn.execute(
            "INSERT INTO devices (site, id, kind) SELECT %s, 'exit-' || n, 'exit' FROM generate_series(10, 59) n",
            (SITE_A,),
        )
        conn.execute(
            "INSERT INTO snapshots (site, device, received_at, jpeg)"
            " SELECT %s, 'exit-' || (10 + n %% 50), now() - n * interval '1 second', '\\xffd8ff'::bytea"
            " FROM generate_series(1, 20000) n",
            (SITE_A,),
        )
        conn.execute("ANALYZE snapshots")
        plan = "\n".join(
            next(iter(r.values())) for r in conn.execute(f"EXPLAIN {LATEST_SNAPSHOT_SQL}", (SITE_A, "exit-17"))
        )
        conn.commit()
    assert "snapshots_device" in plan, plan
    assert "Seq Scan" not in plan, plan
    # At most an incremental sort on the id tie-break: never a full sort of the device's snapshots.
    assert not re.search(r"^\s*(->\s*)?Sort\s+\(", plan, re.MULTILINE), plan
    response = world.admin.http.get(path(SITE_A, "exit-17"))
    assert response.status_code == 200, response.text
    assert response.content == b"\xff\xd8\xff"
