"""Ingest throughput: messages/s one ingest process stores, against a bare paho consumer.

    .venv/bin/python -m bench.ingest [--messages 50000] [--sites 50] [--batch-size 1000]

Starts a private Mosquitto and PostgreSQL on free ports. A publisher process sends
readings at QoS 1 with bounded in-flight messages (every publish's result checked).
Two consumers are measured in the same run against the same broker and feed:

* peer: a bare paho MQTT 5 subscriber that only counts (the ceiling of one paho process);
* gateway: the real ingest service (validate, COPY, rules, device state, manual ack).

It prints messages/s for both and the ratio gateway/peer.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from gateway.config import Settings
from gateway.devservers import MosquittoServer, PostgresServer
from gateway.ingest.service import IngestService
from gateway.store.db import connect, open_pool
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import SUBSCRIPTION
from protocol.mqtt import MqttEndpoint, MqttVersion, connect_properties, new_client
from simulators.load import LoadPlan, site_id
from simulators.load import finish as finish_load
from simulators.load import start as start_load


def measure_peer(url: str, sites: int, messages: int) -> float:
    endpoint = MqttEndpoint.parse(url)
    received = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= messages:
            done.set()

    client = new_client(endpoint, "bench-peer", MqttVersion.V5)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(SUBSCRIPTION, qos=1)
    client.connect(endpoint.host, endpoint.port, properties=connect_properties(session_expiry_s=0,
                                                                              receive_maximum=2000))
    client.loop_start()
    subscribed.wait(10)
    start = time.perf_counter()
    load = start_load(LoadPlan(url, messages, sites))
    done.wait(600)
    elapsed = time.perf_counter() - start
    finish_load(*load)
    client.disconnect()
    client.loop_stop()
    return messages / elapsed


def measure_gateway(url: str, database_url: str, sites: int, messages: int, batch_size: int) -> tuple[float, float]:
    settings = Settings(mqtt_url=url, database_url=database_url, batch_size=batch_size, batch_interval_s=0.05)
    pool = open_pool(database_url, max_size=4)
    ingest = IngestService(settings, pool)
    ingest.start()
    ingest.wait_connected(10)
    start = time.perf_counter()
    load = start_load(LoadPlan(url, messages, sites))
    stored = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        while stored < messages:
            time.sleep(0.05)
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
            stored = row[0] if row else 0
            if time.perf_counter() - start > 600:
                break
    elapsed = time.perf_counter() - start
    report = finish_load(*load)
    if report.failed:
        print(f"publisher: {report.failed} publishes failed")
    ingest.stop()
    pool.close()
    return stored / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        root = Path(tmp)
        with PostgresServer(root / "pg") as pg, MosquittoServer(root / "mqtt") as broker:
            with psycopg.connect(pg.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            database_url = pg.url_for("bench")
            with connect(database_url) as conn:
                migrate(conn)
                upsert_sites(conn, [SiteRecord(id=site_id(LoadPlan('', 0, args.sites), i)) for i in range(args.sites)])
                conn.commit()
            peer = measure_peer(broker.url, args.sites, args.messages)
            rate, elapsed = measure_gateway(broker.url, database_url, args.sites, args.messages, args.batch_size)
    print(f"messages: {args.messages} from {args.sites} sites x 4 cameras, QoS 1, MQTT 5, batch {args.batch_size}")
    print(f"peer (bare paho subscriber, counts only): {peer:,.0f} msg/s")
    print(f"gateway ingest (validate + COPY + rules + state + ack): {rate:,.0f} msg/s ({elapsed:.1f} s)")
    print(f"ratio gateway/peer: {rate / peer:.2f}")


if __name__ == "__main__":
    main()
