"""The edge agent's publisher against a real Mosquitto and the real gateway (issue 3, points 5-6).

- the broker stopped for a while: every reading arrives after it returns, once, in order
  (each smoke/exit device's current state first);
- after an outage the current safety state (an alarm put last) goes before the heartbeat
  backlog, and a live alarm during the flush does not wait for the rest of it (issue 10);
- the agent process SIGKILLed: ``agent_offline`` at the gateway through the Last Will;
- an agent killed with messages in its outbox: the next start delivers them;
- in-flight messages never exceed the bound.

The broker here persists its state (``persistence true``), as the production broker must: a
broker restarted without persistence forgets the gateway's session and its subscription,
so what agents publish before the gateway has re-subscribed is dropped by the broker --
no outbox on the agent's side can prevent that (docs/edge-agent-publisher.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pydantic import ValidationError

from edge_agent.outbox import Kind, Outbox
from edge_agent.publisher import Publisher
from gateway.runtime import Gateway
from gateway.store.db import connect
from protocol.messages import DeclaredDevice, DeviceKind
from protocol.mqtt import MqttEndpoint, MqttVersion, connect_properties, new_client
from protocol.topics import MessageType, device_topic
from safeguard.devservers import MosquittoServer, free_port
from tests.support import Api, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEVICES = (
    DeclaredDevice(id="cam-1", kind=DeviceKind.CAMERA, name="gate", location="1F"),
    DeclaredDevice(id="smoke-1", kind=DeviceKind.SMOKE, name="hall", location="1F"),
    DeclaredDevice(id="exit-1", kind=DeviceKind.EXIT, name="east exit", location="1F"),
)


class PersistentMosquitto(MosquittoServer):
    """The private broker with persistence on, so sessions survive stop()/start()."""

    def __init__(self, work_dir: Path, store_dir: Path) -> None:
        super().__init__(work_dir)
        self.store_dir = store_dir

    def _config(self) -> str:
        return super()._config().replace(
            "persistence false", f"persistence true\npersistence_location {self.store_dir}/\nautosave_interval 1"
        )


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """Overrides conftest's broker (the gateway fixture then uses this one)."""
    # Mosquitto started as root drops to an unprivileged user, which cannot enter tmp_path (0700):
    # its store lives in a world-writable directory of its own under the system temp dir.
    store = Path(tempfile.mkdtemp(prefix="sg-mosquitto-store-"))
    store.chmod(0o777)
    server = PersistentMosquitto(tmp_path / "mosquitto", store)
    server.start()
    yield server
    server.stop()
    for leftover in store.iterdir():
        leftover.unlink()
    store.rmdir()


# --------------------------------------------------------------------------- helpers


def new_site() -> str:
    return f"pub-{uuid.uuid4().hex[:8]}"


def make_publisher(url: str, site: str, outbox: Outbox, *, version: MqttVersion = MqttVersion.V5,
                   max_in_flight: int = 100, gateway_ack: bool = True) -> Publisher:
    """``gateway_ack=False`` where no gateway runs: an entry is then done at its PUBACK (issue 15)."""
    return Publisher(
        MqttEndpoint.parse(url), site, version, outbox, heartbeat_s=60, devices=DEVICES,
        client_id=f"agent-{site}", max_in_flight=max_in_flight, agent_version="test",
        keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0, gateway_ack=gateway_ack,
    )


def queue_offline(path: Path, site: str, count: int) -> str:
    """Queue ``count`` heartbeats in the outbox at ``path`` while no broker is reachable; return the boot."""
    with Outbox(path) as outbox:
        offline = make_publisher(f"mqtt://127.0.0.1:{free_port()}", site, outbox)
        offline.start()
        for _ in range(count):
            heartbeat(offline)
        offline.stop(timeout=1)
        return offline.boot


def heartbeat(publisher: Publisher, device: str = "cam-1") -> int:
    return publisher.send(device, MessageType.HEARTBEAT, {"stream": "ok", "fps": 10.0, "last_frame_ts": time.time()})


def first_deliveries(seen: list[tuple[str, str, int]], device: str | None = None) -> list[tuple[str, str, int]]:
    """Arrivals (of ``device``) in the order each was first delivered; a resend after a reconnect
    may repeat a message, but order is only about first deliveries."""
    return list(dict.fromkeys(m for m in seen if device is None or m[0] == device))


def stored(database_url: str, site: str) -> list[tuple[str, str, int]]:
    """(device, boot, seq) of every reading the gateway stored for ``site``."""
    with connect(database_url) as conn:
        rows = conn.execute("SELECT device, boot, seq FROM readings WHERE site = %s", (site,)).fetchall()
    return [(r["device"], r["boot"], int(r["seq"])) for r in rows]


class DeviceWatcher:
    """A persistent MQTT 5 subscriber on the site's device topics, recording (device, seq) in arrival order."""

    def __init__(self, url: str, site: str) -> None:
        endpoint = MqttEndpoint.parse(url)
        self.seen: queue.SimpleQueue[tuple[str, str, int]] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        self.client = new_client(endpoint, f"watch-{site}", MqttVersion.V5, persistent=True)
        self.client.on_connect = lambda client, *_a: client.subscribe(f"sg/v1/{site}/+/+", qos=1)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(endpoint.host, endpoint.port, keepalive=5, clean_start=False,
                            properties=connect_properties(session_expiry_s=600, receive_maximum=1000))
        self.client.loop_start()
        assert self._subscribed.wait(10), "watcher not subscribed"

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        device, _kind = message.topic.split("/")[3:5]
        if device != "agent":  # not the status, nor the gateway's confirmations (sg/v1/{site}/agent/ack)
            reading = json.loads(message.payload)
            self.seen.put((device, reading["boot"], reading["seq"]))

    def take(self) -> list[tuple[str, str, int]]:
        items = []
        while True:
            try:
                items.append(self.seen.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Publishers, outboxes, watchers and processes made by a test; stopped at teardown."""
    made: list[Any] = []
    yield made
    for thing in reversed(made):
        with contextlib.suppress(Exception):
            if isinstance(thing, subprocess.Popen):
                thing.kill()
                thing.wait(10)
            elif isinstance(thing, Publisher):
                thing.stop(timeout=1)
            else:
                thing.close()


# A real agent process: python -c RUNNER url site outbox mode n
RUNNER = """
import sys, time, logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from protocol.messages import DeclaredDevice, DeviceKind
from protocol.mqtt import MqttEndpoint, MqttVersion
from protocol.topics import MessageType
url, site, path, mode, n = sys.argv[1:6]
outbox = Outbox(path).open()
pub = Publisher(MqttEndpoint.parse(url), site, MqttVersion.V5, outbox, heartbeat_s=60,
                devices=[DeclaredDevice(id="cam-1", kind=DeviceKind.CAMERA)], client_id="agent-" + site,
                agent_version="test", keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0)
pub.start()
if mode == "online":
    assert pub.wait_connected(20), "no connection"
    time.sleep(0.5)  # let the birth's PUBACK come back
for _ in range(int(n)):
    pub.send("cam-1", MessageType.HEARTBEAT, {"stream": "ok", "fps": 10.0, "last_frame_ts": time.time()})
print("ready", pub.boot, flush=True)
time.sleep(3600)
"""


def publishing_offline(
    mosquitto: MosquittoServer, site: str, tmp_path: Path, cleanup: list[Any], *, gateway_ack: bool = True
) -> tuple[DeviceWatcher, Outbox, Publisher]:
    """A watcher of ``site``, and its publisher connected once, then the broker stopped under it."""
    watcher = DeviceWatcher(mosquitto.url, site)
    cleanup.append(watcher)
    outbox = Outbox(tmp_path / "outbox.sqlite").open()
    cleanup.append(outbox)
    pub = make_publisher(mosquitto.url, site, outbox, gateway_ack=gateway_ack)
    cleanup.append(pub)
    pub.start()
    assert pub.wait_connected(10)
    mosquitto.stop()
    wait_for(lambda: not pub.connected, timeout=10, what="the publisher to notice the broker is gone")
    return watcher, outbox, pub


def start_agent_process(url: str, site: str, outbox: Path, mode: str, n: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, url, site, str(outbox), mode, str(n)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the agent says it is ready (or dies)
    assert line.startswith("ready "), f"agent process did not start (exit code {proc.poll()})"
    return proc, line.split()[1]


# --------------------------------------------------------------------------- tests


def test_send_validates_and_numbers_per_device(tmp_path: Path) -> None:
    """No broker needed: what send() queues is the contract's payload, seq per device from 0."""
    with Outbox(tmp_path / "o.sqlite") as outbox:
        pub = make_publisher(f"mqtt://127.0.0.1:{free_port()}", "s-1", outbox)
        pub.start()
        try:
            assert heartbeat(pub) == 0
            assert heartbeat(pub) == 1
            assert pub.send("smoke-1", MessageType.SMOKE, {"state": "alarm", "battery_pct": 80.0}) == 0
            assert pub.send("exit-1", MessageType.EXIT, {"state": "clear", "blocked_ratio": 0.0}) == 0
            with pytest.raises(ValidationError):
                pub.send("exit-1", MessageType.EXIT, {"state": "ajar", "blocked_ratio": 0.0})
            assert pub.send("exit-1", MessageType.EXIT, {"state": "blocked", "blocked_ratio": 0.5}) == 1
            with pytest.raises(ValueError, match="reserved"):
                heartbeat(pub, "agent")
            assert pub.next_seq("cam-1") == 2
            entries = outbox.peek(10)
            assert [e.topic for e in entries] == [
                device_topic("s-1", "cam-1", MessageType.HEARTBEAT),
                device_topic("s-1", "cam-1", MessageType.HEARTBEAT),
                device_topic("s-1", "smoke-1", MessageType.SMOKE), device_topic("s-1", "exit-1", MessageType.EXIT),
                device_topic("s-1", "exit-1", MessageType.EXIT),
            ]
            assert [e.kind for e in entries] == [Kind.HEARTBEAT, Kind.HEARTBEAT, Kind.ALARM, Kind.STATE, Kind.STATE]
            assert b'"boot":"' + pub.boot.encode() + b'"' in entries[0].payload
            assert not pub.connected  # nothing listens on that port
        finally:
            pub.stop(timeout=1)


def test_broker_stopped_for_a_while_every_reading_arrives_once_in_order(
    gateway: Gateway, mosquitto: MosquittoServer, tmp_path: Path, cleanup: list[Any]
) -> None:
    site = new_site()
    Api(gateway.api_url).put_site(site)
    watcher, outbox, pub = publishing_offline(mosquitto, site, tmp_path, cleanup)
    for i in range(100):
        heartbeat(pub)
        pub.send("smoke-1", MessageType.SMOKE, {"state": "alarm" if i == 50 else "normal", "battery_pct": 90.0})
        pub.send("exit-1", MessageType.EXIT, {"state": "clear", "blocked_ratio": 0.0})
    assert len(outbox) == 300
    time.sleep(2)  # ...for a while: the publisher keeps retrying meanwhile
    assert len(outbox) == 300
    mosquitto.start()

    wait_for(lambda: len(stored(gateway.settings.database.url, site)) >= 300, timeout=60,
             what="300 readings stored at the gateway")
    wait_for(lambda: len(outbox) == 0, timeout=20, what="the outbox to drain")
    rows = stored(gateway.settings.database.url, site)
    assert len(rows) == 300 == len(set(rows))  # each exactly once
    for device in ("cam-1", "smoke-1", "exit-1"):
        assert sorted(seq for d, boot, seq in rows if d == device and boot == pub.boot) == list(range(100))

    seen: list[tuple[str, str, int]] = []

    def all_seen() -> bool:
        seen.extend(watcher.take())
        return len(set(seen)) >= 300

    wait_for(all_seen, what="the watcher to see 300 readings")
    assert [seq for _d, _b, seq in first_deliveries(seen, "cam-1")] == list(range(100))
    for device in ("smoke-1", "exit-1"):  # the current state (seq 99) first, then the rest in order
        assert [seq for _d, _b, seq in first_deliveries(seen, device)] == [99, *range(99)]
    stats = pub.stats()
    assert stats.acked == 300
    assert stats.refused == 0
    assert stats.connects >= 2


def test_agent_killed_gives_agent_offline_through_the_last_will(
    gateway: Gateway, mosquitto: MosquittoServer, tmp_path: Path, cleanup: list[Any]
) -> None:
    site = new_site()
    api = Api(gateway.api_url)
    api.put_site(site)
    proc, boot = start_agent_process(mosquitto.url, site, tmp_path / "outbox.sqlite", "online", 3)
    cleanup.append(proc)

    def agent() -> dict[str, Any] | None:
        found: dict[str, Any] | None = api.http.get(f"/api/v1/sites/{site}").json()["agent"]
        return found

    wait_for(lambda: (agent() or {}).get("boot") == boot and (agent() or {}).get("online"), what="the birth stored")
    wait_for(lambda: len(stored(gateway.settings.database.url, site)) == 3, what="3 readings stored")
    assert api.alert(kind="agent_offline", site=site) is None

    proc.send_signal(signal.SIGKILL)  # a real kill: no DISCONNECT, no offline status
    proc.wait(10)
    alert = wait_for(lambda: api.alert(kind="agent_offline", site=site), what="agent_offline alert")
    assert alert["state"] == "open"
    assert alert["device"] is None
    status = agent()
    assert status is not None
    assert status["online"] is False
    assert status["boot"] == boot  # the Will of that boot


def test_restart_over_the_same_outbox_delivers_what_was_left(
    gateway: Gateway, mosquitto: MosquittoServer, tmp_path: Path, cleanup: list[Any]
) -> None:
    site = new_site()
    api = Api(gateway.api_url)
    api.put_site(site)
    path = tmp_path / "outbox.sqlite"
    # The first run cannot reach any broker; it queues 50 readings and is killed.
    proc, old_boot = start_agent_process(f"mqtt://127.0.0.1:{free_port()}", site, path, "queue", 50)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    outbox = Outbox(path).open()
    cleanup.append(outbox)
    assert len(outbox) == 50
    pub = make_publisher(mosquitto.url, site, outbox)
    cleanup.append(pub)
    pub.start()
    assert pub.boot != old_boot
    assert heartbeat(pub) == 0  # a new boot counts from 0 again
    wait_for(lambda: len(stored(gateway.settings.database.url, site)) >= 51, what="51 readings stored")
    wait_for(lambda: len(outbox) == 0, what="the outbox to drain")
    rows = stored(gateway.settings.database.url, site)
    assert sorted(seq for _d, boot, seq in rows if boot == old_boot) == list(range(50))
    assert [seq for _d, boot, seq in rows if boot == pub.boot] == [0]
    status = api.http.get(f"/api/v1/sites/{site}").json()["agent"]
    assert status["boot"] == pub.boot
    assert status["online"] is True

    pub.stop()  # clean stop: a retained offline status, no Last Will, no alert
    wait_for(lambda: api.http.get(f"/api/v1/sites/{site}").json()["agent"]["online"] is False,
             what="the offline status stored")


@pytest.mark.parametrize(("version", "max_in_flight", "window"), [
    (MqttVersion.V311, 8, 8),
    (MqttVersion.V5, 100, 20),  # Mosquitto announces Receive Maximum 20: honoured (MQTT 5 section 3.3.4)
])
def test_in_flight_never_exceeds_the_bound(
    mosquitto: MosquittoServer, tmp_path: Path, cleanup: list[Any], version: MqttVersion, max_in_flight: int,
    window: int,
) -> None:
    site = new_site()
    path = tmp_path / "outbox.sqlite"
    boot = queue_offline(path, site, 300)

    watcher = DeviceWatcher(mosquitto.url, site)
    cleanup.append(watcher)
    outbox = Outbox(path).open()
    cleanup.append(outbox)
    pub = make_publisher(mosquitto.url, site, outbox, version=version, max_in_flight=max_in_flight, gateway_ack=False)
    cleanup.append(pub)
    peak = 0

    def sample() -> bool:  # watch in_flight from outside as well, while it drains
        nonlocal peak
        stats = pub.stats()
        peak = max(peak, stats.in_flight)
        return stats.backlog == 0

    pub.start()
    wait_for(sample, timeout=30, what="the backlog to drain")
    stats = pub.stats()
    assert stats.window == window
    assert stats.max_in_flight_seen == window  # the window was used, and never exceeded
    assert peak <= window
    assert stats.acked == 300
    seen: list[tuple[str, str, int]] = []

    def all_seen() -> bool:
        seen.extend(watcher.take())
        return len(seen) >= 300

    wait_for(all_seen, what="300 readings seen")
    assert [seq for _d, b, seq in seen if b == boot] == list(range(300))


def test_broker_stopped_mid_drain_unacknowledged_messages_are_resent_in_order(
    gateway: Gateway, mosquitto: MosquittoServer, tmp_path: Path, cleanup: list[Any]
) -> None:
    site = new_site()
    Api(gateway.api_url).put_site(site)
    path = tmp_path / "outbox.sqlite"
    boot = queue_offline(path, site, 2_000)
    watcher = DeviceWatcher(mosquitto.url, site)
    cleanup.append(watcher)
    outbox = Outbox(path).open()
    cleanup.append(outbox)
    pub = make_publisher(mosquitto.url, site, outbox, version=MqttVersion.V311, max_in_flight=10)
    cleanup.append(pub)
    pub.start()
    deadline = time.monotonic() + 20
    while pub.stats().acked < 200:  # stop the broker while the backlog is draining
        assert time.monotonic() < deadline, "the drain did not start"
        time.sleep(0.002)
    mosquitto.stop()
    stopped_at = pub.stats()
    # (backlog counts readings awaiting the gateway's confirmation too: acked is what the broker took)
    assert 0 < stopped_at.acked < 2_000, "the broker should stop while messages are still waiting"
    time.sleep(1)
    mosquitto.start()

    wait_for(lambda: len(outbox) == 0, timeout=60, what="the outbox to drain")
    wait_for(lambda: len(stored(gateway.settings.database.url, site)) >= 2_000, timeout=60,
             what="2,000 readings stored")
    rows = stored(gateway.settings.database.url, site)
    assert sorted(seq for _d, b, seq in rows if b == boot) == list(range(2_000))  # each once
    seen: list[tuple[str, str, int]] = []

    def all_seen() -> bool:
        seen.extend(watcher.take())
        return len(set(seen)) >= 2_000

    wait_for(all_seen, what="the watcher to see 2,000 readings")
    assert [seq for _d, _b, seq in first_deliveries(seen)] == list(range(2_000))
    assert pub.stats().connects >= 2
    assert pub.stats().max_in_flight_seen <= 10


def test_after_an_outage_the_current_safety_state_goes_before_the_heartbeat_backlog(
    mosquitto: MosquittoServer, tmp_path: Path, cleanup: list[Any]
) -> None:
    """2,000 heartbeats and 10 minutes of smoke/exit readings queued while the broker is down, a
    fire alarm put last: each device's current state arrives first (the alarm first of all), then
    the older states, then the heartbeat backlog, each message once (DESIGN section 2)."""
    site = new_site()
    watcher, outbox, pub = publishing_offline(mosquitto, site, tmp_path, cleanup, gateway_ack=False)
    states: list[tuple[str, str, int]] = []  # safety lane, in put order
    repeats: list[tuple[str, str, int]] = []  # heartbeat lane (camera heartbeats, repeats), in put order
    for i in range(2_000):
        repeats.append(("cam-1", pub.boot, heartbeat(pub)))
        if i % 100 == 0:  # every 30 s of a 10-minute outage
            states.append(("smoke-1", pub.boot, pub.send("smoke-1", MessageType.SMOKE, {"state": "normal"})))
            # smoke-2 repeats an unchanged state as the agent's ticker does: heartbeat kind.
            seq = pub.send("smoke-2", MessageType.SMOKE, {"state": "normal"}, kind=Kind.HEARTBEAT)
            repeats.append(("smoke-2", pub.boot, seq))
            for device, state in (("exit-1", "blocked" if i >= 1_500 else "clear"), ("exit-2", "clear")):
                seq = pub.send(device, MessageType.EXIT, {"state": state, "blocked_ratio": 0.0})
                states.append((device, pub.boot, seq))
    alarm = ("smoke-1", pub.boot, pub.send("smoke-1", MessageType.SMOKE, {"state": "alarm"}))  # put last
    total = len(states) + len(repeats) + 1
    assert len(outbox) == total == 2_081
    mosquitto.start()

    wait_for(lambda: len(outbox) == 0, timeout=60, what="the outbox to drain")
    seen: list[tuple[str, str, int]] = []

    def all_seen() -> bool:
        seen.extend(watcher.take())
        return len(set(seen)) >= total

    wait_for(all_seen, timeout=30, what=f"the watcher to see {total} readings")
    assert len(seen) == len(set(seen)) == total  # each exactly once
    smoke_2 = next(m for m in reversed(repeats) if m[0] == "smoke-2")
    current = [alarm, smoke_2, states[-2], states[-1]]  # smoke-1 (the alarm), smoke-2, exit-1, exit-2
    assert seen[:4] == current
    assert seen == current + [m for m in states + repeats if m not in current]


def test_a_live_alarm_during_the_flush_does_not_wait_for_the_heartbeat_backlog(
    mosquitto: MosquittoServer, tmp_path: Path, cleanup: list[Any]
) -> None:
    site = new_site()
    path = tmp_path / "outbox.sqlite"
    backlog = 3_000
    boot = queue_offline(path, site, backlog)
    watcher = DeviceWatcher(mosquitto.url, site)
    cleanup.append(watcher)
    outbox = Outbox(path).open()
    cleanup.append(outbox)
    window = 10
    pub = make_publisher(mosquitto.url, site, outbox, version=MqttVersion.V311, max_in_flight=window,
                         gateway_ack=False)
    cleanup.append(pub)
    pub.start()
    deadline = time.monotonic() + 20
    while pub.stats().acked < 200:  # the flush is under way
        assert time.monotonic() < deadline, "the drain did not start"
        time.sleep(0.002)
    alarm = ("smoke-1", pub.boot, pub.send("smoke-1", MessageType.SMOKE, {"state": "alarm"}))
    # Heartbeats published by now; at most one window more can go before the next peek sees the alarm.
    published = pub.stats().published - 1  # the birth is not a heartbeat
    assert published + window < backlog, "the alarm should be put while most of the backlog waits"

    wait_for(lambda: len(outbox) == 0, timeout=60, what="the outbox to drain")
    seen: list[tuple[str, str, int]] = []

    def all_seen() -> bool:
        seen.extend(watcher.take())
        return len(set(seen)) >= backlog + 1

    wait_for(all_seen, timeout=30, what="the watcher to see the backlog and the alarm")
    assert len(seen) == len(set(seen)) == backlog + 1  # each exactly once
    ahead = seen.index(alarm)
    assert ahead <= published + window, f"the alarm waited behind {ahead} heartbeats"
    assert [seq for _d, b, seq in seen if b == boot] == list(range(backlog))  # the backlog still in order


class PasswordMosquitto(PersistentMosquitto):
    """A broker that admits only ``agent`` / ``right-password``."""

    def _config(self) -> str:
        passwords = self.store_dir / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "agent", "right-password"], check=True)
        passwords.chmod(0o644)
        return super()._config().replace("allow_anonymous true", f"allow_anonymous false\npassword_file {passwords}")


@pytest.mark.parametrize("version", [MqttVersion.V5, MqttVersion.V311])
def test_bad_credentials_stop_the_retries_with_a_clear_error(tmp_path: Path, version: MqttVersion) -> None:
    store = Path(tempfile.mkdtemp(prefix="sg-mosquitto-auth-"))
    store.chmod(0o777)
    broker = PasswordMosquitto(tmp_path / "mosquitto", store)
    broker.start()
    try:
        with Outbox(tmp_path / "o.sqlite") as outbox:
            host = f"{broker.host}:{broker.port}"
            pub = make_publisher(f"mqtt://agent:wrong@{host}", "s-auth", outbox, version=version)
            pub.start()
            heartbeat(pub)
            wait_for(lambda: pub.error is not None, timeout=10, what="the publisher to give up")
            assert "not retrying" in str(pub.error)
            assert "wrong" not in str(pub.error)  # no password in the message
            assert not pub.connected
            assert pub.stats().connects == 0
            assert len(outbox) == 1  # kept for a start with the right credentials
            pub.stop(timeout=1)

            good = make_publisher(f"mqtt://agent:right-password@{host}", "s-auth", outbox, version=version,
                                  gateway_ack=False)
            good.start()
            try:
                assert good.wait_connected(10)
                wait_for(lambda: len(outbox) == 0, what="the outbox to drain")
            finally:
                good.stop(timeout=1)
    finally:
        broker.stop()
        for leftover in store.iterdir():
            leftover.unlink()
        store.rmdir()
