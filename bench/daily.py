"""Daily compliance: the cost of keeping it, and a kept day read against the same day on request,
on each storage path.

    .venv/bin/python -m bench.daily [--storage plain|timescale|both] [--sites 50] [--cameras 4] [--days 2]
                                    [--runs-per-day 24]

For each storage path (default: both when TimescaleDB is installed, else plain), starts a private
PostgreSQL on a free port (``timescale``: TimescaleDB preloaded, its job scheduler off) and stores
camera heartbeats every 30 s for ``sites`` x ``cameras`` cameras over ``days`` local days (COPY, as
ingest stores them). Then:

* the timeline: the supervisor's runs over those days (``runs-per-day`` runs a day; the gateway
  runs one a minute, so each of its runs has less to do), heartbeats and pieces per second;
* the rollup of the finished days (an INSERT into the table, or a refresh of the continuous
  aggregate);
* reading every site's figures for one day: kept (``compliance_daily``) against computed on
  request from the raw heartbeats (the peer), and the ratio; the numbers are checked equal;
* TimescaleDB only: the readings compressed (as the policy does after 7 days), then one more
  timeline run with nothing new (what each minute's run costs over compressed history) and the
  same day on request from the compressed readings, checked equal too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg

from bench.storage import add_storage_option, chosen_storages
from gateway.compliance.rollup import catch_up, rollup
from gateway.compliance.verdicts import Thresholds, compliance_by_site, daily_compliance
from gateway.rules.engine import Heartbeats
from gateway.store.db import Conn, connect
from gateway.store.migrate import migrate
from safeguard.devservers import PostgresServer

ZONE = "Asia/Shanghai"
FIRST = date(2026, 11, 1)
HEARTBEAT_S = 30
THRESHOLDS = Thresholds()
HEARTBEATS = Heartbeats()  # 60 s, 3 missed
T = TypeVar("T")


def store_heartbeats(conn: Conn, sites: int, cameras: int, days: int) -> int:
    start = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=ZoneInfo(ZONE)).timestamp() - 300
    beats = (days * 86_400 + 600) // HEARTBEAT_S
    for s in range(sites):
        site = f"bench-{s:04d}"
        conn.execute("INSERT INTO sites (id, cameras_required) VALUES (%s, %s)", (site, cameras))
        conn.execute("INSERT INTO agents (site, online, boot, heartbeat_s, status_at)"
                     " VALUES (%s, true, 'b', %s, now())", (site, HEARTBEAT_S))
        for c in range(cameras):
            conn.execute("INSERT INTO devices (site, id, kind) VALUES (%s, %s, 'camera')", (site, f"cam-{c}"))
    with conn.cursor().copy(
        "COPY readings (ts, received_at, site, device, kind, boot, seq, status, payload) FROM STDIN"
    ) as copy:
        for s in range(sites):
            for c in range(cameras):
                for i in range(beats):
                    arrival = start + i * HEARTBEAT_S + (s + c) % 7
                    # An outage of 20 minutes a day on one camera in three.
                    if c % 3 == 0 and 36_000 <= (arrival - start) % 86_400 < 37_200:
                        continue
                    ts = datetime.fromtimestamp(arrival - 0.05, UTC)
                    copy.write_row((ts, datetime.fromtimestamp(arrival, UTC), f"bench-{s:04d}", f"cam-{c}", "camera",
                                    "b", i, "ok", "{}"))
    conn.commit()
    row = conn.execute("SELECT count(*) AS n FROM readings").fetchone()
    return int(row["n"]) if row else 0


def _timed(what: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = what()
    return result, time.perf_counter() - started


def bench(storage: str, args: argparse.Namespace) -> bool:
    """One storage path; prints its figures; whether every check held."""
    tz = ZoneInfo(ZONE)
    day0 = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=tz)
    day = FIRST + timedelta(days=args.days - 1)
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    period = (start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC))
    timescale = storage == "timescale"
    print(f"--- {storage}: PostgreSQL{' + TimescaleDB' if timescale else ''}")
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp, \
            PostgresServer(Path(tmp) / "pg", timescale=timescale, timescale_jobs=False) as pg:
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        with connect(pg.url_for("bench")) as conn:
            migrate(conn)
            conn.commit()
            readings = store_heartbeats(conn, args.sites, args.cameras, args.days)
            print(f"heartbeats: {readings:,} from {args.sites} sites x {args.cameras} cameras over {args.days} days")

            runs = args.days * args.runs_per_day
            started, pieces = time.perf_counter(), 0
            for n in range(1, runs + 1):
                now = day0.timestamp() + n * 86_400 / args.runs_per_day + 61
                pieces += catch_up(conn, now, settle_s=60, zone=ZONE, heartbeats=HEARTBEATS).pieces
            spent = time.perf_counter() - started
            print(f"timeline: {runs} runs, {spent:.2f} s: {readings / spent:,.0f} heartbeats/s,"
                  f" {pieces / spent:,.0f} pieces/s ({pieces:,} pieces)")

            rows, spent = _timed(lambda: rollup(conn, zone=ZONE))
            how = "refresh of the continuous aggregate" if timescale else "INSERT into the table"
            print(f"rollup ({how}): {rows:,} camera-days in {spent:.2f} s")

            def on_request() -> dict[str, Any]:
                return {site: result.json() for site, result in compliance_by_site(
                    conn, *period, thresholds=THRESHOLDS, heartbeats=HEARTBEATS).items()}

            def read_kept() -> dict[str, Any]:
                kept = {}
                for site in expected:
                    result = daily_compliance(conn, site, day, day, zone=ZONE, thresholds=THRESHOLDS,
                                              heartbeats=HEARTBEATS)
                    assert result is not None
                    kept[site] = result.days[0].json()
                return kept

            expected, peer = _timed(on_request)
            kept, spent = _timed(read_kept)
            same = kept == expected
            print(f"one day, every site: kept {spent * 1000:,.0f} ms (one request per site),"
                  f" on request {peer * 1000:,.0f} ms (one query for all); ratio on-request/kept {peer / spent:.1f};"
                  f" same numbers: {same}")
            if timescale:
                conn.commit()  # compressing takes an exclusive lock on each chunk
                chunks, spent = _timed(lambda: conn.execute(
                    "SELECT count(compress_chunk(c)) AS n FROM show_chunks('readings') c").fetchone())
                conn.commit()
                conn.execute("ANALYZE readings")
                conn.commit()
                print(f"compression: {chunks['n'] if chunks else 0} chunks of readings in {spent:.2f} s")
                now = day0.timestamp() + args.days * 86_400 + 61
                _, idle = _timed(lambda: catch_up(conn, now, settle_s=60, zone=ZONE, heartbeats=HEARTBEATS))
                compressed, peer = _timed(on_request)
                same = same and compressed == expected
                print(f"over compressed readings: a timeline run with nothing new {idle * 1000:,.0f} ms;"
                      f" the day on request {peer * 1000:,.0f} ms; same numbers: {compressed == expected}")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_storage_option(parser)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--runs-per-day", type=int, default=24)
    args = parser.parse_args()
    failed = [storage for storage in chosen_storages(parser, args) if not bench(storage, args)]
    if failed:
        raise SystemExit(f"the kept figures differ from the figures on request ({', '.join(failed)})")


if __name__ == "__main__":
    main()
