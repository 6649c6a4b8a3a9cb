"""One ingest batch's transaction, without MQTT: the database side of ingest, timed.

    .venv/bin/python -m bench.batch_write [--batches 60] [--batch-size 1000] [--storage plain|timescale|both]

Starts a private PostgreSQL per storage path, registers 500 sites, and runs the gateway's
``BatchProcessor`` on province-shaped batches of fresh camera heartbeats (each message the
next of 10,000 devices; the first batches create the devices), then the same batches again
(all duplicates). It prints the median and p90 wall time per batch and per message, which
includes PostgreSQL's own work (``bench.ingest``'s CPU figure counts the gateway's process
only). Made to compare the exactly-once key (``reading_keys``, issue 15) before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from bench.storage import add_storage_option, chosen_storages
from gateway.devservers import PostgresServer
from gateway.ingest.batch import BatchProcessor, Inbound, Rules
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites

SITES = 500
DEVICES_PER_SITE = 20


def batches(count: int, size: int) -> list[list[Inbound]]:
    now = time.time()
    out = []
    n = 0
    for _ in range(count):
        batch = []
        for _ in range(size):
            site, device = n % SITES, (n // SITES) % DEVICES_PER_SITE
            # ts a second before arrival, as a live feed (an agent's clock skew stays put: no clock rows)
            payload = {"ts": now - 1 + n * 1e-6, "boot": "bench", "seq": n, "stream": "ok", "fps": 10.0}
            batch.append(Inbound(f"sg/v1/site-{site:04d}/cam-{device}/heartbeat", json.dumps(payload).encode(), now))
            n += 1
        out.append(batch)
    return out


def run(storage: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sg-bw-") as tmp, \
            PostgresServer(Path(tmp) / "pg", fast=True, timescale=storage == "timescale", timescale_jobs=False) as pg:
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        with connect(pg.url_for("bench")) as conn:
            migrate(conn)
            upsert_sites(conn, [SiteRecord(id=f"site-{i:04d}") for i in range(SITES)])
            conn.commit()
            processor = BatchProcessor(Rules())
            feed = batches(args.batches, args.batch_size)
            for label, rounds in (("fresh", feed), ("all duplicates", feed)):
                times = []
                for batch in rounds:
                    started = time.perf_counter()
                    processor.process(conn, batch)
                    times.append(time.perf_counter() - started)
                steady = times[len(times) // 5:]  # the first fifth creates the devices
                median, p90 = statistics.median(steady), statistics.quantiles(steady, n=10)[-1]
                print(f"{storage}, {label}: {median * 1e3:,.1f} ms per {args.batch_size}-message batch (median),"
                      f" p90 {p90 * 1e3:,.1f} ms; {median / args.batch_size * 1e6:,.0f} µs per message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=1000)
    add_storage_option(parser)
    args = parser.parse_args()
    for storage in chosen_storages(parser, args):
        run(storage, args)


if __name__ == "__main__":
    main()
