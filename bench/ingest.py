"""Ingest throughput on a province-shaped feed: 1 and 2 ingest workers against a bare paho consumer.

    .venv/bin/python -m bench.ingest [--messages 200000] [--sites 500] [--workers 1 2]
                                     [--filters catch-all|exact|both] [--storage plain|timescale|both]
                                     [--mqtt-version 5|3.1.1] [--profile FILE]

Starts a private Mosquitto and PostgreSQL on free ports, per storage path (plain PostgreSQL,
and TimescaleDB when it is installed: ``--storage``). The feed is province-shaped
(``simulators.load.province_plan``): 500 sites x 20 devices (4 cameras, 13 smoke detectors,
3 exits) = 10,000 devices, each message from the next device in turn, QoS 1.

Each consumer is measured the same way, on the same feed: it connects once to create its
persistent session, goes away, the feed is published into the broker's queue for it, and
the consumer comes back and drains it (a gateway returning after an outage). The clock runs
from its return until the last message is counted (peer) or stored (gateway). Publishing
first keeps the publisher's CPU out of the figure on this 2-core machine.

* peer: a bare paho MQTT 5 subscriber that only counts (the ceiling of one paho process);
* gateway: ``safeguard ingest`` processes (both lanes: validate, COPY, rules, device state,
  manual ack after commit) on one shared subscription, 1 and then 2 of them.

It prints messages/s and CPU per message for each, and the ratio to the peer, with the
routine lane on ``sg/v1/#`` (the default) and on exact filters (``ingest_catch_all: false``).
``--profile FILE`` samples the first worker of the first run with py-spy and prints where
its time goes.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from bench.storage import add_storage_option, chosen_storages
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import SUBSCRIPTION
from protocol.mqtt import MqttEndpoint, MqttVersion, connect_properties, new_client
from safeguard.devservers import IngestProcess, MosquittoServer, PostgresServer
from simulators.load import LoadPlan, province_plan, site_id
from simulators.load import run as run_load

SESSION_EXPIRY_S = 600
_FRAME_FILE = re.compile(r" \((?:[^()]*/)?([^/():]+):\d+\)")


@dataclass(frozen=True, slots=True)
class Figure:
    rate: float  # messages/s
    cpu_per_message: float  # CPU seconds of the consumer's process(es) per message

    def __str__(self) -> str:
        return f"{self.rate:,.0f} msg/s, {self.cpu_per_message * 1e6:,.0f} µs CPU per message"


@dataclass(frozen=True, slots=True)
class Stack:
    mqtt_url: str
    database_url: str
    version: MqttVersion


def publish_backlog(plan: LoadPlan) -> None:
    report = run_load(plan)
    if report.failed or report.published != plan.messages:
        raise SystemExit(f"publisher: {report.published} of {plan.messages} acknowledged, {report.failed} failed")


# peer ---------------------------------------------------------------------------------------


def measure_peer(stack: Stack, plan: LoadPlan, *, buffered: bool = False) -> Figure:
    endpoint = MqttEndpoint.parse(stack.mqtt_url)
    received = 0
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= plan.messages:
            done.set()

    def session() -> mqtt.Client:
        subscribed = threading.Event()
        client = new_client(endpoint, "bench-peer", stack.version, persistent=True, buffered=buffered)
        client.on_message = on_message
        client.on_subscribe = lambda *_a: subscribed.set()
        client.on_connect = lambda c, *_a: c.subscribe(SUBSCRIPTION, qos=1)
        if stack.version is MqttVersion.V5:
            props = connect_properties(session_expiry_s=SESSION_EXPIRY_S, receive_maximum=2000)
            client.connect(endpoint.host, endpoint.port, clean_start=False, properties=props)
        else:
            client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        subscribed.wait(10)
        return client

    first = session()
    first.disconnect()
    first.loop_stop()
    publish_backlog(plan)
    start, cpu = time.perf_counter(), time.process_time()
    client = session()
    done.wait(900)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    client.disconnect()
    client.loop_stop()
    return Figure(received / elapsed, cpu / max(received, 1))


# gateway workers ----------------------------------------------------------------------------


@contextmanager
def workers(stack: Stack, count: int, run: str, catch_all: bool) -> Iterator[list[IngestProcess]]:
    env = {"SAFEGUARD_MQTT_SESSION_EXPIRY_S": str(SESSION_EXPIRY_S), "SAFEGUARD_MQTT_VERSION": stack.version.value,
           "SAFEGUARD_INGEST_CATCH_ALL": "true" if catch_all else "false"}
    started = [IngestProcess(stack.mqtt_url, stack.database_url, f"{run}-{i}", group=run, env=env)
               for i in range(count)]
    try:
        for w in started:
            w.wait_connected(30)
        yield started
    finally:
        for w in started:
            w.stop()


def stored(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def measure_gateway(stack: Stack, plan: LoadPlan, count: int, catch_all: bool, profile: Path | None) -> Figure:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, device_state, dead_letters")
    run = f"w{count}{'c' if catch_all else 'x'}"
    with workers(stack, count, run, catch_all):
        pass  # the sessions now exist; the workers are away while the feed is published
    publish_backlog(plan)
    with workers(stack, count, run, catch_all) as running:
        # From their connection (start-up excluded): the broker starts sending the queue then.
        start, cpu0 = time.perf_counter(), sum(_cpu_seconds(w.proc.pid) for w in running)
        sampler = _start_profile(running[0].proc.pid, profile) if profile else None
        while stored(stack.database_url) < plan.messages and time.perf_counter() - start < 900:
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        cpu = sum(_cpu_seconds(w.proc.pid) for w in running) - cpu0
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
    n = stored(stack.database_url)
    if n != plan.messages:
        print(f"gateway x{count}: stored {n} of {plan.messages}")
    return Figure(n / elapsed, cpu / max(n, 1))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# profile ------------------------------------------------------------------------------------


def _start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--threads",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def summarise_profile(path: Path, top: int = 15) -> list[str]:
    """Share of samples per function: self (the frame running) and total (anywhere on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_FRAME_FILE.sub(r" (\1)", f) for f in stack.split(";")]  # "func (path/file.py:12)" -> file
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"py-spy: {samples} samples (all threads); self / total share of samples:"]
    for frame, n in own.most_common(top):
        lines.append(f"  {100 * n / samples:5.1f} % / {100 * total[frame] / samples:5.1f} %  {frame}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--profile", type=Path, help="write py-spy raw samples of the 1-worker run here")
    parser.add_argument("--filters", choices=["catch-all", "exact", "both"], default="both",
                        help="the routine lane's subscription: sg/v1/# (ingest_catch_all, the default setting),"
                             " the exact filters (ingest_catch_all: false), or both (default)")
    parser.add_argument("--mqtt-version", choices=["5", "3.1.1"], default="5",
                        help="for the peer and the gateway alike (the broker runs without an in-flight"
                             " limit, as deploy/mosquitto/mosquitto.conf)")
    add_storage_option(parser)
    args = parser.parse_args()
    for storage in chosen_storages(parser, args):
        bench(storage, args)
    if args.profile and args.profile.exists():
        print("\n".join(summarise_profile(args.profile)))


def bench(storage: str, args: argparse.Namespace) -> None:
    """Every configuration on one storage path, each against the peer of the same run."""
    plan = province_plan("", args.messages, args.sites, processes=2)
    timescale = storage == "timescale"
    print(f"--- {storage}: PostgreSQL{' + TimescaleDB' if timescale else ''}")
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        root = Path(tmp)
        with PostgresServer(root / "pg", fast=True, timescale=timescale, timescale_jobs=False) as pg, \
                MosquittoServer(root / "mqtt", max_queued_messages=args.messages * 2,
                                max_inflight_messages=0) as broker:  # as deploy/mosquitto/mosquitto.conf
            with psycopg.connect(pg.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            stack = Stack(broker.url, pg.url_for("bench"), MqttVersion(args.mqtt_version))
            with connect(stack.database_url) as conn:
                migrate(conn)
                upsert_sites(conn, [SiteRecord(id=site_id(plan, i)) for i in range(args.sites)])
                conn.commit()
            plan = province_plan(broker.url, args.messages, args.sites, processes=2)
            devices = args.sites * plan.devices_per_site
            print(f"feed: {args.messages:,} messages, {args.sites} sites x {plan.devices_per_site} devices"
                  f" = {devices:,} devices ({plan.cameras} cameras, {plan.smoke} smoke, {plan.exits} exits),"
                  f" each message the next device, QoS 1, MQTT {args.mqtt_version}; drained from the broker's queue")
            peer = measure_peer(stack, plan)
            print(f"peer (bare paho subscriber, counts only): {peer}")
            buffered = measure_peer(stack, plan, buffered=True)
            print(f"peer on protocol.mqtt_socket's buffered reads: {buffered};"
                  f" ratio to peer {buffered.rate / peer.rate:.2f}")
            modes = {"catch-all": (True,), "exact": (False,), "both": (True, False)}[args.filters]
            for catch_all in modes:
                for count in args.workers:
                    first = count == args.workers[0] and catch_all == modes[0] and storage == "plain"
                    figure = measure_gateway(stack, plan, count, catch_all, args.profile if first else None)
                    filters = "sg/v1/# catch-all" if catch_all else "exact filters"
                    print(f"gateway, {count} ingest worker(s), {filters}: {figure};"
                          f" ratio to peer {figure.rate / peer.rate:.2f}")


if __name__ == "__main__":
    main()
