"""One ingest batch's transaction, without MQTT: the database side of ingest, timed.

    .venv/bin/python -m bench.batch_write [--batches 60] [--batch-size 1000] [--storage plain|timescale|both]

Starts a private PostgreSQL per storage path, registers 500 sites, and runs the gateway's
``BatchProcessor`` on province-shaped batches of fresh readings (each message the next of
10,000 devices, 4 cameras, 13 smoke detectors and 3 exits a site; the first batches create the
devices), then the same batches again (all duplicates). It prints the median and p90 wall time
per batch and per message, which includes PostgreSQL's own work, and the gateway process's own
CPU per message (``time.process_time``: steadier than wall time on a shared machine). Made to
compare the exactly-once key (``reading_keys``, issue 15) before and after.
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
from gateway.ingest.batch import BatchProcessor, Inbound, Rules
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from safeguard.devservers import PostgresServer

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
            ts = now - 1 + n * 1e-6
            if device < 4:  # 4 cameras, 13 smoke detectors, 3 exits a site, as simulators.load.province_plan
                topic, payload = f"cam-{device}/heartbeat", {"ts": ts, "boot": "bench", "seq": n, "stream": "ok",
                                                             "fps": 10.0}
            elif device < 17:
                topic, payload = f"smoke-{device}/smoke", {"ts": ts, "boot": "bench", "seq": n, "state": "normal",
                                                           "battery_pct": 90.0, "obscuration_pct": 0.5}
            else:
                topic, payload = f"exit-{device}/exit", {"ts": ts, "boot": "bench", "seq": n, "state": "clear"}
            batch.append(Inbound(f"sg/v1/site-{site:04d}/{topic}", json.dumps(payload).encode(), now))
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
                times, cpu = [], []
                for batch in rounds:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    processor.process(conn, batch)
                    times.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - started_cpu)
                steady = times[len(times) // 5:]  # the first fifth creates the devices
                median, p90 = statistics.median(steady), statistics.quantiles(steady, n=10)[-1]
                cpu_median = statistics.median(cpu[len(cpu) // 5:])
                print(f"{storage}, {label}: {median * 1e3:,.1f} ms per {args.batch_size}-message batch (median),"
                      f" p90 {p90 * 1e3:,.1f} ms; {median / args.batch_size * 1e6:,.0f} µs per message, of which"
                      f" {cpu_median / args.batch_size * 1e6:,.0f} µs of the gateway's CPU")


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
