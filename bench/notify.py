"""Notification latency: a fire alarm's publish -> the webhook receiver's arrival.

    .venv/bin/python -m bench.notify [--duration 60] [--rate 5700]      # steady background
    .venv/bin/python -m bench.notify --burst 1000                        # a regional event

Starts a private Mosquitto and PostgreSQL on free ports, a local webhook receiver (nothing real
is called) and ``safeguard serve`` (ingest, supervisor, API and the notifier, one route: every
alert to the webhook at once) as a child process.

Steady: a province-shaped background feed at ``--rate`` msg/s (500 sites x 20 devices, as
bench/alarms.py) and, once a second, a smoke detector never seen before raises ``alarm``.
Burst: ``--burst N`` smoke detectors over N / 10 sites raise ``alarm`` at once (no background).
Prints p50 / p99 / max of publish -> webhook arrival, and how many did not arrive within 30 s;
then the same split at the gateway's ingest (the alert's ``opened_at``): before it, and the
notifier's part after it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import yaml

from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import MessageType, device_topic
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client
from safeguard.devservers import MosquittoServer, PostgresServer, free_port
from safeguard.receivers import LocalReceiver
from simulators.load import finish, province_plan, site_id, start

TOKEN = "bench-admin-token-0123456789"
WITHIN_S = 30.0


def figures(published: dict[str, float], arrived: dict[str, float]) -> str:
    delays = sorted(arrived[d] - t for d, t in published.items() if d in arrived)
    missed = sum(1 for d, t in published.items() if d not in arrived or arrived[d] - t > WITHIN_S)
    if not delays:
        return f"none arrived of {len(published)}"
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    return (f"p50 {statistics.median(delays) * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms,"
            f" max {delays[-1] * 1000:,.0f} ms; {missed} of {len(published)} not arrived within {WITHIN_S:.0f} s")


def arrivals(receiver: LocalReceiver) -> dict[str, float]:
    seen: dict[str, float] = {}
    for got in receiver.received("/hook"):
        body = got.json()
        if body.get("event") == "alert" and body["alert"]["kind"] == "fire_alarm":
            seen.setdefault(f"{body['alert']['site']}/{body['alert']['device']}", got.at)
    return seen


def serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    env.update({"SAFEGUARD_API_PORT": str(port), "SAFEGUARD_BOOTSTRAP_TOKEN": TOKEN})
    proc = subprocess.Popen([sys.executable, "-m", "safeguard.cli", "--log-level", "WARNING", "serve",
                             "--config", str(config)], env=env)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("safeguard serve did not become ready")


def alarm(client: mqtt.Client, site: str, device: str, published: dict[str, float]) -> None:
    payload = {"ts": time.time(), "boot": f"b{os.getpid()}", "seq": 0, "state": "alarm", "battery_pct": 90.0,
               "obscuration_pct": 15.0}
    published[f"{site}/{device}"] = time.time()
    info = client.publish(device_topic(site, device, MessageType.SMOKE), json.dumps(payload), qos=1)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise SystemExit(f"alarm publish refused: rc={info.rc}")


def write_config(path: Path, mqtt_url: str, database_url: str, receiver: LocalReceiver) -> Path:
    """The gateway's settings: one route, every alert to the local webhook at once."""
    path.write_text(yaml.safe_dump({
        "mqtt_url": mqtt_url, "database_url": database_url,
        "notify": {"channels": {"hook": {"type": "webhook", "url": receiver.url("/hook"),
                                         "secret": "bench-secret-0123456789"}},
                   "routes": [{"name": "all", "steps": [{"after_s": 0, "channels": ["hook"]}]}]},
    }), encoding="utf-8")
    return path


def main() -> None:  # noqa: PLR0915 - one run, start to finish
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of live alarms (steady mode)")
    parser.add_argument("--rate", type=float, default=5700.0, help="background msg/s (steady mode)")
    parser.add_argument("--burst", type=int, help="N alarms at once instead (no background)")
    args = parser.parse_args()
    receiver = LocalReceiver().start()
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        root = Path(tmp)
        with PostgresServer(root / "pg", fast=True) as pg, \
                MosquittoServer(root / "mqtt", max_queued_messages=1_000_000) as broker:
            plan = None if args.burst else province_plan(broker.url, int(args.rate * (args.duration + 5)),
                                                         processes=2, rate=args.rate)
            alarm_sites = [f"alarm-{i:03d}" for i in range(max(1, (args.burst or 10) // 10))]
            with connect(pg.url) as conn:
                migrate(conn)
                sites = [SiteRecord(id=s, county="Xihu") for s in alarm_sites]
                if plan is not None:
                    sites += [SiteRecord(id=site_id(plan, i), county="Xihu") for i in range(plan.sites)]
                upsert_sites(conn, sites)
                conn.commit()
            port = free_port()
            gateway = serve(write_config(root / "gateway.yaml", broker.url, pg.url, receiver), port)
            endpoint = MqttEndpoint.parse(broker.url)
            client = new_client(endpoint, "bench-alarms", MqttVersion.V5)
            client.max_inflight_messages_set(1000)
            client.connect(endpoint.host, endpoint.port)
            client.loop_start()
            published: dict[str, float] = {}
            time.sleep(1.0)
            if args.burst:
                what = f"{args.burst:,} fire alarms at once over {len(alarm_sites)} sites, no background"
                for n in range(args.burst):
                    alarm(client, alarm_sites[n % len(alarm_sites)], f"live-{n}", published)
            else:
                assert plan is not None
                what = f"background {args.rate:,.0f} msg/s ({plan.sites} sites x {plan.devices_per_site} devices);" \
                       f" one new fire alarm a second for {args.duration:.0f} s"
                load = start(plan)
                deadline = time.monotonic() + args.duration
                n = 0
                while time.monotonic() < deadline:
                    alarm(client, alarm_sites[0], f"live-{n}", published)
                    n += 1
                    time.sleep(1.0)
                report = finish(*load)
                what += f"; background published {report.published:,} at {report.rate:,.0f} msg/s"
            wait_until = time.monotonic() + WITHIN_S
            while time.monotonic() < wait_until and len(arrivals(receiver)) < len(published):
                time.sleep(0.2)
            with connect(pg.url) as conn:  # opened_at: the alarm's arrival at the gateway's ingest
                opened = {f"{r['site']}/{r['device']}": r["at"] for r in conn.execute(
                    "SELECT site, device, extract(epoch FROM opened_at)::float8 AS at FROM alerts"
                    " WHERE kind = 'fire_alarm'")}
            client.loop_stop()
            gateway.terminate()
            gateway.wait(timeout=60)
    receiver.stop()
    print(what)
    print(f"fire alarm publish -> webhook arrival: {figures(published, arrivals(receiver))}")
    print(f"of which publish -> ingest (opened_at): {figures(published, opened)}")
    print(f"ingest (opened_at) -> webhook arrival:  {figures(opened, arrivals(receiver))}")


if __name__ == "__main__":
    main()
