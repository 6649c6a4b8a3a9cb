"""SSE under load: many streams, many resuming at once; delivery latency and completeness.

    .venv/bin/python -m bench.sse [--streams 1000] [--resuming 200] [--changes 200] [--rate 50]

Starts a private PostgreSQL and Mosquitto on free ports and ``safeguard api`` as a child
process (default settings), and runs every client in this process (asyncio). Opens
``--streams`` SSE streams; then commits ``--changes`` alert changes at ``--rate`` per second;
halfway, ``--resuming`` more streams connect at once with ``Last-Event-ID`` (the change before
the first one), so their replay overlaps live changes. Prints, over every (stream, change):
delivery latency from commit to receipt (p50 / p99 / max), and completeness: streams that got
every change they should exactly once and in order, duplicates, gaps.

The streaming client (:class:`SseStream`, raw asyncio sockets: a thousand of them in one
process) is also used by tests/integration/test_sse_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
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
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.store import alerts as alert_store
from gateway.store.db import Conn, connect
from gateway.store.migrate import migrate
from safeguard.devservers import MosquittoServer, PostgresServer, free_port

TOKEN = "bench-sse-admin-token-0123456789abcdef"


@dataclass
class Event:
    event: str | None
    id: int | None
    raw: str  # the data line; parsed on demand (a thousand streams in one process: keep it cheap)
    received: float  # time.time() at receipt

    @property
    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed


@dataclass
class SseStream:
    """One ``GET /api/v1/alerts/stream`` over a raw socket (HTTP/1.1, chunked)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    _buffer: bytes = b""
    _body_done: bool = False
    started: bool = False  # the server sent ``retry:``: it has registered this stream

    @classmethod
    async def open(
        cls, host: str, port: int, token: str, *, last_event_id: int | None = None, rcvbuf: int | None = None,
    ) -> SseStream:
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:  # a small receive buffer: a client that stops reading fills it fast
            import socket  # noqa: PLC0415 - only here

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf * 4)
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        writer.write(
            f"GET /api/v1/alerts/stream HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Accept: text/event-stream\r\n{resume}\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return cls(reader, writer, status)

    async def _chunk(self) -> bool:
        """Read one chunk of the body into the buffer; False at the end of the body or connection."""
        if self._body_done:
            return False
        try:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            data = await self.reader.readexactly(size + 2)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            self._body_done = True
            return False
        if size == 0:
            self._body_done = True
            return False
        self._buffer += data[:-2]
        return True

    async def next(self) -> Event | None:
        """The next event (comments and ``retry:`` skipped); None when the stream ended."""
        while True:
            while b"\n\n" not in self._buffer:
                if not await self._chunk():
                    return None
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.decode().split("\n"):
                if line.startswith("retry:"):
                    self.started = True
                name, sep, value = line.partition(":")
                if sep and name in ("event", "id", "data"):
                    fields[name] = value.removeprefix(" ")
            if "data" in fields:
                return Event(fields.get("event"), int(fields["id"]) if "id" in fields else None,
                             fields["data"], time.time())

    async def wait_started(self) -> None:
        while not self.started:
            while b"\n\n" not in self._buffer:
                if not await self._chunk():
                    raise ConnectionError("the stream ended before it started")
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            if block.startswith(b"retry:"):
                self.started = True
            else:  # an event before "retry:" cannot happen: keep it anyway
                self._buffer = block + b"\n\n" + self._buffer
                return

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- producing changes


def make_alert(conn: Conn, site: str, *, detail: dict[str, Any] | None = None) -> int:
    """An open alert to hang changes on (no rule involved)."""
    row = conn.execute(
        "INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at, detail)"
        " VALUES (%s, 'smoke-bench', 'detector_fault', 'minor', 'open', now(), now(), %s) RETURNING id",
        (site, json.dumps(detail or {})),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row["id"])


def commit_change(conn: Conn, alert_id: int) -> tuple[int, float]:
    """One more alert change (a repeat), in its own transaction: (change id, commit time)."""
    row = conn.execute(
        f"UPDATE alerts SET count = count + 1, updated_at = now() WHERE id = %s RETURNING {alert_store.COLUMNS}",
        (alert_id,),
    ).fetchone()
    assert row is not None
    recorded = alert_store.record_history(conn, row, "repeated", datetime.now(UTC), alert_store.SYSTEM, None)
    conn.commit()
    return recorded.change_id, time.time()


# --------------------------------------------------------------------------- the bench


@dataclass
class Reader:
    stream: SseStream
    expected_after: int  # changes with a larger id are this stream's to get
    since: float = 0.0  # when it connected: latency counts changes committed from then on (not replays)
    events: list[Event] = field(default_factory=list)

    async def run(self) -> None:
        while (event := await self.stream.next()) is not None:
            self.events.append(event)


def verdict(readers: list[Reader], committed: dict[int, float]) -> dict[str, Any]:
    latencies: list[float] = []
    complete = duplicates = gaps = 0
    for r in readers:
        ids = [e.id for e in r.events if e.id is not None]
        want = sorted(i for i in committed if i > r.expected_after)
        duplicates += len(ids) - len(set(ids))
        gaps += len(set(want) - set(ids))
        complete += ids == want
        latencies += [e.received - committed[e.id] for e in r.events
                      if e.id is not None and e.id in committed and committed[e.id] >= r.since]
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"streams": len(readers), "complete": complete, "duplicates": duplicates, "gaps": gaps,
            "deliveries": len(latencies), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


async def open_retrying(host: str, port: int, token: str, *, last_event_id: int | None = None) -> SseStream:
    """Open a stream; on 503 (the API's pool busy for longer than api_db_timeout_s) try again, as told."""
    for _ in range(20):
        stream = await SseStream.open(host, port, token, last_event_id=last_event_id)
        if stream.status != 503:
            return stream
        stream.close()
        await asyncio.sleep(1.0)
    raise ConnectionError("the API answered 503 twenty times")


async def run_load(host: str, port: int, database_url: str, site: str, *, streams: int, resuming: int,
                   changes: int, rate: float, token: str = TOKEN) -> dict[str, Any]:
    with connect(database_url) as conn:
        alert_id = make_alert(conn, site)
        base, _ = commit_change(conn, alert_id)  # resumes start after this one
        committed: dict[int, float] = {}
        live = [Reader(await open_retrying(host, port, token), base) for _ in range(streams)]
        await asyncio.gather(*(r.stream.wait_started() for r in live))
        tasks = [asyncio.create_task(r.run()) for r in live]
        resumed: list[Reader] = []
        started = time.perf_counter()
        for n in range(changes):
            change_id, at = await asyncio.to_thread(commit_change, conn, alert_id)
            committed[change_id] = at
            if n == changes // 2:  # all at once, while changes go on
                since = time.time()
                opened = await asyncio.gather(*(open_retrying(host, port, token, last_event_id=base)
                                                for _ in range(resuming)))
                resumed = [Reader(s, base, since) for s in opened]
                tasks += [asyncio.create_task(r.run()) for r in resumed]
            await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
        everyone = live + resumed
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(len(r.events) < len(committed) for r in everyone):
            await asyncio.sleep(0.2)
        for r in everyone:
            r.stream.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"all": verdict(everyone, committed), "live": verdict(live, committed),
            "resumed": verdict(resumed, committed)}


def api_process(settings_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")} | settings_env
    return subprocess.Popen([sys.executable, "-m", "safeguard.cli", "api"], env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--resuming", type=int, default=200)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="changes per second")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sse-") as tmp:
        root = Path(tmp)
        with PostgresServer(root / "pg", fast=True) as pg, MosquittoServer(root / "mqtt") as broker:
            with connect(pg.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE bench")
            url = pg.url_for("bench")
            with connect(url) as conn:
                migrate(conn)
                conn.execute("INSERT INTO sites (id, name) VALUES ('site-bench', 'bench')")
                conn.commit()
            port = free_port()
            # The API in a process of its own (as deployed): this one runs the 1,000 clients.
            api = api_process({"SAFEGUARD_MQTT_URL": broker.url, "SAFEGUARD_DATABASE_URL": url,
                               "SAFEGUARD_API_PORT": str(port), "SAFEGUARD_BOOTSTRAP_TOKEN": TOKEN,
                               "SAFEGUARD_MQTT_CLIENT_ID": f"bench-{uuid.uuid4().hex[:6]}"})
            try:
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                            break
                    time.sleep(0.1)
                result = asyncio.run(run_load("127.0.0.1", port, url, "site-bench", streams=args.streams,
                                              resuming=args.resuming, changes=args.changes, rate=args.rate))
            finally:
                api.send_signal(signal.SIGTERM)
                api.wait(30)
    print(f"streams {args.streams} live + {args.resuming} resuming at once with Last-Event-ID;"
          f" {args.changes} changes at {args.rate:g}/s", file=sys.stderr)
    for name, v in result.items():
        print(f"{name:8} streams {v['streams']:5}  complete {v['complete']:5}  duplicates {v['duplicates']}"
              f"  gaps {v['gaps']}  deliveries {v['deliveries']}  latency p50 {v['p50_ms']:.1f} ms"
              f"  p99 {v['p99_ms']:.1f} ms  max {v['max_ms']:.1f} ms")
    return 0 if result["all"]["complete"] == result["all"]["streams"] else 1


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
