"""Issue 15 against the real Mosquitto and PostgreSQL: bounded memory under a burst while the
database holds the writes back, exactly once by (site, device, boot, seq) whatever the ts, a ts
from the future refused (and the agent's clock skew alerted), counters that add up, and a message
only the database refuses isolated in a few transactions with one log line per reason."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import ConnectionPool

from gateway.config import Settings
from gateway.ingest.batch import Inbound
from gateway.ingest.service import Lane, _LaneWorker, lane_plans
from gateway.runtime import Gateway
from gateway.store.db import Conn, open_pool
from protocol import MessageType, device_topic
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client
from tests.support import Agent, Api, duplicate_readings, scalar, wait_for

pytestmark = pytest.mark.integration

SITE = "site-bounds"
DEVICES: list[dict[str, Any]] = [
    {"id": "cam-1", "kind": "camera"},
    {"id": "smoke-1", "kind": "smoke"},
    {"id": "exit-1", "kind": "exit"},
]


def counters(base_url: str) -> dict[str, float]:
    """The ingest counters in GET /metrics: received, accepted, duplicate, rejected (all reasons)."""
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    found = {"received": 0.0, "accepted": 0.0, "duplicate": 0.0, "rejected": 0.0}
    names = {"sg_messages_received": "received", "sg_messages_accepted": "accepted",
             "sg_messages_duplicate": "duplicate", "sg_messages_rejected": "rejected"}
    for family in text_string_to_metric_families(response.text):
        if family.name in names:
            found[names[family.name]] += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return found


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: round(after[k] - before[k]) for k in after}


@contextlib.contextmanager
def started(settings: Settings) -> Iterator[Gateway]:
    gw = Gateway(settings)
    gw.start()
    try:
        assert gw.ingest is not None
        assert gw.ingest.wait_connected(10)
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def agent(gateway: Gateway) -> Iterator[Agent]:
    Api(gateway.api_url).put_site(SITE, name="Bounds")
    made = Agent(gateway.settings.mqtt.url, SITE)
    made.birth(DEVICES)
    wait_for(lambda: scalar(gateway.settings.database.url, "SELECT count(*) FROM devices WHERE site = %s", SITE) == 3
             or None, what="the birth stored")
    yield made
    with contextlib.suppress(Exception):
        made.close()


def _hb(agent: Agent, seq: int, ts: float) -> bytes:
    return json.dumps({"ts": ts, "boot": agent.boot, "seq": seq, "stream": "ok", "fps": 10.0}).encode()


# --- exactly once by (site, device, boot, seq) -----------------------------------------------


@pytest.mark.parametrize("spread", [False, True], ids=["one_batch", "four_batches"])
def test_same_boot_and_seq_with_other_ts_is_stored_once(
    gateway: Gateway, agent: Agent, storage: str, spread: bool
) -> None:
    url = gateway.settings.database.url
    before = counters(gateway.api_url)
    topic = device_topic(SITE, "cam-1", MessageType.HEARTBEAT)
    now = time.time()
    for i in range(4):
        agent.publish_raw(topic, _hb(agent, 7, now - 60 + i * 10))
        if spread:  # each its own batch: the key table, not the batch, finds the repeat
            wait_for(_received(gateway, before, i + 1), what=f"send {i + 1} handled")
    wait_for(_received(gateway, before, 4), what="4 sends handled")
    assert scalar(url, "SELECT count(*) FROM readings WHERE site = %s AND seq = 7", SITE) == 1
    assert scalar(url, "SELECT count(*) FROM reading_keys WHERE site = %s AND seq = 7", SITE) == 1
    assert duplicate_readings(url) == 0
    assert delta(counters(gateway.api_url), before) == {"received": 4, "accepted": 1, "duplicate": 3, "rejected": 0}
    first = scalar(url, "SELECT (abs(extract(epoch FROM ts) - %s) < 0.001)::int FROM readings"
                        " WHERE site = %s AND seq = 7", now - 60, SITE)
    assert first == 1  # the first send is the one kept


def _received(gateway: Gateway, before: dict[str, float], n: int) -> Callable[[], bool | None]:
    return lambda: delta(counters(gateway.api_url), before)["received"] == n or None


# --- timestamps checked at the boundary --------------------------------------------------------


def test_one_reading_from_the_future_cannot_make_an_exit_stale(gateway: Gateway, agent: Agent) -> None:
    api = Api(gateway.api_url)
    ten_years = 10 * 365 * 86_400
    agent.exit("exit-1", "clear", ts=time.time() + ten_years)
    letter = wait_for(lambda: next((d for d in api.dead_letters() if d["code"] == "future_timestamp"), None),
                      what="the future reading dead-lettered")
    assert "ahead of its arrival" in letter["reason"]
    agent.exit("exit-1", "blocked", ratio=0.9)
    alert = wait_for(lambda: api.alert(kind="exit_blocked", site=SITE, device="exit-1"), what="exit_blocked raised")
    assert alert["state"] == "open"


def test_clock_skew_alert_raised_ahead_and_resolved_when_back(gateway: Gateway, agent: Agent) -> None:
    api = Api(gateway.api_url)
    url = gateway.settings.database.url
    tolerance = gateway.settings.liveness.future_ts_tolerance_s
    sent = 0

    def one(ahead_s: float) -> None:  # one message, handled alone (its own batch)
        nonlocal sent
        agent.smoke("smoke-1", ts=time.time() + ahead_s)
        sent += 1
        wait_for(lambda: scalar(url, "SELECT count(*) FROM readings WHERE site = %s AND device = 'smoke-1'", SITE)
                 + scalar(url, "SELECT count(*) FROM dead_letters WHERE code = 'future_timestamp'") == sent or None,
                 what="the reading handled")

    one(10 * tolerance)  # one wild message: no alert
    assert api.alert(kind="clock_skew", site=SITE) is None
    for _ in range(30):  # a clock steadily 1.5 x the tolerance ahead
        one(1.5 * tolerance)
        if api.alert(kind="clock_skew", site=SITE) is not None:
            break
    alert = api.alert(kind="clock_skew", site=SITE)
    assert alert is not None, "no clock_skew alert"
    assert alert["severity"] == "minor"
    assert alert["device"] is None
    assert alert["detail"]["skew_s"] > tolerance
    for _ in range(30):  # the clock set right
        one(0)
        if api.get_alert(alert["id"])["state"] == "resolved":
            break
    assert api.get_alert(alert["id"])["state"] == "resolved"


# --- counters that add up ------------------------------------------------------------------------


def test_counters_add_up_over_a_mix_of_good_duplicate_and_bad(gateway: Gateway, agent: Agent) -> None:
    url = gateway.settings.database.url
    before = counters(gateway.api_url)
    dead_before = scalar(url, "SELECT count(*) FROM dead_letters")
    hb = device_topic(SITE, "cam-1", MessageType.HEARTBEAT)
    now = time.time()
    good = 0
    for seq in range(100, 110):  # routine lane
        agent.publish_raw(hb, _hb(agent, seq, now))
        good += 1
    for _ in range(5):  # alarm lane (the routine lane on sg/v1/# skips these unread: not received there)
        agent.smoke("smoke-1")
        agent.exit("exit-1")
        good += 2
    agent.birth(DEVICES)  # a status is accepted too
    good += 1
    for seq in range(100, 103):  # the same key again, with another ts: duplicates
        agent.publish_raw(hb, _hb(agent, seq, now + 1))
    bad = {
        "malformed_json": (hb, b'{"ts": '),
        "invalid_schema": (hb, b'{"ts": 1.0}'),
        "bad_topic": (f"sg/v1/{SITE}/cam-1/video", _hb(agent, 1, now)),
        "unknown_site": (device_topic("no-such-site", "cam-1", MessageType.HEARTBEAT), _hb(agent, 1, now)),
        "wrong_device_kind": (device_topic(SITE, "cam-1", MessageType.SMOKE),
                              json.dumps({"ts": now, "boot": agent.boot, "seq": 1, "state": "normal"}).encode()),
        "future_timestamp": (hb, _hb(agent, 200, now + 3600)),
        "oversize": (hb, b" " * (256 * 1024 + 1)),
        "bad_snapshot": (device_topic(SITE, "exit-1", MessageType.SNAPSHOT), b"GIF89a"),
    }
    for topic, payload in bad.values():
        agent.publish_raw(topic, payload)
    expected = {"received": good + 3 + len(bad), "accepted": good, "duplicate": 3, "rejected": len(bad)}
    wait_for(lambda: delta(counters(gateway.api_url), before)["received"] >= expected["received"] or None,
             what="every message handled")
    time.sleep(0.5)  # nothing more may come: the counts must not overshoot either
    got = delta(counters(gateway.api_url), before)
    assert got == expected
    assert got["received"] == got["accepted"] + got["duplicate"] + got["rejected"]
    codes = {r["code"] for r in _rows(url, "SELECT code FROM dead_letters ORDER BY id OFFSET %s", dead_before)}
    assert codes == set(bad)


def _rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, params).fetchall()


# --- a message only the database refuses ---------------------------------------------------------


def test_a_message_the_database_refuses_is_isolated_by_bisection(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id) VALUES (%s)", (SITE,))
        # Something the boundary cannot know: the database refuses seq 13 (a stand-in for any such value).
        conn.execute("ALTER TABLE readings ADD CONSTRAINT no_thirteen CHECK (seq <> 13)")
    pool: ConnectionPool[Conn] = open_pool(database_url, max_size=2)
    try:
        plan = next(p for p in lane_plans(settings) if p.lane is Lane.ROUTINE)
        lane = _LaneWorker(settings, pool, plan)
        calls = 0
        process = lane._processor.process

        def counted(conn: Conn, messages: Any) -> Any:
            nonlocal calls
            calls += 1
            return process(conn, messages)

        lane._processor.process = counted  # type: ignore[method-assign]
        topic = device_topic(SITE, "cam-1", MessageType.HEARTBEAT)
        now = time.time()
        batch = [Inbound(topic, json.dumps({"ts": now, "boot": "b", "seq": s, "stream": "ok", "fps": 1.0}).encode(),
                         now) for s in range(1000)]
        caplog.set_level(logging.WARNING, logger="gateway.ingest.service")
        result = lane._write(batch)
        lane._rejects.add(result.dead)
        lane._rejects.flush(force=True)
    finally:
        pool.close()
    assert result.accepted == 999
    assert [(d.code, json.loads(d.message.payload)["seq"]) for d in result.dead] == [("storage_rejected", 13)]
    assert "no_thirteen" in result.dead[0].reason
    assert calls <= 2 + 2 * 10  # the batch, then two halves per level of a 1,000-message bisection
    assert scalar(database_url, "SELECT count(*) FROM readings") == 999
    assert scalar(database_url, "SELECT count(*) FROM dead_letters WHERE code = 'storage_rejected'") == 1
    assert not [r for r in caplog.records if r.exc_info]  # no traceback
    assert len([r for r in caplog.records if "storage_rejected" in r.getMessage()]) == 1


# --- bounded memory under a burst ----------------------------------------------------------------

BURST = 50_000
BOUND = 1_000


def _publish_burst(url: str, messages: int) -> None:
    endpoint = MqttEndpoint.parse(url)
    client = new_client(endpoint, "burst", MqttVersion.V5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked = 0

    def on_publish(*_a: Any) -> None:
        nonlocal acked
        acked += 1
        if acked == messages:
            done.set()

    client.on_publish = on_publish
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    now = time.time()
    for i in range(messages):
        payload = json.dumps({"ts": now, "boot": "burst", "seq": i, "stream": "ok", "fps": 10.0})
        assert client.publish(device_topic(SITE, f"cam-{i % 50}", MessageType.HEARTBEAT), payload, qos=1).rc == \
            mqtt.MQTT_ERR_SUCCESS
    assert done.wait(300), f"{acked} of {messages} acknowledged by the broker"
    client.disconnect()
    client.loop_stop()


def test_a_burst_while_the_database_holds_writes_keeps_the_gateway_within_its_bound(
    settings: Settings, storage: str
) -> None:
    url = settings.database.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id) VALUES (%s)", (SITE,))
    bounded = settings.updated(ingest_queue_max=BOUND, batch_size=200)
    with started(bounded) as gw, psycopg.connect(url) as locker:
        assert gw.ingest is not None
        routine = next(lane for lane in gw.ingest.lanes if lane.plan.lane is Lane.ROUTINE)
        locker.execute("LOCK TABLE reading_keys, readings IN ACCESS EXCLUSIVE MODE")  # writes wait behind it
        _publish_burst(bounded.mqtt.url, BURST)
        wait_for(lambda: routine._handoff.held >= BOUND or None, what="the hand-off full")
        time.sleep(1.0)  # paho would go on reading here if nothing held it back
        assert routine._handoff.max_seen <= BOUND
        assert routine._handoff.held <= BOUND
        assert scalar(url, "SELECT count(*) FROM dead_letters") == 0
        locker.rollback()  # the database lets the writes through
        wait_for(lambda: scalar(url, "SELECT count(*) FROM readings") >= BURST or None, timeout=300,
                 what="the whole burst stored")
        metric = httpx.get(f"{gw.api_url}/metrics", timeout=10).text
        assert f'sg_ingest_queue_depth_max{{lane="routine"}} {float(routine._handoff.max_seen)}' in metric
    assert routine._handoff.max_seen <= BOUND
    assert scalar(url, "SELECT count(*) FROM readings") == BURST
    assert duplicate_readings(url) == 0
    assert scalar(url, "SELECT count(*) FROM devices WHERE site = %s", SITE) == 50
