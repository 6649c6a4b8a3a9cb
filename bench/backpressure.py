"""Memory of one ingest worker draining a burst far larger than its hand-off (issue 15).

    .venv/bin/python -m bench.backpressure [--messages 1000000] [--sites 500] [--queue-max 5000]

Starts a private Mosquitto and PostgreSQL (plain), creates the worker's persistent sessions,
publishes the burst into the broker's queue for it (province-shaped feed, QoS 1, as
``bench.ingest``), then starts one ``safeguard ingest`` process and samples its resident memory
(VmRSS) every half second until the whole burst is stored. It prints RSS at the start, the
highest and the last, the drain rate, and the highest ``sg_ingest_queue_depth_max`` (messages
held received but not stored) the worker reports: with the bound it stays at ``--queue-max``
while the broker holds the rest; without one (the code before issue 15) RSS grows with the
burst.
"""

from __future__ import annotations

import argparse
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from bench.ingest import SESSION_EXPIRY_S, publish_backlog, stored
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from safeguard.devservers import IngestProcess, MosquittoServer, PostgresServer
from simulators.load import province_plan, site_id

_DEPTH = re.compile(r'^sg_ingest_queue_depth_max\{lane="(\w+)"\} (\S+)$', re.MULTILINE)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def depth_max(port: int) -> dict[str, float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {lane: float(value) for lane, value in _DEPTH.findall(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--queue-max", type=int, default=5000, help="ingest_queue_max of the worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-bp-") as tmp:
        root = Path(tmp)
        with PostgresServer(root / "pg", fast=True) as pg, \
                MosquittoServer(root / "mqtt", max_queued_messages=args.messages * 2,
                                max_inflight_messages=0) as broker:
            with psycopg.connect(pg.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            database_url = pg.url_for("bench")
            plan = province_plan(broker.url, args.messages, args.sites, processes=2)
            with connect(database_url) as conn:
                migrate(conn)
                upsert_sites(conn, [SiteRecord(id=site_id(plan, i)) for i in range(args.sites)])
                conn.commit()
            port = free_port()
            env = {"SAFEGUARD_MQTT_SESSION_EXPIRY_S": str(SESSION_EXPIRY_S),
                   "SAFEGUARD_INGEST_QUEUE_MAX": str(args.queue_max), "SAFEGUARD_METRICS_PORT": str(port)}
            first = IngestProcess(broker.url, database_url, "bp-0", group="bp", env=env)
            first.wait_connected(30)
            first.stop()  # the sessions exist; the burst is queued for them
            started = time.perf_counter()
            publish_backlog(plan)
            print(f"burst: {args.messages:,} messages published into the broker's queue in"
                  f" {time.perf_counter() - started:,.0f} s; ingest_queue_max {args.queue_max:,}")
            worker = IngestProcess(broker.url, database_url, "bp-0", group="bp", env=env)
            samples: list[tuple[float, float]] = []
            depth: dict[str, float] = {}
            done = threading.Event()
            try:
                worker.wait_connected(30)
                start = time.perf_counter()
                while not done.is_set():
                    samples.append((time.perf_counter() - start, rss_mb(worker.proc.pid)))
                    for lane, value in depth_max(port).items():
                        depth[lane] = max(depth.get(lane, 0.0), value)
                    n = stored(database_url)
                    if n >= args.messages or time.perf_counter() - start > 3600:
                        done.set()
                    time.sleep(0.5)
                elapsed = time.perf_counter() - start
            finally:
                worker.stop()
    n_stored = n
    peak = max(samples, key=lambda s: s[1])
    print(f"stored {n_stored:,} of {args.messages:,} in {elapsed:,.0f} s ({n_stored / elapsed:,.0f} msg/s)")
    print(f"RSS of the worker: {samples[0][1]:,.0f} MB at its start, highest {peak[1]:,.0f} MB"
          f" (at {peak[0]:,.0f} s), {samples[-1][1]:,.0f} MB at the end")
    for t in (0.1, 0.25, 0.5, 0.75, 0.9):
        at = samples[min(len(samples) - 1, int(len(samples) * t))]
        print(f"  {at[0]:6,.0f} s: {at[1]:,.0f} MB")
    print(f"highest sg_ingest_queue_depth_max: {depth or 'not reported (no bound in this code)'}")


if __name__ == "__main__":
    main()
