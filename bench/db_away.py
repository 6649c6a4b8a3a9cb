"""The database away: how fast the API says 503, and how fast a fire alarm still reaches people.

    .venv/bin/python -m bench.db_away [--requests 20] [--alarms 5]

Starts a private PostgreSQL and Mosquitto and ``safeguard serve``'s roles in this process
(``gateway.runtime.Gateway``, default settings but the ports). Prints:

* the time ``GET /api/v1/alerts`` takes to answer 503 with PostgreSQL stopped, and frozen
  (SIGSTOP of the postmaster and every backend), over ``--requests`` requests each;
* for ``--alarms`` rounds with PostgreSQL stopped: a smoke detector goes to ``alarm``; the time
  from its publish to the provisional alert on ``sg/v1/alerts/#`` and on the SSE stream; then
  PostgreSQL is started and the time from that to the stored alert (same key) on both paths.

Uses the test helpers of tests/support.py (an agent, an MQTT watcher, an SSE reader).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.migrate import migrate
from safeguard.devservers import MosquittoServer, PostgresServer
from tests.support import ADMIN_TOKEN, Agent, AlertSubscriber, Api, SseReader, wait_for

SITE = "site-bench-away"


def _signal_all(server: PostgresServer, sig: signal.Signals) -> None:
    assert server.pid is not None
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    for pid in [server.pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    _signal_all(server, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_all(server, signal.SIGCONT)


def time_503(api: Api, n: int) -> list[float]:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        response = api.http.get("/api/v1/alerts")
        took.append(time.perf_counter() - started)
        assert response.status_code == 503, response.status_code
    return took


def line(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (f"{name:42} n {len(ms):3}  p50 {statistics.median(ms):7.0f} ms  max {ms[-1]:7.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--alarms", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-away-") as tmp:
        root = Path(tmp)
        pg = PostgresServer(root / "pg", fast=True)
        pg.start()
        try:
            with connect(pg.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            url = pg.url_for("bench")
            with connect(url) as conn:
                migrate(conn)
                conn.commit()
            with MosquittoServer(root / "mqtt") as broker:
                settings = Settings(mqtt_url=broker.url, database_url=url, api_port=0,
                                    mqtt_client_id=f"bench-{uuid.uuid4().hex[:6]}",
                                    bootstrap_token=SecretStr(ADMIN_TOKEN))
                with Gateway(settings) as gw:
                    assert gw.ingest is not None
                    gw.ingest.wait_connected(10)
                    run(gw, pg, args)
        finally:
            with contextlib.suppress(Exception):
                _signal_all(pg, signal.SIGCONT)
            pg.stop()
    return 0


def run(gw: Gateway, pg: PostgresServer, args: argparse.Namespace) -> None:  # noqa: PLR0915 - one scenario, top to bottom
    api = Api(gw.api_url)
    api.http.timeout = httpx.Timeout(120)
    api.put_site(SITE, name="bench")
    devices = [{"id": f"smoke-{i}", "kind": "smoke", "name": f"d{i}", "location": "1F"} for i in range(args.alarms)]
    agent = Agent(gw.settings.mqtt.url, SITE)
    agent.birth(devices)
    wait_for(lambda: len(api.http.get(f"/api/v1/sites/{SITE}/devices").json()["items"]) == args.alarms or None)

    with frozen(pg):
        frozen_503 = time_503(api, args.requests)
    wait_for(lambda: api.http.get("/api/v1/alerts").status_code == 200 or None, what="thawed")
    pg.stop()
    stopped_503 = time_503(api, args.requests)
    pg.start()
    wait_for(lambda: api.http.get("/api/v1/alerts").status_code == 200 or None, timeout=60, what="back")

    watcher = AlertSubscriber(gw.settings.mqtt.url)
    reader = SseReader(gw.api_url)
    to_mqtt, to_sse, stored_mqtt, stored_sse = [], [], [], []
    seen: set[int] = set()
    repeats = 0

    def next_change() -> dict[str, Any]:
        """The next MQTT alert not seen before: at-least-once, repeats dropped by change_id (docs)."""
        nonlocal repeats
        while True:
            _, message = watcher.next(timeout=120)
            change_id = message.get("change_id")
            if change_id is None or change_id not in seen:
                if change_id is not None:
                    seen.add(change_id)
                return message
            repeats += 1

    try:
        for i in range(args.alarms):
            pg.stop()
            sent = time.perf_counter()
            agent.smoke(f"smoke-{i}", "alarm")
            provisional = next_change()
            to_mqtt.append(time.perf_counter() - sent)
            assert provisional.get("provisional") is True
            event = reader.next(timeout=60)
            to_sse.append(time.perf_counter() - sent)
            assert event["data"].get("provisional") is True
            time.sleep(3)  # an outage of some seconds
            back = time.perf_counter()
            pg.start()
            stored = next_change()
            stored_mqtt.append(time.perf_counter() - back)
            stored_event = reader.next(timeout=120)
            stored_sse.append(time.perf_counter() - back)
            assert stored["key"] == provisional["key"] == stored_event["data"]["key"], (provisional, stored)
            assert "provisional" not in stored
    finally:
        reader.close()
        watcher.close()
        agent.close()
    print(line("503, PostgreSQL frozen (SIGSTOP)", frozen_503))
    print(line("503, PostgreSQL stopped", stopped_503))
    print(line("alarm -> provisional on sg/v1/alerts", to_mqtt))
    print(line("alarm -> provisional on SSE", to_sse))
    print(line("PostgreSQL started -> stored alert, MQTT", stored_mqtt))
    print(line("PostgreSQL started -> stored alert, SSE", stored_sse))
    print(f"relay repeats dropped by change_id: {repeats}")


if __name__ == "__main__":
    sys.exit(main())
