"""Soak: ``safeguard serve`` at province load for a long time, with faults injected at random.

    .venv/bin/python -m bench.soak [--duration 3600] [--rate 500] [--fault-every 60] [--seed 1]

Starts a private PostgreSQL and Mosquitto on free ports and ``safeguard serve`` as a child
process. A province-shaped feed (500 sites x 20 devices, each message the next device, QoS 1,
one boot, ``seq`` the message number) runs at ``--rate`` msg/s; every 5 s a smoke detector never
seen before raises ``alarm`` at its own site; about 1 % of the traffic is malformed
(simulators/wirefuzz.py: garbage, near-valid and decoder-hole messages, half of them for the
registered sites). Every ``--fault-every`` seconds on average one fault, chosen at random:

- ``kill``: the gateway SIGKILLed and started again;
- ``pause``: PostgreSQL frozen (SIGSTOP of every server process) for 10-30 s;
- ``stop``: PostgreSQL stopped for 10-20 s and started again;
- ``broker``: Mosquitto restarted (it keeps nothing: what it held for the gateway is lost,
  issue 15 finding 1).

Every 10 s a line: time, gateway RSS, messages acknowledged by the broker and stored, faults so
far. At the end (after the feed stops and the gateway drains): loss (acknowledged by the broker,
never stored), duplicates (stored more than once by ``(site, device, boot, seq)``), alarms
missed (an acknowledged alarm with no fire_alarm alert), dead letters, and RSS min / max.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.alarms import serve
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import MessageType, device_topic
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client
from safeguard.devservers import MosquittoServer, PostgresServer, free_port
from simulators import wirefuzz
from simulators.load import _message, province_plan, site_id

ALARM_SITE = "soak-alarms"
ALARM_EVERY_S = 5.0
MALFORMED_SHARE = 0.01
PRINT_EVERY_S = 10.0
ACK_TIMEOUT_S = 120.0  # a publish the broker has not acknowledged by then counts as not sent
FAULTS = ("kill", "pause", "stop", "broker")


@dataclass
class Tally:
    """What the feed knows: acknowledged seqs, acknowledged alarm devices, what was not acknowledged."""

    acked: set[int] = field(default_factory=set)
    alarms: set[str] = field(default_factory=set)
    unacked: int = 0
    malformed: int = 0
    pending: deque[tuple[float, int | str, mqtt.MQTTMessageInfo]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settle(self, now: float, final: bool = False) -> None:
        with self.lock:
            while self.pending:
                at, key, info = self.pending[0]
                published = _published(info)
                if not published and now - at < ACK_TIMEOUT_S and not final:
                    break
                self.pending.popleft()
                if not published:
                    self.unacked += 1
                elif isinstance(key, int):
                    self.acked.add(key)
                else:
                    self.alarms.add(key)


def _published(info: mqtt.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except RuntimeError:  # published while the broker was away: paho may send it later, unacknowledged here
        return False


def feed(url: str, rate: float, boot: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    """The province feed, the live alarms and the malformed share, from one paho client."""
    plan = province_plan(url, 0)
    endpoint = MqttEndpoint.parse(url)
    client = new_client(endpoint, f"soak-feed-{boot}", MqttVersion.V5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)  # queue while the broker is away: that is what an agent does
    client.connect(endpoint.host, endpoint.port, keepalive=30)
    client.loop_start()
    # The malformed share on a client of its own: a broker may drop a client for what it sends.
    bad = new_client(endpoint, f"soak-bad-{boot}", MqttVersion.V5)
    bad.connect(endpoint.host, endpoint.port, keepalive=30)
    bad.loop_start()
    rng = random.Random(seed)
    fuzz = wirefuzz.cases(seed, 10**12)
    started = time.monotonic()
    n = alarms = 0
    while not stop.is_set():
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        site = rng.randrange(plan.sites)
        index = (n // plan.sites) % plan.devices_per_site
        topic, payload = _message(plan, site_id(plan, site), index, boot, n)  # the load generator's shapes
        _publish(client, tally, n, topic, json.dumps(payload).encode())
        n += 1
        if rng.random() < MALFORMED_SHARE:
            case = next(fuzz)
            while case.valid:
                case = next(fuzz)
            topic = case.topic
            if rng.random() < 0.5 and topic.count("/") == 4:
                levels = topic.split("/")
                topic = "/".join([*levels[:2], site_id(plan, site), *levels[3:]])
            with contextlib.suppress(ValueError):  # paho refuses some topics itself (wildcards)
                bad.publish(topic, case.payload, qos=0)
                tally.malformed += 1
        if time.monotonic() - started >= alarms * ALARM_EVERY_S:
            device = f"live-{alarms}"
            body = {"ts": time.time(), "boot": boot, "seq": 0, "state": "alarm", "battery_pct": 90.0,
                    "obscuration_pct": 15.0}
            _publish(client, tally, device, device_topic(ALARM_SITE, device, MessageType.SMOKE),
                     json.dumps(body).encode())
            alarms += 1
        if n % 500 == 0:
            tally.settle(time.time())
    deadline = time.time() + ACK_TIMEOUT_S
    while tally.pending and time.time() < deadline:
        tally.settle(time.time())
        time.sleep(0.5)
    tally.settle(time.time(), final=True)
    for c in (client, bad):
        c.disconnect()
        c.loop_stop()


def _publish(client: mqtt.Client, tally: Tally, key: int | str, topic: str, payload: bytes) -> None:
    try:
        info = client.publish(topic, payload, qos=1)
    except (ValueError, RuntimeError):  # paho's queue full, or not connected: not sent, not counted
        tally.unacked += 1
        return
    tally.pending.append((time.time(), key, info))


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _postgres_pids(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, checkpointer, ...): all of them must freeze."""
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
    return pids


class Stack:
    """The servers and the gateway, and the faults done to them."""

    def __init__(self, root: Path) -> None:
        self.pg = PostgresServer(root / "pg", fast=True)
        self.broker = MosquittoServer(root / "mqtt", max_queued_messages=1_000_000)
        self.port = free_port()
        self.gateway: subprocess.Popen[bytes] | None = None
        self.faults: Counter[str] = Counter()
        self.busy = threading.Lock()  # the RSS sampler reads gateway.pid while a fault replaces it

    def start(self) -> None:
        self.pg.start()
        self.broker.start()
        with connect(self.pg.url) as conn:
            migrate(conn)
            plan = province_plan(self.broker.url, 0)
            upsert_sites(conn, [SiteRecord(id=site_id(plan, i)) for i in range(plan.sites)]
                         + [SiteRecord(id=ALARM_SITE)])
            conn.commit()
        self.gateway = serve(self.broker.url, self.pg.url, self.port, split_lanes=False)

    @property
    def gateway_pid(self) -> int | None:
        return self.gateway.pid if self.gateway is not None else None

    def fault(self, kind: str, rng: random.Random) -> str:
        self.faults[kind] += 1
        if kind == "kill":
            with self.busy:
                assert self.gateway is not None
                self.gateway.kill()  # SIGKILL
                self.gateway.wait()
                self.gateway = serve(self.broker.url, self.pg.url, self.port, split_lanes=False)
            return "gateway SIGKILLed and restarted"
        if kind == "pause":
            seconds = rng.uniform(10, 30)
            pids = _postgres_pids(self.pg.pid or 0)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            time.sleep(seconds)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            return f"PostgreSQL paused {seconds:.0f} s"
        if kind == "stop":
            seconds = rng.uniform(10, 20)
            self.pg.stop()
            time.sleep(seconds)
            self.pg.start()
            return f"PostgreSQL stopped {seconds:.0f} s"
        self.broker.restart()
        return "Mosquitto restarted"

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.terminate()
            self.gateway.wait(timeout=60)
        self.broker.stop()
        self.pg.stop()


def stored_count(url: str, boot: str) -> int:
    with contextlib.suppress(Exception), connect(url) as conn:
        row = conn.execute("SELECT count(*) AS n FROM readings WHERE boot = %s", (boot,)).fetchone()
        return int(row["n"]) if row else -1
    return -1


def drain(url: str, boot: str, quiet_s: float = 20.0, limit_s: float = 300.0) -> None:
    """Wait until the stored count has not moved for ``quiet_s`` (the gateway has caught up)."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        count = stored_count(url, boot)
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of feed and faults (default 1 h)")
    parser.add_argument("--rate", type=float, default=500.0, help="routine messages/s (default 500)")
    parser.add_argument("--fault-every", type=float, default=60.0, help="mean seconds between faults")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"which faults, of {','.join(FAULTS)}")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    if any(k not in FAULTS for k in kinds):
        parser.error(f"--faults: expected some of {', '.join(FAULTS)}")
    rng = random.Random(args.seed)
    boot = f"soak{args.seed}-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="sg-soak-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.start()
            run(stack, args, kinds, rng, boot)
        finally:
            stack.stop()


def run(stack: Stack, args: argparse.Namespace, kinds: list[str], rng: random.Random, boot: str) -> None:
    url = stack.pg.url
    tally, stop = Tally(), threading.Event()
    feeder = threading.Thread(target=feed, args=(stack.broker.url, args.rate, boot, stop, tally, args.seed),
                              name="feed", daemon=True)
    rss: list[float] = []
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            with stack.busy:
                value = _rss_mb(stack.gateway_pid)
            rss.append(value)
            print(f"{time.monotonic() - started:6.0f} s  gateway RSS {value:6.1f} MB  acknowledged"
                  f" {len(tally.acked):>9,}  stored {stored_count(url, boot):>9,}  faults {sum(stack.faults.values())}",
                  flush=True)
            stop.wait(PRINT_EVERY_S)

    print(f"soak: {args.duration:.0f} s at {args.rate:.0f} msg/s (500 sites x 20 devices), an alarm every"
          f" {ALARM_EVERY_S:.0f} s, {MALFORMED_SHARE:.0%} malformed, a fault every ~{args.fault_every:.0f} s"
          f" of {', '.join(kinds)}; seed {args.seed}", flush=True)
    feeder.start()
    sampler = threading.Thread(target=sample, name="rss", daemon=True)
    sampler.start()
    end = started + args.duration
    while kinds:
        wait = rng.uniform(0.5, 1.5) * args.fault_every
        if time.monotonic() + wait >= end - 15:  # the last fault has time to heal before the feed stops
            break
        time.sleep(wait)
        kind = rng.choice(kinds)
        print(f"{time.monotonic() - started:6.0f} s  fault: {stack.fault(kind, rng)}", flush=True)
    time.sleep(max(0.0, end - time.monotonic()))
    stop.set()
    if not feeder.is_alive():
        print("THE FEED STOPPED EARLY: see its traceback above", flush=True)
    feeder.join()
    sampler.join()
    drain(url, boot)
    report(stack, tally, rss, boot, time.monotonic() - started)


def report(stack: Stack, tally: Tally, rss: list[float], boot: str, seconds: float) -> None:
    with connect(stack.pg.url) as conn:
        stored = {r["seq"] for r in conn.execute("SELECT DISTINCT seq FROM readings WHERE boot = %s", (boot,))}
        row = conn.execute(
            "SELECT count(*) AS n, count(DISTINCT (site, device, boot, seq)) AS d FROM readings WHERE boot = %s",
            (boot,)).fetchone()
        alerted = {r["device"] for r in conn.execute(
            "SELECT DISTINCT device FROM alerts WHERE site = %s AND kind = 'fire_alarm'", (ALARM_SITE,))}
        dead = conn.execute("SELECT code, count(*) AS n FROM dead_letters GROUP BY code ORDER BY code").fetchall()
    assert row is not None
    lost = len(tally.acked - stored)
    missed = len(tally.alarms - alerted)
    good = [r for r in rss if not math.isnan(r)]  # drop NaN (no gateway at that instant)
    print(f"\nsoak over: {seconds:.0f} s; faults: {dict(stack.faults)}")
    print(f"routine messages acknowledged by the broker {len(tally.acked):,}, stored {len(stored & tally.acked):,},"
          f" lost {lost:,} ({lost / max(1, len(tally.acked)):.3%}); not acknowledged (not counted) {tally.unacked:,}")
    print(f"duplicates stored: {row['n'] - row['d']:,}")
    print(f"alarms acknowledged {len(tally.alarms)}, raised {len(tally.alarms & alerted)}, missed {missed}")
    print(f"malformed sent {tally.malformed:,}; dead letters: " + ", ".join(f"{r['code']} {r['n']:,}" for r in dead))
    if good:
        print(f"gateway RSS: first {good[0]:.0f} MB, min {min(good):.0f} MB, max {max(good):.0f} MB,"
              f" last {good[-1]:.0f} MB ({len(good)} samples)")


if __name__ == "__main__":
    main()
