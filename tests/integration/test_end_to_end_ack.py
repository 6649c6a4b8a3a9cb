"""End-to-end acknowledgement (issue 15, point 1) against a real Mosquitto and PostgreSQL.

The broker's PUBACK is not the end: Mosquitto acknowledges a message it holds only in memory.
The agent keeps each reading in its outbox until the gateway confirms it on
``sg/v1/{site}/agent/ack`` and sends it again otherwise, so a broker killed with a backlog and
restarted empty loses nothing (docs/operations.md, "When the broker crashes").
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import ACK_MAX_BYTES, ack_topic
from protocol.messages import DeclaredDevice, DeviceKind
from protocol.mqtt import MqttEndpoint, MqttVersion
from protocol.topics import MessageType
from safeguard.devservers import MosquittoServer
from tests.support import Agent, scalar, wait_for

pytestmark = pytest.mark.integration

DEVICES = (
    DeclaredDevice(id="cam-1", kind=DeviceKind.CAMERA),
    DeclaredDevice(id="smoke-1", kind=DeviceKind.SMOKE),
    DeclaredDevice(id="exit-1", kind=DeviceKind.EXIT),
)
_Key = tuple[str, str, int]


def register(database_url: str, *sites: str) -> None:
    with connect(database_url) as conn:
        upsert_sites(conn, [SiteRecord(id=s) for s in sites])
        conn.commit()


def stored(database_url: str, site: str) -> Counter[_Key]:
    """Rows per (device, boot, seq) of ``site``: exactly once means every count is 1."""
    with connect(database_url) as conn:
        rows = conn.execute("SELECT device, boot, seq FROM readings WHERE site = %s", (site,)).fetchall()
    return Counter((r["device"], r["boot"], int(r["seq"])) for r in rows)


def publisher(url: str, site: str, outbox: Outbox, **options: Any) -> Publisher:
    return Publisher(
        MqttEndpoint.parse(url), site, MqttVersion.V5, outbox, heartbeat_s=60, devices=DEVICES,
        client_id=f"agent-{site}", agent_version="test", keepalive_s=5, reconnect_min_s=0.2,
        reconnect_max_s=1.0, **options,
    )


def produce(pub: Publisher, rounds: int) -> list[_Key]:
    """Heartbeats, smoke and exit readings (one alarm, one blocked exit) of three devices."""
    made: list[_Key] = []
    for i in range(rounds):
        made.append(("cam-1", pub.boot, pub.send("cam-1", MessageType.HEARTBEAT,
                                                 {"stream": "ok", "fps": 10.0, "last_frame_ts": None})))
        made.append(("smoke-1", pub.boot, pub.send("smoke-1", MessageType.SMOKE,
                                                   {"state": "alarm" if i == rounds // 2 else "normal"})))
        made.append(("exit-1", pub.boot, pub.send("exit-1", MessageType.EXIT,
                                                  {"state": "blocked" if i == rounds // 3 else "clear",
                                                   "blocked_ratio": 0.0})))
    return made


@pytest.fixture
def made() -> Iterator[list[Any]]:
    """Publishers, outboxes, brokers and gateways a test made, stopped at teardown (last first)."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, Publisher):
            thing.stop(timeout=1)
        elif isinstance(thing, Outbox):
            thing.close()
        else:
            thing.stop()


@pytest.mark.storage
def test_broker_killed_with_a_backlog_and_restarted_empty_loses_nothing(
    settings: Settings, mosquitto: MosquittoServer, tmp_path: Path, made: list[Any]
) -> None:
    site = f"ack-{uuid.uuid4().hex[:8]}"
    register(settings.database.url, site)
    gateway = Gateway(settings, supervise=False, api=False)
    gateway.start()  # its sessions exist at the broker; then it goes away: the broker holds the backlog
    assert gateway.ingest is not None
    assert gateway.ingest.wait_connected(10)
    gateway.stop()

    outbox = Outbox(tmp_path / "outbox.sqlite").open()
    made.append(outbox)
    pub = publisher(mosquitto.url, site, outbox, ack_timeout_s=1.0, ack_timeout_max_s=2.0)
    made.append(pub)
    pub.start()
    assert pub.wait_connected(10)
    produced = produce(pub, 300)
    total = len(produced)
    # The broker took (PUBACKed) every reading and queued it for the absent gateway, in memory only.
    wait_for(lambda: pub.stats().acked >= total, timeout=60, what="the broker to acknowledge every reading")

    mosquitto.kill()  # SIGKILL: what it held is gone
    fresh = MosquittoServer(tmp_path / "mosquitto-fresh", port=mosquitto.port)  # empty, same port
    fresh.start()
    made.append(fresh)
    gateway = Gateway(settings, supervise=False, api=False)
    gateway.start()
    made.append(gateway)

    wait_for(lambda: len(stored(settings.database.url, site)) >= total, timeout=120,
             what=f"all {total} readings stored")
    wait_for(lambda: len(outbox) == 0, timeout=60, what="the outbox to empty as the gateway confirms")
    counts = stored(settings.database.url, site)
    assert set(counts) == set(produced)  # every reading the agent produced...
    assert set(counts.values()) == {1}  # ...exactly once
    stats = pub.stats()
    assert stats.confirmed == total
    assert stats.resent > 0  # what the broker lost was sent again
    assert stats.bad_acks == 0
    # The gateway's own confirmations on sg/v1/# are not taken for agent messages.
    assert scalar(settings.database.url, "SELECT count(*) FROM dead_letters WHERE topic LIKE %s", "%/agent/ack") == 0


def test_confirmed_readings_leave_the_outbox_and_refused_ones_are_not_resent(
    gateway: Gateway, mosquitto: MosquittoServer, tmp_path: Path, made: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A registered site's readings are confirmed as stored, an unregistered site's as refused (dead
    letters): both leave the outbox at once, none is sent again (the timeout is far away)."""
    known, unknown = f"ack-{uuid.uuid4().hex[:8]}", f"ack-{uuid.uuid4().hex[:8]}"
    register(gateway.settings.database.url, known)
    pubs = {}
    for site in (known, unknown):
        outbox = Outbox(tmp_path / f"{site}.sqlite").open()
        made.append(outbox)
        pubs[site] = pub = publisher(mosquitto.url, site, outbox)
        made.append(pub)
        pub.start()
        assert pub.wait_connected(10)
    caplog.set_level(logging.ERROR, logger="edge_agent.publisher")
    produced = {site: produce(pub, 50) for site, pub in pubs.items()}
    for pub in pubs.values():
        wait_for(lambda pub=pub: len(pub.outbox) == 0, timeout=60, what="the outbox to empty")  # type: ignore[misc]
    assert set(stored(gateway.settings.database.url, known)) == set(produced[known])
    assert pubs[known].stats().confirmed == 150
    assert pubs[known].stats().gateway_refused == 0
    assert pubs[unknown].stats().gateway_refused == 150
    assert pubs[unknown].stats().confirmed == 0
    assert any("gateway refused" in r.getMessage() for r in caplog.records)
    for pub in pubs.values():
        assert pub.stats().resent == 0


def test_bad_confirmations_are_ignored_and_logged_and_the_agent_keeps_working(
    mosquitto: MosquittoServer, tmp_path: Path, made: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    site = f"ack-{uuid.uuid4().hex[:8]}"
    outbox = Outbox(tmp_path / "outbox.sqlite").open()
    made.append(outbox)
    pub = publisher(mosquitto.url, site, outbox)
    made.append(pub)
    pub.start()
    assert pub.wait_connected(10)
    produced = produce(pub, 10)
    wait_for(lambda: pub.stats().acked >= len(produced), what="the broker to acknowledge every reading")
    caplog.set_level(logging.WARNING, logger="edge_agent.publisher")

    forger = Agent(mosquitto.url, f"forger-{site}")  # an anonymous broker: anyone may publish here
    try:
        everything = [{"device": d, "boot": pub.boot, "seq": [[0, 1_000]]} for d in ("cam-1", "smoke-1", "exit-1")]
        oversize = json.dumps({"ts": 1.0, "acks": everything, "pad": "x" * ACK_MAX_BYTES})
        for payload in (b"not json", b'{"ts": 1.0, "acks": [{"device": "cam-1", "boot": "b", "seq": [[5, 1]]}]}',
                        b'{"acks": "all"}', oversize.encode(), b"\xff\xfe"):
            forger.publish_raw(ack_topic(site), payload)
        wait_for(lambda: pub.stats().bad_acks == 5, what="five bad confirmations counted")
    finally:
        forger.close()
    assert len(outbox) == len(produced)  # nothing deleted by them
    assert pub.connected
    assert sum("ignored a confirmation" in r.getMessage() for r in caplog.records) == 5

    # A valid one still works after them.
    acks = [{"device": "cam-1", "boot": pub.boot, "seq": [[0, 4]]}]
    forger = Agent(mosquitto.url, f"forger2-{site}")
    try:
        forger.publish_raw(ack_topic(site), json.dumps({"ts": 1.0, "acks": acks}))
    finally:
        forger.close()
    wait_for(lambda: len(outbox) == len(produced) - 5, what="five readings confirmed")
