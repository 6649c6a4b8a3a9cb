"""SSE with many clients (issue 15): hundreds of streams, 200 resuming at once, a client that never reads.

Against the real PostgreSQL and the gateway's API (uvicorn in this process), with the raw-socket
client of bench/sse.py (hundreds of streams in one event loop).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest

from bench.sse import SseStream, commit_change, make_alert, run_load
from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import connect
from tests.support import ADMIN_TOKEN, wait_for

pytestmark = pytest.mark.integration

SITE = "site-sse-load"
HOST = "127.0.0.1"


@pytest.fixture
def api_only(settings: Settings) -> Iterator[Gateway]:
    """The API alone (no ingest, no supervisor), each stream's queue bounded at 20 changes."""
    with connect(settings.database.url) as conn:
        conn.execute("INSERT INTO sites (id, name) VALUES (%s, 'SSE load')", (SITE,))
        conn.commit()
    with Gateway(settings.updated(sse_client_queue=20), ingest=False, supervise=False) as gw:
        yield gw


def metric(gateway: Gateway, name: str) -> float:
    text = httpx.get(f"{gateway.api_url}/metrics", timeout=10).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_hundreds_of_streams_and_200_resuming_at_once_get_every_change_once_in_order(api_only: Gateway) -> None:
    """300 live streams, then 200 more at once with Last-Event-ID while changes go on.

    Before issue 15 each resume opened a database connection of its own: past max_connections
    (100) they failed with "too many clients" and their streams ended without the changes missed.
    """
    assert api_only.api is not None
    result = asyncio.run(run_load(HOST, api_only.api.port, api_only.settings.database.url, SITE,
                                  streams=300, resuming=200, changes=30, rate=200, token=ADMIN_TOKEN))
    for group in ("live", "resumed"):
        verdict = result[group]
        assert verdict["duplicates"] == 0, (group, verdict)
        assert verdict["gaps"] == 0, (group, verdict)
        assert verdict["complete"] == verdict["streams"], (group, verdict)
    assert result["resumed"]["streams"] == 200


def test_a_client_that_does_not_read_is_cut_off_and_resumes_with_last_event_id(api_only: Gateway) -> None:
    assert api_only.api is not None
    port, url = api_only.api.port, api_only.settings.database.url
    dropped_before = metric(api_only, "sg_sse_dropped_total")

    async def scenario() -> None:
        stuck = await SseStream.open(HOST, port, ADMIN_TOKEN, rcvbuf=4096)  # reads nothing from here on
        await stuck.wait_started()
        reading = await SseStream.open(HOST, port, ADMIN_TOKEN)
        await reading.wait_started()
        got_by_reader: list[int] = []

        async def read_all() -> None:
            while (event := await reading.next()) is not None:
                assert event.id is not None
                got_by_reader.append(event.id)

        reader_task = asyncio.create_task(read_all())
        ids: list[int] = []
        with connect(url) as conn:
            # Big changes (32 KiB each): the socket buffers between the server and a client that does
            # not read fill after a few hundred; then its 20-change queue, then its stream is ended.
            alert_id = make_alert(conn, SITE, detail={"pad": "x" * 32_768})
            for _ in range(1500):
                ids.append((await asyncio.to_thread(commit_change, conn, alert_id))[0])
                if len(ids) % 50 == 0 and await asyncio.to_thread(metric, api_only, "sg_sse_dropped_total") \
                        > dropped_before:
                    break
        assert await asyncio.to_thread(metric, api_only, "sg_sse_dropped_total") == dropped_before + 1
        # The server keeps nothing for it any more: only the reading stream is left.
        await asyncio.to_thread(wait_for, lambda: metric(api_only, "sg_sse_streams") == 1 or None, 20.0, "stream gone")

        # What was already in the socket buffers arrives, then the end of the stream.
        received: list[int] = []
        while (event := await asyncio.wait_for(stuck.next(), 30)) is not None:
            assert event.id is not None
            received.append(event.id)
        stuck.close()
        assert len(received) < len(ids)
        assert received == ids[: len(received)]  # in order, no gap, no repeat

        # It resumes where it was cut off and gets the rest, each once.
        resumed = await SseStream.open(HOST, port, ADMIN_TOKEN, last_event_id=received[-1] if received else 0)
        rest: list[int] = []
        while len(rest) < len(ids) - len(received):
            event = await asyncio.wait_for(resumed.next(), 30)
            assert event is not None
            assert event.id is not None
            rest.append(event.id)
        resumed.close()
        assert received + rest == ids

        await asyncio.to_thread(wait_for, lambda: len(got_by_reader) >= len(ids) or None, 30.0, "reader caught up")
        assert got_by_reader == ids  # the reading client was not held back by the stuck one
        reading.close()
        reader_task.cancel()

    asyncio.run(scenario())
