"""Test helpers: an MQTT agent that speaks the contract, an API client, readers of the live alert
push (SSE stream and MQTT relay), a database failover, and bounded waits."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import psycopg
from psycopg.types.json import Jsonb

from gateway.auth import Role, create_token
from gateway.store.db import Conn, connect, from_epoch
from protocol import ALERTS_FILTER, Alert, MessageType, device_topic, status_topic
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client

if TYPE_CHECKING:
    from gateway.runtime import Gateway

ADMIN_TOKEN = "test-admin-token-0123456789"
T = TypeVar("T")


def child_pids(pid: int) -> list[int]:
    """The pids of ``pid``'s children (Linux ``/proc``); none once it is gone."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(c) for c in path.read_text(encoding="ascii").split()]
    except FileNotFoundError:
        return []


def wait_for(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``.

    A bounded wait for an eventual state, not a speed check: the timeout is generous on purpose.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Agent:
    """A minimal edge agent for tests: birth with Last Will, readings with boot and seq."""

    def __init__(self, url: str, site: str, *, heartbeat_s: int = 60, version: MqttVersion = MqttVersion.V5) -> None:
        self.site = site
        self.boot = uuid.uuid4().hex[:12]
        self.heartbeat_s = heartbeat_s
        self.seq: dict[str, int] = {}
        endpoint = MqttEndpoint.parse(url)
        self.client = new_client(endpoint, f"agent-{site}-{self.boot}", version)
        will = {"online": False, "boot": self.boot}
        self.client.will_set(status_topic(site), json.dumps(will), qos=1, retain=True)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.connect(endpoint.host, endpoint.port, keepalive=2)
        self.client.loop_start()
        assert self._connected.wait(10), "agent could not connect"

    def publish_raw(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish refused: rc={info.rc}"
        info.wait_for_publish(10)

    def birth(self, devices: list[dict[str, Any]] | None = None) -> None:
        status = {"online": True, "ts": time.time(), "boot": self.boot, "agent_version": "test",
                  "heartbeat_s": self.heartbeat_s, "devices": devices or []}
        self.publish_raw(status_topic(self.site), json.dumps(status), retain=True)

    def send(self, device: str, message_type: MessageType, ts: float | None = None, **fields: Any) -> int:
        seq = self.seq.get(device, -1) + 1
        self.seq[device] = seq
        payload = {"ts": time.time() if ts is None else ts, "boot": self.boot, "seq": seq, **fields}
        self.publish_raw(device_topic(self.site, device, message_type), json.dumps(payload))
        return seq

    def heartbeat(self, device: str, stream: str = "ok", **fields: Any) -> int:
        return self.send(device, MessageType.HEARTBEAT, stream=stream, fps=10.0, last_frame_ts=time.time(), **fields)

    def smoke(self, device: str, state: str = "normal", battery_pct: float | None = 90.0, **fields: Any) -> int:
        return self.send(
            device, MessageType.SMOKE, state=state, battery_pct=battery_pct, obscuration_pct=None, **fields
        )

    def exit(self, device: str, state: str = "clear", ratio: float = 0.0, **fields: Any) -> int:
        since = time.time() if state == "blocked" else None
        return self.send(device, MessageType.EXIT, state=state, blocked_ratio=ratio, blocked_since=since, **fields)

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT, so the broker fires the Last Will."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Api:
    def __init__(self, base_url: str, token: str = ADMIN_TOKEN) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def put_site(self, site: str, **fields: Any) -> dict[str, Any]:
        response = self.http.put(f"/api/v1/sites/{site}", json=fields)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/alerts", params=params)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def get_alert(self, alert_id: int) -> dict[str, Any]:
        """``GET /api/v1/alerts/{alert_id}`` (the alert with its history), which must answer 200."""
        response = self.http.get(f"/api/v1/alerts/{alert_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def alert(self, **match: Any) -> dict[str, Any] | None:
        """The newest alert whose fields equal ``match``, or None."""
        for alert in self.alerts(limit=1000):
            if all(alert.get(k) == v for k, v in match.items()):
                return alert
        return None

    def dead_letters(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/dead-letters", params={"limit": 1000})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


def wait_state(api: Api, alert_id: int, state: str) -> dict[str, Any]:
    """Wait until alert ``alert_id`` is in ``state``; return it as ``GET /api/v1/alerts/{id}`` shows it."""

    def probe() -> dict[str, Any] | None:
        alert = api.get_alert(alert_id)
        return alert if alert["state"] == state else None

    return wait_for(probe, what=f"alert {alert_id} to become {state}")


class SseReader:
    """Reads ``GET /api/v1/alerts/stream`` in a thread; parsed events land in a queue.

    ``token`` None sends no Authorization header (for ``?access_token=`` in ``params``);
    ``last_event_id`` sends ``Last-Event-ID``; ``headers`` adds any other request headers.
    The constructor returns once the server has registered the client, and fails unless it answered 200.
    """

    def __init__(
        self, base_url: str, token: str | None = ADMIN_TOKEN, *, last_event_id: int | None = None,
        params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        request_headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request_headers.update(headers or {})
        if last_event_id is not None:
            request_headers["Last-Event-ID"] = str(last_event_id)
        self._client = httpx.Client(base_url=base_url, headers=request_headers, timeout=httpx.Timeout(10, read=60))
        self._params = params or {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status_code: int | None = None
        self.content_type: str | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), f"SSE stream did not start: {self.error!r}"
        assert self.status_code == 200, f"SSE stream answered {self.status_code} ({self.error!r})"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", "/api/v1/alerts/stream", params=self._params) as response:
                self.status_code = response.status_code
                self.content_type = response.headers.get("content-type")
                if response.status_code != 200:
                    return
                stream = response.extensions.get("network_stream")
                if stream is not None:
                    self._sock = stream.get_extra_info("socket")
                event: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("retry:"):
                        self._ready.set()  # sent after the server registered this client
                    elif line.startswith(("event:", "id:", "data:")):
                        name, _, value = line.partition(":")
                        event[name] = value.removeprefix(" ")
                    elif line == "" and event:
                        # No id: a provisional alert (docs/api.md), not a stored change.
                        self.events.put({"event": event.get("event"),
                                         "id": int(event["id"]) if "id" in event else None,
                                         "data": json.loads(event["data"])})
                        event = {}
        except BaseException as exc:  # noqa: BLE001 - reported to the test through ``error``
            if not self._stop.is_set():
                self.error = exc
        finally:
            self._ready.set()

    def next(self, timeout: float = 20.0) -> dict[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SSE event within {timeout}s (reader error: {self.error!r})") from None

    def take(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        return [self.next(timeout) for _ in range(n)]

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._client.close()


class AlertSubscriber:
    """A paho client subscribed to ``sg/v1/alerts/#``, collecting (topic, payload): ``next`` gives the
    alert JSON as a dict, ``next_alert`` parses it as the contract's ``protocol.Alert``."""

    def __init__(self, url: str) -> None:
        endpoint = MqttEndpoint.parse(url)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = new_client(endpoint, f"watcher-{uuid.uuid4().hex[:8]}", MqttVersion.V5)
        self.client.on_connect = lambda client, *_a: client.subscribe(ALERTS_FILTER, qos=1)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(endpoint.host, endpoint.port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription to sg/v1/alerts/# not acknowledged"

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload)))

    def _next(self, timeout: float) -> tuple[str, bytes]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message on {ALERTS_FILTER} within {timeout}s") from None

    def next(self, timeout: float = 20.0) -> tuple[str, dict[str, Any]]:
        topic, payload = self._next(timeout)
        return topic, json.loads(payload)

    def next_alert(self, timeout: float = 20.0) -> tuple[str, Alert]:
        topic, payload = self._next(timeout)
        return topic, Alert.model_validate_json(payload)

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything received so far and not yet taken, without waiting."""
        items = []
        while not self.messages.empty():
            topic, payload = self.messages.get_nowait()
            items.append((topic, json.loads(payload)))
        return items

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def terminate_backends(database_url: str) -> int:
    """Drop every other connection to the test database (as a database failover or restart would).

    Returns how many connections were dropped.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def safeguard(*args: str, database_url: str | None = None, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    """Run the ``safeguard`` command line in a process of its own, with no ``SAFEGUARD_*`` setting but ours."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")} | (env or {})
    if database_url:
        environ["SAFEGUARD_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "safeguard.cli", *args], capture_output=True, text=True, env=environ, timeout=60,
        check=False,
    )


def compressed_chunks(database_url: str, table: str = "readings") -> tuple[int, int]:
    """(compressed, all) chunks of the hypertable ``table``."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = %s", (table,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_timescale_jobs(database_url: str, proc_name: str) -> int:
    """Run now every TimescaleDB job of ``proc_name`` (``policy_retention``, ``policy_compression``), as its
    scheduler would (the test servers run none by themselves). Returns how many ran."""
    with psycopg.connect(database_url, autocommit=True) as conn:  # run_job cannot run in a transaction
        jobs = [row[0] for row in conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s ORDER BY job_id", (proc_name,))]
        for job in jobs:
            conn.execute("CALL run_job(%s)", (job,))
    return len(jobs)


def role_tokens(database_url: str, institution_site: str) -> dict[str, str]:
    """One token per role (the institution's for ``institution_site``), keyed by role name."""
    with connect(database_url) as conn:
        return {
            "fire_brigade": create_token(conn, role=Role.FIRE_BRIGADE, name="brigade-7"),
            "inspector": create_token(conn, role=Role.INSPECTOR, name="inspector-li"),
            "institution": create_token(conn, role=Role.INSTITUTION, name="school-a", site=institution_site),
            "admin": create_token(conn, role=Role.ADMIN, name="ops"),
        }


def insert_heartbeats(
    conn: Conn, site: str, device: str, arrivals: list[float], *, delay: float, stream: str = "ok"
) -> None:
    """Camera heartbeats stored as ingest stores them: arriving at ``arrivals`` (epoch seconds), each
    sent ``delay`` s earlier; ``seq`` continues after the device's readings already stored."""
    row = conn.execute(
        "SELECT count(*) AS n FROM readings WHERE site = %s AND device = %s", (site, device)
    ).fetchone()
    first = row["n"] if row else 0
    rows = []
    for i, arrival in enumerate(arrivals):
        ts = arrival - delay
        payload = {"ts": ts, "boot": "b1", "seq": first + i, "stream": stream, "fps": 10.0, "last_frame_ts": ts}
        rows.append((from_epoch(ts), from_epoch(arrival), site, device, "camera", "b1", first + i, stream,
                     Jsonb(payload)))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (ts, received_at, site, device, kind, boot, seq, status, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


@dataclass
class TwoSites:
    """Sites A and B (A in Xihu, B in Binjiang), an agent each that declared the same devices,
    the admin's API and a token per role (the institution's for site A)."""

    gateway: Gateway
    admin: Api
    agent_a: Agent
    agent_b: Agent
    tokens: dict[str, str]

    def api(self, who: str) -> Api:
        return Api(self.gateway.api_url, self.tokens[who])

    def http(self, who: str) -> httpx.Client:
        return self.api(who).http


@contextlib.contextmanager
def two_sites(
    gateway: Gateway, devices: list[dict[str, Any]], *, site_a: str, site_b: str, **site_fields: Any
) -> Iterator[TwoSites]:
    admin = Api(gateway.api_url)
    admin.put_site(site_a, name="A school", city="Hangzhou", county="Xihu", **site_fields)
    admin.put_site(site_b, name="B school", city="Hangzhou", county="Binjiang", **site_fields)
    tokens = role_tokens(gateway.settings.database.url, site_a)
    agent_a = Agent(gateway.settings.mqtt.url, site_a)
    agent_b = Agent(gateway.settings.mqtt.url, site_b)
    try:
        agent_a.birth(devices)
        agent_b.birth(devices)
        yield TwoSites(gateway, admin, agent_a, agent_b, tokens)
    finally:
        for agent in (agent_a, agent_b):
            with contextlib.suppress(Exception):
                agent.close()


def scalar(database_url: str, sql: str, *params: Any) -> int:
    """The single number a query answers (a count, mostly)."""
    with connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def duplicate_readings(database_url: str) -> int:
    """Readings stored more than once: the contract's key is (site, device, boot, seq)."""
    return scalar(database_url, "SELECT count(*) FROM (SELECT 1 FROM readings"
                                " GROUP BY site, device, boot, seq HAVING count(*) > 1) AS d")
