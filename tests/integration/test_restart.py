"""A gateway restarted in the middle of a stream loses nothing and duplicates nothing.

The ingest session is persistent and messages are acknowledged only after their batch
committed, so what was in flight at the stop is redelivered to the new process; readings are
idempotent, so redelivered ones are stored once and raise no alert twice.
Stopping PostgreSQL under the gateway is not possible per test (the server is shared by the
session); dropping every connection to the test's database (what a failover does to clients)
is, and is covered.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.config import Settings
from gateway.runtime import Gateway
from tests.support import Agent, AlertSubscriber, Api, duplicate_readings, scalar, terminate_backends, wait_for

pytestmark = pytest.mark.integration

SITE = "site-restart"
CAMERAS = [f"cam-{i}" for i in range(1, 6)]
FROZEN = "cam-5"  # reports a frozen stream all along: one camera_stream_fault, before and after
N = 2000
STOP_AFTER = 600


def start_gateway(settings: Settings) -> Gateway:
    gw = Gateway(settings)
    gw.start()
    assert gw.ingest is not None
    assert gw.ingest.wait_connected(10), "gateway did not connect to the broker"
    return gw


class Publisher(threading.Thread):
    """Sends ``total`` heartbeats round-robin over the cameras (QoS 1, each acknowledged by the broker)."""

    def __init__(self, agent: Agent, total: int, pause_s: float) -> None:
        super().__init__(name="publisher", daemon=True)
        self.agent = agent
        self.total = total
        self.pause_s = pause_s
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.total):
                camera = CAMERAS[i % len(CAMERAS)]
                self.agent.heartbeat(camera, "frozen" if camera == FROZEN else "ok")
                self.sent += 1
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc


@pytest.fixture
def gateways(settings: Settings) -> Iterator[list[Gateway]]:
    running: list[Gateway] = []
    yield running
    for gw in running:
        with contextlib.suppress(Exception):
            gw.stop()


def test_restart_mid_stream_stores_every_reading_once(settings: Settings, gateways: list[Gateway]) -> None:
    database_url = settings.database.url
    first = start_gateway(settings)
    gateways.append(first)
    api = Api(first.api_url)
    api.put_site(SITE, name="Restart", city="Hangzhou", county="Xihu", cameras_required=len(CAMERAS))
    agent = Agent(settings.mqtt.url, SITE)
    watcher = AlertSubscriber(settings.mqtt.url)
    try:
        agent.birth([{"id": c, "kind": "camera", "name": c, "location": "1F"} for c in CAMERAS]
                    + [{"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"}])
        agent.smoke("smoke-1", "alarm")
        fire = wait_for(lambda: api.alert(kind="fire_alarm", site=SITE), what="fire alarm before the restart")

        publisher = Publisher(agent, N, pause_s=0.002)
        publisher.start()
        wait_for(lambda: publisher.sent >= STOP_AFTER or publisher.error, what=f"{STOP_AFTER} heartbeats sent")
        stream_fault = wait_for(lambda: api.alert(kind="camera_stream_fault", site=SITE, device=FROZEN),
                                what="stream fault before the restart")

        first.stop()
        gateways.remove(first)
        sent_at_stop = publisher.sent
        stored_at_stop = scalar(database_url, "SELECT count(*) FROM readings WHERE kind = 'camera'")
        second = start_gateway(settings)
        gateways.append(second)
        api = Api(second.api_url)
        agent.smoke("smoke-1", "alarm")  # the alarm goes on: still the same alert, not a new one

        publisher.join(60)
        assert not publisher.is_alive()
        assert publisher.error is None, repr(publisher.error)
        assert 0 < sent_at_stop < N, f"the restart was not mid-stream ({sent_at_stop} of {N} sent)"
        assert stored_at_stop < N

        def stored() -> int:
            return scalar(database_url, "SELECT count(*) FROM readings WHERE kind = 'camera'")

        wait_for(lambda: stored() >= N, what=f"{N} heartbeats stored")
        time.sleep(1.0)  # let any stray redelivery arrive, then count again
        assert stored() == N
        for camera in CAMERAS:
            per_device = scalar(
                database_url,
                "SELECT count(*) FROM readings WHERE site = %s AND device = %s", SITE, camera,
            )
            assert per_device == N // len(CAMERAS), camera
        assert duplicate_readings(database_url) == 0
        assert scalar(database_url, "SELECT count(*) FROM readings WHERE kind = 'smoke'") == 2

        # One alert per key: nothing raised twice by redelivered messages.
        alerts = api.alerts(site=SITE, limit=1000)
        keys = [(a["device"], a["kind"]) for a in alerts]
        assert len(keys) == len(set(keys)), keys
        assert sorted(keys, key=str) == sorted([(FROZEN, "camera_stream_fault"), ("smoke-1", "fire_alarm")], key=str)
        by_kind = {a["kind"]: a for a in alerts}
        assert by_kind["fire_alarm"]["id"] == fire["id"]
        assert by_kind["fire_alarm"]["count"] == 1
        assert by_kind["fire_alarm"]["state"] == "open"
        assert by_kind["camera_stream_fault"]["id"] == stream_fault["id"]
        assert by_kind["camera_stream_fault"]["count"] == 1
        history = api.http.get(f"/api/v1/alerts/{stream_fault['id']}").json()["history"]
        assert [h["action"] for h in history] == ["opened"]
        assert api.dead_letters() == []

        # Every alert change went out on sg/v1/alerts/{site} once: none lost, none repeated by the restart.
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM alert_history WHERE NOT relayed") == 0,
                 what="every alert change relayed")
        changes = scalar(database_url, "SELECT count(*) FROM alert_history")
        wait_for(lambda: watcher.messages.qsize() >= changes, what=f"{changes} relayed alert messages")
        time.sleep(0.5)
        relayed = [alert for _topic, alert in watcher.drain()]
        assert sorted((m["id"], m["state"]) for m in relayed) == sorted(
            [(fire["id"], "open"), (stream_fault["id"], "open")]
        )
    finally:
        watcher.close()
        with contextlib.suppress(Exception):
            agent.close()


def test_dropped_database_connections_mid_stream_lose_nothing(gateway: Gateway) -> None:
    database_url = gateway.settings.database.url
    api = Api(gateway.api_url)
    api.put_site(SITE, name="Failover", city="Hangzhou", county="Xihu", cameras_required=len(CAMERAS))
    agent = Agent(gateway.settings.mqtt.url, SITE)
    try:
        agent.birth([{"id": c, "kind": "camera", "name": c, "location": "1F"} for c in CAMERAS])
        total = 1000
        publisher = Publisher(agent, total, pause_s=0.002)
        publisher.start()
        dropped = 0
        for mark in (250, 500, 750):
            wait_for(lambda: publisher.sent >= mark or publisher.error, what=f"{mark} heartbeats sent")  # noqa: B023 - called in this iteration
            dropped += terminate_backends(database_url)
        publisher.join(60)
        assert publisher.error is None, repr(publisher.error)
        assert dropped > 0

        def stored() -> int:
            return scalar(database_url, "SELECT count(*) FROM readings WHERE site = %s", SITE)

        wait_for(lambda: stored() >= total, what=f"{total} heartbeats stored")
        time.sleep(0.5)
        assert stored() == total
        fault = wait_for(lambda: api.alert(kind="camera_stream_fault", site=SITE), what="the frozen camera's alert")
        assert fault["device"] == FROZEN
        assert [(a["device"], a["kind"]) for a in api.alerts(site=SITE)] == [(FROZEN, "camera_stream_fault")]
        assert api.dead_letters() == []
        ready = api.http.get("/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        with contextlib.suppress(Exception):
            agent.close()
