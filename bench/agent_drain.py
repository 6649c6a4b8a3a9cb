"""After an outage: how long until the edge agent's fire alarm is published, behind a heartbeat backlog.

    .venv/bin/python -m bench.agent_drain [--heartbeats 20000] [--version 5|3.1.1] [--max-in-flight 100]
                                          [--gateway] [--gateway-ack on|off]

The outage: with no broker reachable, an agent of 17 devices (5 cameras, 8 smoke detectors, 4 exits)
queues ``--heartbeats`` camera heartbeats, 10 minutes of smoke and exit readings (one per device per
30 s) and, last of all, one smoke alarm. Then a private Mosquitto starts, a subscriber subscribes to
the site, and the agent starts over the same outbox (its drain is the one a reconnect runs: birth,
then the outbox in send order). It prints, from the reconnect (the drain's first look at the outbox,
right after the birth), when the alarm is handed to paho (published), when the broker acknowledged it,
when it reached the subscriber, and when the whole backlog had arrived: with the previous oldest-first
drain the alarm, put last, was published only at the end of the backlog. Halfway through the flush
a second, live alarm is sent: the same figures from its put.

The subscriber is one paho client in this process, so its arrival times include its own queue of
heartbeats at the broker (the gateway takes alarms on a session of their own, DESIGN section 2).

``--gateway`` also runs a private PostgreSQL and the gateway's ingest (in this process) on the same
broker; ``--gateway-ack on`` (implies ``--gateway``) has the agent keep each reading until the
gateway confirms it (issue 15), ``off`` (the default) until the broker's PUBACK. It then prints when
the outbox was empty: with confirmation, when the gateway had committed and confirmed everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt

from edge_agent.outbox import Entry, Kind, Outbox
from edge_agent.publisher import Publisher
from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from protocol.messages import DeclaredDevice, DeviceKind
from protocol.mqtt import MqttEndpoint, MqttVersion, connect_properties, new_client
from protocol.topics import MessageType, is_ack_topic, status_topic
from safeguard.devservers import MosquittoServer, PostgresServer, free_port

SITE = "bench-drain"
CAMERAS = [f"cam-{i}" for i in range(1, 6)]
SMOKE = [f"smoke-{i}" for i in range(1, 9)]
EXITS = [f"exit-{i}" for i in range(1, 5)]
DEVICES = (
    [DeclaredDevice(id=d, kind=DeviceKind.CAMERA) for d in CAMERAS]
    + [DeclaredDevice(id=d, kind=DeviceKind.SMOKE) for d in SMOKE]
    + [DeclaredDevice(id=d, kind=DeviceKind.EXIT) for d in EXITS]
)
OUTAGE_S = 600
HEARTBEAT_S = 30


class TimedOutbox(Outbox):
    """The outbox, noting when the drain first asks it for entries (the reconnect) and when it
    takes (publishes) and deletes (PUBACK) each alarm."""

    def __init__(self, path: Path, max_messages: int) -> None:
        super().__init__(path, max_messages=max_messages)
        self.first_peek = 0.0
        self.alarms: dict[int, tuple[str, int]] = {}  # entry id -> (device, seq)
        self.published: dict[tuple[str, int], float] = {}
        self.acked: dict[tuple[str, int], float] = {}
        self.empty_at = 0.0  # the last time the outbox became empty

    def peek_priority(self, n: int, *, skip: Collection[int] = ()) -> list[Entry]:
        entries = super().peek_priority(n, skip=skip)
        now = time.perf_counter()
        self.first_peek = self.first_peek or now
        for entry in entries:
            if entry.kind == Kind.ALARM:
                key = (entry.topic.split("/")[3], int(json.loads(entry.payload)["seq"]))
                self.alarms[entry.id] = key
                self.published.setdefault(key, now)
        return entries

    def _pubacked(self, wanted: list[int]) -> None:
        now = time.perf_counter()
        for entry_id in wanted:
            if entry_id in self.alarms:
                self.acked.setdefault(self.alarms[entry_id], now)
        if not len(self):
            self.empty_at = now

    def ack(self, ids: Iterable[int]) -> int:
        wanted = list(ids)
        deleted = super().ack(wanted)
        self._pubacked(wanted)
        return deleted

    def sent(self, ids: Iterable[int], *, timeout_s: float, max_timeout_s: float, now: float | None = None) -> int:
        wanted = list(ids)
        deleted = super().sent(wanted, timeout_s=timeout_s, max_timeout_s=max_timeout_s, now=now)
        self._pubacked(wanted)
        return deleted

    def confirm(self, confirmed: Iterable[tuple[str, str, Sequence[tuple[int, int]]]]) -> int:
        deleted = super().confirm(confirmed)
        if not len(self):
            self.empty_at = time.perf_counter()
        return deleted


class Watcher:
    """Counts the site's readings and notes, on its own clock, when the ones we wait for arrive."""

    def __init__(self, url: str, total: int) -> None:
        self.total = total
        self.count = 0
        self.birth_at = self.done_at = 0.0
        self.arrived: dict[tuple[str, int], float] = {}  # (device, seq) of an alarm -> arrival
        self.half = threading.Event()
        self.done = threading.Event()
        endpoint = MqttEndpoint.parse(url)
        subscribed = threading.Event()
        self.client = new_client(endpoint, "bench-drain-watcher", MqttVersion.V5)
        self.client.on_connect = lambda c, *_a: c.subscribe(f"sg/v1/{SITE}/#", qos=1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(endpoint.host, endpoint.port,
                            properties=connect_properties(session_expiry_s=0, receive_maximum=1000))
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("watcher not subscribed")

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if message.topic == status_topic(SITE):
            self.birth_at = self.birth_at or now
            return
        if is_ack_topic(message.topic):  # the gateway's confirmations (--gateway-ack on)
            return
        body = json.loads(message.payload)
        if body.get("state") == "alarm":
            self.arrived.setdefault((message.topic.split("/")[3], body["seq"]), now)
        self.count += 1
        if self.count * 2 >= self.total:
            self.half.set()
        if self.count >= self.total:
            self.done_at = now
            self.done.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(url: str, outbox: Outbox, version: MqttVersion, max_in_flight: int, *,
              gateway_ack: bool = False) -> Publisher:
    return Publisher(
        MqttEndpoint.parse(url), SITE, version, outbox, heartbeat_s=HEARTBEAT_S, devices=DEVICES,
        client_id=f"agent-{SITE}", max_in_flight=max_in_flight, agent_version="bench", reconnect_min_s=0.2,
        gateway_ack=gateway_ack,
    )


def start_gateway(root: Path, mqtt_url: str, stack: contextlib.ExitStack) -> None:
    """A private PostgreSQL with the site registered, and the gateway's ingest on ``mqtt_url``."""
    pg = stack.enter_context(PostgresServer(root / "pg", fast=True))
    with connect(pg.url) as conn:
        migrate(conn)
        upsert_sites(conn, [SiteRecord(id=SITE)])
        conn.commit()
    settings = Settings(mqtt_url=mqtt_url, mqtt_version=MqttVersion.V5, mqtt_client_id="bench-drain-gw",
                        database_url=pg.url, api_host="127.0.0.1", api_port=0)
    gateway = stack.enter_context(Gateway(settings, supervise=False, api=False))
    assert gateway.ingest is not None
    if not gateway.ingest.wait_connected(20):
        raise RuntimeError("the gateway's ingest did not connect")


def queue_outage(outbox: Outbox, heartbeats: int) -> tuple[int, tuple[str, int]]:
    """The backlog of the outage, the alarm put last; returns (messages queued, the alarm's device and seq)."""
    offline = publisher(f"mqtt://127.0.0.1:{free_port()}", outbox, MqttVersion.V5, 100)
    offline.start()
    rounds = OUTAGE_S // HEARTBEAT_S
    every = max(1, heartbeats // rounds)
    for i in range(heartbeats):
        offline.send(CAMERAS[i % len(CAMERAS)], MessageType.HEARTBEAT,
                     {"stream": "ok", "fps": 10.0, "last_frame_ts": time.time()})
        if i % every == 0:  # one round of readings per 30 s of the outage
            for device in SMOKE:
                offline.send(device, MessageType.SMOKE, {"state": "normal", "battery_pct": 90.0})
            for device in EXITS:
                offline.send(device, MessageType.EXIT, {"state": "clear", "blocked_ratio": 0.0})
    seq = offline.send(SMOKE[0], MessageType.SMOKE, {"state": "alarm", "battery_pct": 90.0})
    offline.stop(timeout=1)
    return len(outbox), (SMOKE[0], seq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heartbeats", type=int, default=20_000)
    parser.add_argument("--version", type=MqttVersion, default=MqttVersion.V5, choices=list(MqttVersion))
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--gateway", action="store_true", help="run PostgreSQL and the gateway's ingest too")
    parser.add_argument("--gateway-ack", choices=("on", "off"), default="off",
                        help="keep readings until the gateway confirms them (on: implies --gateway)")
    args = parser.parse_args()
    gateway_ack = args.gateway_ack == "on"
    with_gateway = args.gateway or gateway_ack
    logging.basicConfig(level=logging.ERROR)  # the offline agent's "cannot reach broker" is the point
    with tempfile.TemporaryDirectory(prefix="sg-bench-drain-") as tmp:
        root = Path(tmp)
        with TimedOutbox(root / "outbox.sqlite", max_messages=10 * args.heartbeats) as outbox:
            started = time.perf_counter()
            queued, backlog_alarm = queue_outage(outbox, args.heartbeats)
            print(f"backlog: {queued:,} messages queued offline in {time.perf_counter() - started:.1f} s "
                  f"({args.heartbeats:,} heartbeats, {queued - args.heartbeats - 1} smoke/exit readings, "
                  f"1 alarm put last)")
            with MosquittoServer(root / "mqtt") as broker, contextlib.ExitStack() as stack:
                if with_gateway:
                    start_gateway(root, broker.url, stack)
                watcher = Watcher(broker.url, queued + 1)  # + the live alarm
                agent = publisher(broker.url, outbox, args.version, args.max_in_flight, gateway_ack=gateway_ack)
                agent.start()
                try:
                    if not watcher.half.wait(600):
                        raise RuntimeError("the flush did not get halfway")
                    live_put = time.perf_counter()
                    live_alarm = (SMOKE[1], agent.send(SMOKE[1], MessageType.SMOKE, {"state": "alarm"}))
                    if not watcher.done.wait(600):
                        raise RuntimeError(f"only {watcher.count} of {watcher.total} messages arrived")
                    deadline = time.monotonic() + 600
                    while len(outbox) and time.monotonic() < deadline:
                        time.sleep(0.01)
                    if len(outbox):
                        raise RuntimeError(f"{len(outbox)} messages left in the outbox")
                    window = agent.stats().window
                    resent = agent.stats().resent
                finally:
                    agent.stop(timeout=1)
                    watcher.close()

    def figures(alarm: tuple[str, int], since: float) -> str:
        return ", ".join(f"{what} {(when[alarm] - since) * 1000:.1f} ms" for what, when in (
            ("published", outbox.published), ("acknowledged", outbox.acked), ("at the subscriber", watcher.arrived)))

    reconnect = outbox.first_peek
    print(f"drain: MQTT {args.version.value}, window {window} (max_in_flight {args.max_in_flight}), "
          f"gateway {'on' if with_gateway else 'off'}, kept until {'confirmed' if gateway_ack else 'PUBACK'}")
    print(f"backlog alarm (put last), from the reconnect: {figures(backlog_alarm, reconnect)}")
    print(f"whole backlog at the subscriber, from the reconnect: {watcher.done_at - reconnect:.2f} s "
          f"({queued / (watcher.done_at - reconnect):,.0f} msg/s; when the oldest-first drain published the alarm)")
    print(f"live alarm put halfway through the flush, from its put: {figures(live_alarm, live_put)}")
    empty = outbox.empty_at - reconnect
    print(f"outbox empty ({'every reading confirmed by the gateway' if gateway_ack else 'every PUBACK'}), "
          f"from the reconnect: {empty:.2f} s ({(queued + 1) / empty:,.0f} msg/s; {resent} resent)")

if __name__ == "__main__":
    main()
