"""Fire alarm latency under load: publish -> SSE and publish -> sg/v1/alerts/{site}.

    .venv/bin/python -m bench.alarms [--duration 60] [--rate 5700] [--storm]

Starts a private Mosquitto and PostgreSQL on free ports and ``safeguard serve`` (ingest,
supervisor, API) as a child process. A province-shaped background feed runs at ``--rate``
msg/s (500 sites x 20 devices, each message the next device). Once a second, a smoke
detector never seen before raises ``alarm``; the bench listens on the API's SSE stream and
on ``sg/v1/alerts/#`` and prints, for each path, p50 / p99 / max of the delay from publish to
the alert, and how many alarms were not seen within 10 s.

``--storm``: instead of the steady feed, 200 agents reconnect at once and flush a 10-minute
backlog each (17 devices, one message per 30 s: 68,000 messages as fast as the publishers
go) while the live alarms go on.

Before the load, the bench drains a 30,000-message province-shaped backlog with a bare paho
subscriber (``bench.ingest``'s peer) and prints its rate: the machine's speed in the same run,
so that figures taken on a machine in another state can be compared. ``--rate-of-peer F``
sets the background to F times that rate instead of ``--rate`` (5,700 msg/s was 0.24 of the
peer on this machine at its usual speed, 23,872 msg/s).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

from bench.ingest import Figure, Stack, _start_profile, measure_peer, summarise_profile
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import ALERTS_FILTER, MessageType, device_topic
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client
from safeguard.devservers import MosquittoServer, PostgresServer, free_port
from simulators.load import LoadPlan, finish, province_plan, site_id, start

TOKEN = "bench-admin-token-0123456789"
ALARM_SITE = "alarm-site"
SEEN_WITHIN_S = 10.0


class Watch:
    """When each live alarm was published and when each path first showed it."""

    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        self.sse: dict[str, float] = {}
        self.mqtt: dict[str, float] = {}
        self.arrived: dict[str, float] = {}  # at the gateway's ingest (the alert's opened_at)
        self.lock = threading.Lock()

    def seen(self, path: dict[str, float], alert: dict[str, object]) -> None:
        device = alert.get("device")
        if alert.get("kind") == "fire_alarm" and isinstance(device, str) and device.startswith("live-"):
            with self.lock:
                path.setdefault(device, time.time())

    def figures(self, path: dict[str, float]) -> str:
        delays = sorted(path[d] - t for d, t in self.published.items() if d in path)
        missed = sum(1 for d, t in self.published.items() if d not in path or path[d] - t > SEEN_WITHIN_S)
        if not delays:
            return f"no alarm seen of {len(self.published)}"
        p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
        first = min(self.published.values())
        worst = sorted(((path[d] - t, t - first) for d, t in self.published.items() if d in path), reverse=True)[:3]
        return (f"p50 {statistics.median(delays) * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms,"
                f" max {delays[-1] * 1000:,.0f} ms; {missed} of {len(self.published)} not seen within"
                f" {SEEN_WITHIN_S:.0f} s; worst: " + ", ".join(f"{d * 1000:,.0f} ms (alarm at +{at:.0f} s)"
                                                             for d, at in worst))


def follow_sse(api: str, watch: Watch, stop: threading.Event) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the gateway goes away at the end
        _read_sse(api, watch, stop)


def _read_sse(api: str, watch: Watch, stop: threading.Event) -> None:
    with httpx.Client(timeout=httpx.Timeout(5.0, read=None)) as client, client.stream(
        "GET", f"{api}/api/v1/alerts/stream", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as response:
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data:"):
                watch.seen(watch.sse, json.loads(line[5:]))


def follow_mqtt(url: str, watch: Watch) -> mqtt.Client:
    endpoint = MqttEndpoint.parse(url)
    client = new_client(endpoint, "bench-dispatch", MqttVersion.V5)
    client.on_connect = lambda c, *_a: c.subscribe(ALERTS_FILTER, qos=1)
    client.on_message = lambda _c, _u, m: watch.seen(watch.mqtt, json.loads(m.payload))
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    return client


def raise_alarms(url: str, watch: Watch, duration: float) -> None:
    endpoint = MqttEndpoint.parse(url)
    client = new_client(endpoint, "bench-alarms", MqttVersion.V5)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    boot = f"b{os.getpid()}"
    deadline = time.monotonic() + duration
    n = 0
    while time.monotonic() < deadline:
        device = f"live-{n}"
        payload = {"ts": time.time(), "boot": boot, "seq": 0, "state": "alarm", "battery_pct": 90.0,
                   "obscuration_pct": 15.0}
        watch.published[device] = time.time()
        info = client.publish(device_topic(ALARM_SITE, device, MessageType.SMOKE), json.dumps(payload), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SystemExit(f"alarm publish refused: rc={info.rc}")
        n += 1
        time.sleep(1.0)
    client.disconnect()
    client.loop_stop()


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (serve's alarm lane)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()
    total = 0.0
    for one in (pid, *map(int, children)):
        for line in Path(f"/proc/{one}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def _metric(api: str, name: str) -> float:
    """The sum of a Prometheus counter's samples on the gateway's /metrics (NaN: not there)."""
    try:
        text = httpx.get(f"{api}/metrics", timeout=5).text
    except httpx.HTTPError:
        return float("nan")
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values) if values else float("nan")


def calibrate(mqtt_url: str, database_url: str) -> Figure:
    """The bare paho peer's drain rate on a province-shaped backlog, then its session dropped."""
    peer = measure_peer(Stack(mqtt_url, database_url, MqttVersion.V5), province_plan(mqtt_url, 30_000, processes=2))
    endpoint = MqttEndpoint.parse(mqtt_url)
    client = new_client(endpoint, "bench-peer", MqttVersion.V5)  # clean start: the broker forgets it
    client.connect(endpoint.host, endpoint.port)
    client.disconnect()
    return peer


def serve(mqtt_url: str, database_url: str, port: int, *, split_lanes: bool = False,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``safeguard serve``: by default with its alarm lane in a child process; ``--one-process`` unless
    ``split_lanes``."""
    env = {**os.environ, **(env or {}), "SAFEGUARD_MQTT_URL": mqtt_url, "SAFEGUARD_DATABASE_URL": database_url,
           "SAFEGUARD_API_PORT": str(port), "SAFEGUARD_BOOTSTRAP_TOKEN": TOKEN}
    command = [sys.executable, "-m", "safeguard.cli", "--log-level", "WARNING", "serve"]
    proc = subprocess.Popen(command + ([] if split_lanes else ["--one-process"]), env=env)
    api = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{api}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("safeguard serve did not become ready")


def wait_alarm_lane(mqtt_url: str, database_url: str, timeout: float = 60.0) -> None:
    """A probe alarm sent until it is stored: the alarm lane (a child process of serve) is working."""
    endpoint = MqttEndpoint.parse(mqtt_url)
    client = new_client(endpoint, "bench-probe", MqttVersion.V5)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    deadline = time.monotonic() + timeout
    try:
        with connect(database_url) as conn:
            for seq in range(10_000):
                payload = {"ts": time.time(), "boot": "probe", "seq": seq, "state": "alarm"}
                client.publish(device_topic(ALARM_SITE, "probe", MessageType.SMOKE), json.dumps(payload), qos=1)
                time.sleep(0.5)
                if conn.execute("SELECT 1 FROM alerts WHERE site = %s AND device = 'probe'", (ALARM_SITE,)).fetchone():
                    return
                conn.rollback()
                if time.monotonic() > deadline:
                    break
    finally:
        client.disconnect()
        client.loop_stop()
    raise SystemExit(f"the alarm lane stored no probe alarm within {timeout:.0f} s")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of live alarms")
    parser.add_argument("--rate", type=float, default=5700.0, help="background msg/s (steady mode)")
    parser.add_argument("--rate-of-peer", type=float, metavar="F",
                        help="background at F x the bare paho peer's drain rate measured first (steady mode)")
    parser.add_argument("--storm", action="store_true", help="200 agents flushing a 10-minute backlog each")
    parser.add_argument("--exact-filters", action="store_true",
                        help="the routine lane on exact filters (ingest_catch_all: false, as docker-compose runs it)")
    parser.add_argument("--no-overflow", action="store_true",
                        help="ingest_overflow: false (the alarm lane waits when its hand-off is full)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="sample the gateway with py-spy during the load (raw samples to FILE) and print where"
                             " its time goes, per thread too")
    parser.add_argument("--split-lanes", action="store_true",
                        help="`safeguard serve` as it runs by default: the alarm lane in a child process of its own"
                             " (without this flag: serve --one-process)")
    return parser.parse_args()


@contextlib.contextmanager
def _sampling(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy on ``pid`` for the block's duration, when ``out`` is given."""
    sampler = _start_profile(pid, out) if out else None
    try:
        yield
    finally:
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its samples on SIGINT
            sampler.wait(timeout=60)


def _per_thread(path: Path) -> list[str]:
    """Share of the samples per thread (py-spy's first frame with --threads): who holds the process."""
    threads: collections.Counter[str] = collections.Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            threads[stack.split(";", 1)[0]] += int(count)
    samples = sum(threads.values()) or 1
    return ["py-spy: samples per thread:"] + [f"  {100 * n / samples:5.1f} %  {name}"
                                               for name, n in threads.most_common(12)]


def _load_plan(args: argparse.Namespace, url: str, peer: Figure) -> tuple[LoadPlan, str]:
    """The background feed, and how to describe it."""
    if args.storm:
        plan = LoadPlan(url, 200 * 17 * 20, sites=200, cameras=4, smoke=10, exits=3, processes=2)
        return plan, "reconnect storm: 200 agents x 17 devices x 20 messages (10 min at 30 s), flat out"
    rate = args.rate_of_peer * peer.rate if args.rate_of_peer else args.rate
    plan = province_plan(url, int(rate * (args.duration + 5)), processes=2, rate=rate)
    return plan, (f"background {rate:,.0f} msg/s ({rate / peer.rate:.2f} of the peer),"
                  f" {plan.sites} sites x {plan.devices_per_site} devices")


def main() -> None:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        root = Path(tmp)
        with PostgresServer(root / "pg", fast=True) as pg, \
                MosquittoServer(root / "mqtt", max_queued_messages=1_000_000) as broker:
            database_url = pg.url
            peer = calibrate(broker.url, database_url)
            plan, what = _load_plan(args, broker.url, peer)
            with connect(database_url) as conn:
                migrate(conn)
                upsert_sites(conn, [SiteRecord(id=site_id(plan, i)) for i in range(plan.sites)]
                             + [SiteRecord(id=ALARM_SITE)])
                conn.commit()
            port = free_port()
            env = {"SAFEGUARD_INGEST_CATCH_ALL": "false" if args.exact_filters else "true",
                   "SAFEGUARD_INGEST_OVERFLOW": "false" if args.no_overflow else "true"}
            gateway = serve(broker.url, database_url, port, split_lanes=args.split_lanes, env=env)
            wait_alarm_lane(broker.url, database_url)
            watch = Watch()
            stop = threading.Event()
            threading.Thread(target=follow_sse, args=(f"http://127.0.0.1:{port}", watch, stop), daemon=True).start()
            dispatch = follow_mqtt(broker.url, watch)
            time.sleep(1.0)
            rss = [_rss_mb(gateway.pid)]
            load = start(plan)
            with _sampling(gateway.pid, args.profile):
                raise_alarms(broker.url, watch, args.duration)
            rss.append(_rss_mb(gateway.pid))
            report = finish(*load)
            time.sleep(SEEN_WITHIN_S)  # the last alarms get their 10 s
            with connect(database_url) as conn:  # opened_at is the alarm's arrival at the gateway
                watch.arrived = {r["device"]: r["at"] for r in conn.execute(
                    "SELECT device, extract(epoch FROM opened_at)::float8 AS at FROM alerts"
                    " WHERE kind = 'fire_alarm' AND site = %s", (ALARM_SITE,))}
            rss.append(_rss_mb(gateway.pid))
            set_aside = _metric(f"http://127.0.0.1:{port}", "sg_ingest_overflow_total")
            stop.set()
            dispatch.loop_stop()
            gateway.terminate()  # serve stops its alarm lane child too
            gateway.wait(timeout=60)
    print(f"machine: the bare paho peer drains {peer}")
    shape = " (its alarm lane in a child process)" if args.split_lanes else " --one-process"
    print(f"gateway: `safeguard serve`{shape}, routine lane on"
          f" {'exact filters' if args.exact_filters else 'sg/v1/#'}, overflow {'off' if args.no_overflow else 'on'}")
    print(f"{what}; published {report.published:,} at {report.rate:,.0f} msg/s; one new alarm a second"
          f" for {args.duration:.0f} s")
    print(f"alarm -> SSE:                  {watch.figures(watch.sse)}")
    print(f"alarm -> sg/v1/alerts/{{site}}: {watch.figures(watch.mqtt)}")
    print(f"of which publish -> ingest:    {watch.figures(watch.arrived)}")
    print(f"set aside in ingest_overflow by the alarm lane while behind: {set_aside:,.0f} readings")
    if args.profile and args.profile.exists():
        print("\n".join(summarise_profile(args.profile)))
        print("\n".join(_per_thread(args.profile)))
    print(f"gateway RSS: {rss[0]:.0f} MB before the load, {rss[1]:.0f} MB at the end of the alarms,"
          f" {rss[2]:.0f} MB {SEEN_WITHIN_S:.0f} s later")


if __name__ == "__main__":
    main()
