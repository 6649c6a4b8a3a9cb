"""Alarms first and several ingest workers, against a real Mosquitto and PostgreSQL.

* the alarm lane: a smoke alarm published after a flood of camera heartbeats is stored and
  raised while the heartbeats are still being stored (one session for everything would
  deliver it last);
* two ingest workers on one shared subscription store a mixed feed exactly once, each
  taking a share;
* a worker SIGKILLed mid-load and restarted under its id loses nothing and duplicates
  nothing: what it had not acknowledged is delivered again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import metrics
from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store import overflow as overflow_store
from gateway.store.db import connect
from gateway.store.overflow import SetAside
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import MessageType, device_topic
from safeguard.devservers import IngestProcess, MosquittoServer
from simulators.load import LoadPlan, finish, province_plan, site_id, start
from simulators.load import run as run_load
from tests.support import Agent, child_pids, duplicate_readings, scalar, wait_for

pytestmark = pytest.mark.integration


def register(database_url: str, sites: list[str]) -> None:
    with connect(database_url) as conn:
        upsert_sites(conn, [SiteRecord(id=s) for s in sites])
        conn.commit()


@pytest.fixture
def big_broker(tmp_path: Any) -> Iterator[MosquittoServer]:
    """A broker that queues a whole flood for an absent gateway (the shipped config raises the limit too)."""
    server = MosquittoServer(tmp_path / "mosquitto-big", max_queued_messages=200_000)
    server.start()
    yield server
    server.stop()


def _flood_then_alarm(settings: Settings, plan: LoadPlan, flooded: str) -> int:
    """``plan``'s flood queued for an absent gateway, then one smoke alarm behind it all; the gateway
    comes back and drains. Returns how many readings of the flood (``flooded``: their count) were
    stored when the alarm was raised; everything is stored once in the end."""
    flood = plan.messages
    register(settings.database.url, [*(site_id(plan, i) for i in range(plan.sites)), "site-fire"])
    gateway = Gateway(settings, supervise=False, api=False)
    gateway.start()  # the sessions exist; the gateway goes away while the flood arrives
    assert gateway.ingest is not None
    assert gateway.ingest.wait_connected(10)
    gateway.stop()
    report = run_load(plan)
    assert (report.published, report.failed) == (flood, 0)
    with contextlib.closing(_Alarmist(plan.url)) as alarmist:
        alarmist.alarm()  # published last, behind every reading of the flood

    gateway = Gateway(settings, supervise=False, api=False)
    gateway.start()
    try:
        def flood_stored_when_alarm_raised() -> int | None:
            with connect(settings.database.url) as conn:
                row = conn.execute(
                    f"SELECT (SELECT count(*) FROM alerts WHERE kind = 'fire_alarm') AS alarms, ({flooded}) AS stored"
                ).fetchone()
            assert row is not None
            return row["stored"] + 1 if row["alarms"] else None  # +1: zero stored is an answer too

        stored_then = wait_for(flood_stored_when_alarm_raised, timeout=120, what="the fire alarm") - 1
        wait_for(lambda: scalar(settings.database.url, "SELECT count(*) FROM readings") >= flood + 1,
                 timeout=300, what="the whole flood stored")
        wait_for(lambda: scalar(settings.database.url, "SELECT count(*) FROM ingest_overflow") == 0 or None,
                 timeout=60, what="the overflow taken back")
    finally:
        gateway.stop()
    assert scalar(settings.database.url, "SELECT count(*) FROM readings") == flood + 1
    assert duplicate_readings(settings.database.url) == 0
    return stored_then


def test_alarm_is_raised_while_a_heartbeat_flood_is_still_being_stored(
    settings: Settings, big_broker: MosquittoServer
) -> None:
    flood = 20_000
    plan = LoadPlan(big_broker.url, flood, sites=50, cameras=4, processes=2)
    settings = settings.updated(mqtt_url=big_broker.url)
    stored_then = _flood_then_alarm(settings, plan, "SELECT count(*) FROM readings WHERE kind = 'camera'")
    assert stored_then < flood, "the alarm waited for the whole heartbeat flood"


_SMOKE_FLOOD = "SELECT count(*) FROM readings WHERE kind = 'smoke' AND site <> 'site-fire'"


def _smoke_flood_then_alarm(settings: Settings, broker: MosquittoServer, flood: int) -> tuple[LoadPlan, int]:
    """``flood`` smoke "normal" readings, on the alarm lane with the alarm behind them."""
    plan = LoadPlan(broker.url, flood, sites=50, cameras=0, smoke=10, processes=2)
    return plan, _flood_then_alarm(settings, plan, _SMOKE_FLOOD)


def test_alarm_on_the_alarm_lane_is_not_held_behind_a_flood_of_normal_smoke_readings(
    settings: Settings, big_broker: MosquittoServer
) -> None:
    """Four messages in five share the alarm lane with the alarms: a full hand-off sets them aside."""
    flood = 20_000
    settings = settings.updated(mqtt_url=big_broker.url, ingest_queue_max=500)
    set_aside = metrics.OVERFLOW.labels("alarm")
    before = set_aside._value.get()
    plan, stored_then = _smoke_flood_then_alarm(settings, big_broker, flood)
    assert stored_then < flood // 2, f"the alarm waited for {stored_then} of {flood} readings ahead of it"
    assert set_aside._value.get() - before > flood // 2, "the lane did not set the flood aside"
    devices = plan.sites * plan.devices_per_site
    assert scalar(settings.database.url, "SELECT count(*) FROM device_state WHERE site <> 'site-fire'") == devices
    newest = scalar(settings.database.url,
                    "SELECT count(*) FROM device_state ds WHERE ds.last_ts = (SELECT max(ts) FROM readings r"
                    " WHERE r.site = ds.site AND r.device = ds.device)")
    assert newest == devices + 1, "a device's state is not its newest reading by ts"


def test_without_the_overflow_the_same_alarm_waits_for_the_flood(
    settings: Settings, big_broker: MosquittoServer
) -> None:
    """The control: the same feed with ``ingest_overflow: false`` (what the first test guards against)."""
    flood = 6_000
    settings = settings.updated(mqtt_url=big_broker.url, ingest_queue_max=500, ingest_overflow=False)
    _, stored_then = _smoke_flood_then_alarm(settings, big_broker, flood)
    assert stored_then >= flood - 500 - 100, stored_then  # all but the hand-off's worth, give or take a batch


def test_worker_killed_while_setting_readings_aside_loses_nothing(
    settings: Settings, big_broker: MosquittoServer
) -> None:
    """SIGKILL while the overflow fills: what was set aside is in the table (its successor takes it
    back), what was not is unacknowledged (the broker delivers it again); each reading stored once."""
    url, database_url = big_broker.url, settings.database.url
    flood = 20_000
    plan = LoadPlan(url, flood, sites=50, cameras=0, smoke=10, processes=2)
    register(database_url, [site_id(plan, i) for i in range(plan.sites)])
    group = f"g{uuid.uuid4().hex[:6]}"
    env = {"SAFEGUARD_INGEST_QUEUE_MAX": "300"}
    worker = IngestProcess(url, database_url, f"{group}-0", group=group, env=env)
    try:
        worker.wait_connected()
        worker.stop()  # its sessions wait at the broker for the flood
        report = run_load(plan)
        assert (report.published, report.failed) == (flood, 0)
        worker = IngestProcess(url, database_url, f"{group}-0", group=group, env=env)
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM ingest_overflow") > 1_000 or None,
                 timeout=120, what="readings set aside")
        worker.kill()
        stored_at_kill = scalar(database_url, "SELECT count(*) FROM readings")
        worker = IngestProcess(url, database_url, f"{group}-0", group=group, env=env)  # its successor
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM readings") >= flood or None,
                 timeout=300, what="every reading stored")
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM ingest_overflow") == 0 or None,
                 timeout=60, what="the overflow taken back")
        time.sleep(1.0)  # any stray redelivery arrives, then count again
    finally:
        worker.stop()
    assert stored_at_kill < flood, "the kill was not mid-load"
    assert scalar(database_url, "SELECT count(*) FROM readings") == flood
    assert duplicate_readings(database_url) == 0
    assert not worker.errors, worker.errors


def test_set_aside_rows_left_by_an_earlier_run_are_stored_and_the_bad_ones_dead_lettered(
    settings: Settings,
) -> None:
    """Rows in ingest_overflow when a worker starts (its predecessor died): taken back at once; a
    malformed, an off-schema and a site-less one among them go to the dead letters with their
    reasons, and the good ones beside them are stored."""
    register(settings.database.url, ["site-a"])
    now = time.time()
    good = [SetAside(device_topic("site-a", f"smoke-{i}", MessageType.SMOKE), json.dumps(
        {"ts": now, "boot": "b1", "seq": i, "state": "normal", "battery_pct": 90.0}).encode(), now)
        for i in range(50)]
    bad = [
        SetAside("sg/v1/site-a/smoke-x/smoke", b"{not json", now),
        SetAside("sg/v1/site-a/smoke-y/smoke", json.dumps({"ts": now, "boot": "b1", "seq": 1,
                                                          "state": "smouldering"}).encode(), now),
        SetAside("sg/v1/nowhere/smoke-z/smoke", good[0].payload, now),
    ]
    with connect(settings.database.url) as conn:
        overflow_store.put(conn, good[:25] + bad + good[25:])
        conn.commit()
    gateway = Gateway(settings, supervise=False, api=False)
    gateway.start()
    try:
        wait_for(lambda: scalar(settings.database.url, "SELECT count(*) FROM ingest_overflow") == 0 or None,
                 timeout=60, what="the rows taken back")
    finally:
        gateway.stop()
    assert scalar(settings.database.url, "SELECT count(*) FROM readings WHERE site = 'site-a'") == len(good)
    with connect(settings.database.url) as conn:
        reasons = {r["topic"]: r["code"] for r in conn.execute("SELECT topic, code FROM dead_letters")}
    assert reasons == {"sg/v1/site-a/smoke-x/smoke": "malformed_json", "sg/v1/site-a/smoke-y/smoke": "invalid_schema",
                       "sg/v1/nowhere/smoke-z/smoke": "unknown_site"}, reasons


@pytest.mark.storage  # set-based writes into readings and device_state: on both storage paths
def test_two_workers_share_the_stream_and_store_it_once(settings: Settings, mosquitto: MosquittoServer) -> None:
    plan = province_plan(mosquitto.url, 4_000, sites=20, processes=2)
    register(settings.database.url, [site_id(plan, i) for i in range(plan.sites)])
    workers = []
    for index in range(2):
        worker_settings = settings.updated(mqtt_shared_group="gateway", ingest_worker_id=f"w{index}")
        gateway = Gateway(worker_settings, supervise=False, api=False)
        gateway.start()
        workers.append(gateway)
    try:
        for gateway in workers:
            assert gateway.ingest is not None
            assert gateway.ingest.wait_connected(10)
        ids = {lane.plan.client_id for gw in workers if gw.ingest for lane in gw.ingest.lanes}
        assert len(ids) == 4, ids  # two lanes per worker, every session its own
        report = run_load(plan)
        assert report.published == plan.messages
        wait_for(lambda: scalar(settings.database.url, "SELECT count(*) FROM readings") >= plan.messages,
                 timeout=120, what="every reading stored")
        shares = [sum(lane.accepted for lane in gw.ingest.lanes) for gw in workers if gw.ingest]
    finally:
        for gateway in workers:
            gateway.stop()
    assert scalar(settings.database.url, "SELECT count(*) FROM readings") == plan.messages
    assert duplicate_readings(settings.database.url) == 0
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == plan.messages
    devices = plan.sites * plan.devices_per_site
    assert scalar(settings.database.url, "SELECT count(*) FROM device_state") == devices


def test_worker_killed_mid_load_loses_nothing_and_raises_once(
    settings: Settings, big_broker: MosquittoServer
) -> None:
    url, database_url = big_broker.url, settings.database.url
    plan = province_plan(url, 30_000, sites=50, processes=2)
    register(database_url, [site_id(plan, i) for i in range(plan.sites)] + ["site-fire"])
    group = f"g{uuid.uuid4().hex[:6]}"
    workers = [IngestProcess(url, database_url, f"{group}-{i}", group=group) for i in range(2)]
    try:
        for worker in workers:
            worker.wait_connected()
        with contextlib.closing(_Alarmist(url)) as alarmist:
            alarmist.alarm()
            load = start(plan)
            wait_for(lambda: scalar(database_url, "SELECT count(*) FROM readings") > plan.messages // 5,
                     timeout=120, what="a fifth of the load stored")
            workers[0].kill()
            stored_at_kill = scalar(database_url, "SELECT count(*) FROM readings")
            alarmist.alarm()  # the same detector still in alarm: the same alert, counted again
            workers[0] = IngestProcess(url, database_url, f"{group}-0", group=group)  # its successor
            workers[0].wait_connected()
            report = finish(*load)
            assert report.published == plan.messages
            assert report.failed == 0
            total = plan.messages + alarmist.sent
            wait_for(lambda: scalar(database_url, "SELECT count(*) FROM readings") >= total,
                     timeout=300, what="every reading stored")
            time.sleep(1.0)  # any stray redelivery arrives, then count again
    finally:
        for worker in workers:
            worker.stop()
    assert stored_at_kill < plan.messages, "the kill was not mid-load"
    assert scalar(database_url, "SELECT count(*) FROM readings") == total
    assert duplicate_readings(database_url) == 0
    assert scalar(database_url, "SELECT count(*) FROM alerts WHERE kind = 'fire_alarm'") == 1
    assert all(not w.errors for w in workers), [w.errors for w in workers]


class _Alarmist:
    """A detector in alarm at site-fire, sent as its agent would (boot, growing seq)."""

    def __init__(self, url: str) -> None:
        self._agent = Agent(url, "site-fire")
        self.sent = 0

    def alarm(self) -> None:
        self._agent.publish_raw(device_topic("site-fire", "smoke-1", MessageType.SMOKE), json.dumps(
            {"ts": time.time(), "boot": self._agent.boot, "seq": self.sent, "state": "alarm",
             "battery_pct": 90.0, "obscuration_pct": 12.0}))
        self.sent += 1

    def close(self) -> None:
        self._agent.close()



def test_lanes_in_processes_of_their_own_store_what_each_is_for(settings: Settings, mosquitto: MosquittoServer) -> None:
    url, database_url = mosquitto.url, settings.database.url
    register(database_url, ["site-split"])
    alarm = IngestProcess(url, database_url, "split", group="", lane="alarm")
    try:
        alarm.wait_connected()
        agent = Agent(url, "site-split")
        try:
            agent.heartbeat("cam-1")
            agent.smoke("smoke-1", "alarm")
            wait_for(lambda: scalar(database_url, "SELECT count(*) FROM alerts WHERE kind = 'fire_alarm'"),
                     what="the alarm lane's fire alarm")
            assert scalar(database_url, "SELECT count(*) FROM readings WHERE kind = 'camera'") == 0
            routine = IngestProcess(url, database_url, "split", group="", lane="routine")
            try:
                routine.wait_connected()  # "connected" is logged before its subscription is in place:

                def heartbeat_stored() -> bool:  # so send again until one is stored (each a new seq)
                    agent.heartbeat("cam-1")
                    return scalar(database_url, "SELECT count(*) FROM readings WHERE kind = 'camera'") >= 1

                wait_for(heartbeat_stored, what="the routine lane's heartbeat")
            finally:
                routine.stop()
        finally:
            agent.close()
    finally:
        alarm.stop()
    assert scalar(database_url, "SELECT count(*) FROM readings WHERE kind = 'smoke'") == 1
    assert alarm.errors == []


def test_ingest_workers_command_runs_restarts_and_stops_its_children(
    settings: Settings, mosquitto: MosquittoServer
) -> None:
    """``safeguard ingest --workers 2``: two children on a shared subscription with stable ids; a
    child that dies is started again under its id; SIGTERM stops them all."""
    env = {**os.environ, "SAFEGUARD_MQTT_URL": mosquitto.url, "SAFEGUARD_DATABASE_URL": settings.database.url,
           "SAFEGUARD_MQTT_CLIENT_ID": "gw-pool", "SAFEGUARD_INGEST_WORKER_ID": "pool"}
    env.pop("SAFEGUARD_MQTT_SHARED_GROUP", None)
    parent = subprocess.Popen(
        [sys.executable, "-m", "safeguard.cli", "ingest", "--workers", "2"], env=env,
        stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(parent.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        def connected(worker: str) -> int:
            return sum(f"as gw-pool-{worker}-" in line and "connecting" in line for line in lines)

        wait_for(lambda: connected("pool-0") >= 2 and connected("pool-1") >= 2, what="both children's lanes")
        children = child_pids(parent.pid)
        assert len(children) == 2, children
        os.kill(children[0], signal.SIGKILL)
        wait_for(lambda: any("restarting it" in line for line in lines), what="the dead child restarted")
        wait_for(lambda: len(child_pids(parent.pid)) == 2, what="two children again")
        last = child_pids(parent.pid)
        assert children[0] not in last
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
    assert parent.returncode == 0
    assert [pid for pid in last if Path(f"/proc/{pid}").exists()] == []  # none outlives the parent

