"""The throwaway PostgreSQL / Mosquitto process managers in safeguard.devservers.

When the suite runs as root, PostgresServer runs the server as the ``postgres`` system
user and adds the search bit (o+x) to pytest's 0700 temp directories so that user can
reach ``tmp_path`` (see the module docstring of safeguard.devservers).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from safeguard import devservers
from safeguard.devservers import MosquittoServer, PostgresServer, ServerNotFound

pytestmark = pytest.mark.integration


def _assert_process_group_gone(pid: int) -> None:
    """The server leader and every process it spawned (same process group) have exited."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_starts_accepts_connections_and_stops_cleanly(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", fast=True)
    server.start()
    try:
        assert server.port is not None
        assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        assert server.url_for("safeguard") == f"postgresql://postgres@127.0.0.1:{server.port}/safeguard"
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
            assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        pid = server.pid
        assert pid is not None
    finally:
        server.stop()
    _assert_process_group_gone(pid)
    assert not server.running
    server.stop()  # idempotent


def test_postgres_reuses_existing_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with PostgresServer(data_dir, fast=True) as first, psycopg.connect(first.url) as conn:
        conn.execute("CREATE TABLE marker (note text)")
        conn.execute("INSERT INTO marker VALUES ('kept')")
        conn.commit()
    pg_version_mtime = (data_dir / "PG_VERSION").stat().st_mtime_ns

    second = PostgresServer(data_dir)
    with second, psycopg.connect(second.url) as conn:
        assert conn.execute("SELECT note FROM marker").fetchone() == ("kept",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)  # durable unless fast=True
    assert (data_dir / "PG_VERSION").stat().st_mtime_ns == pg_version_mtime  # no second initdb
    assert "database system is shut down" in (data_dir / "server.log").read_text()


def test_postgres_restart_keeps_port(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", fast=True)
    with server:
        port = server.port
    with server, psycopg.connect(server.url) as conn:
        assert server.port == port
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.timescale_only
def test_postgres_with_timescale_preloads_it_and_can_keep_its_jobs_off(tmp_path: Path, storage: str) -> None:
    """(``storage``: this is the TimescaleDB half, skipped where it is not installed.)"""
    assert devservers.timescaledb_available()
    assert not devservers.timescaledb_available(tmp_path / "no-such-bin")
    for jobs, workers in ((True, "16"), (False, "0")):
        with PostgresServer(tmp_path / f"pg-{jobs}", fast=True, timescale=True, timescale_jobs=jobs) as server, \
                psycopg.connect(server.url, autocommit=True) as conn:
            assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("timescaledb",)
            assert conn.execute("SHOW timescaledb.telemetry_level").fetchone() == ("off",)
            assert conn.execute("SHOW timescaledb.max_background_workers").fetchone() == (workers,)
            conn.execute("CREATE EXTENSION timescaledb")
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()


# --------------------------------------------------------------------------- Mosquitto


class _Client:
    """A paho client on a background loop, with received messages in a queue."""

    def __init__(self, port: int, client_id: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), "MQTT client did not connect"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if not reason_code.is_failure:
            self.connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, props: Any) -> None:
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _roundtrip(port: int, topic: str, payload: bytes) -> mqtt.MQTTMessage:
    sub = _Client(port, "devservers-sub")
    pub = _Client(port, "devservers-pub")
    try:
        sub.client.subscribe(topic, qos=1)
        assert sub.subscribed.wait(10), "SUBACK not received"
        info = pub.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
        return sub.messages.get(timeout=10)
    finally:
        pub.close()
        sub.close()


def test_mosquitto_publish_and_receive_qos1(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path / "mqtt") as broker:
        assert broker.port is not None
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        message = _roundtrip(broker.port, "sg/test/v1/devservers", b'{"ok": true}')
        assert message.topic == "sg/test/v1/devservers"
        assert message.payload == b'{"ok": true}'
        assert message.qos == 1
        pid = broker.pid
        assert pid is not None
        config = (tmp_path / "mqtt" / "mosquitto.conf").read_text()
        assert f"listener {broker.port} 127.0.0.1" in config
        assert "max_queued_messages 100000" in config
    _assert_process_group_gone(pid)
    assert "running" in (tmp_path / "mqtt" / "mosquitto.log").read_text()


def test_mosquitto_restart_and_kill_keep_the_same_port(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path / "mqtt")
    broker.start()
    try:
        port = broker.port
        assert port is not None
        first_pid = broker.pid
        broker.restart()
        assert broker.port == port
        assert broker.pid != first_pid
        assert _roundtrip(port, "sg/test/after-restart", b"1").payload == b"1"

        killed_pid = broker.pid
        assert killed_pid is not None
        broker.kill()  # simulated crash
        _assert_process_group_gone(killed_pid)
        assert not broker.running
        broker.restart()
        assert broker.port == port
        assert _roundtrip(port, "sg/test/after-crash", b"2").payload == b"2"
    finally:
        broker.stop()
    broker.stop()  # idempotent


def test_missing_mosquitto_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setattr(devservers, "_MOSQUITTO_CANDIDATES", ())
    with pytest.raises(ServerNotFound, match="apt-get install mosquitto"):
        devservers.find_mosquitto()


# --------------------------------------------------------------------------- stopping


def _group_leader(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True)


def test_stopping_a_leader_that_already_exited_still_kills_what_it_left_in_its_group() -> None:
    # The leader exits at once and leaves a child in its group: unreaped, the group is still ours.
    leader = _group_leader("sleep 60 & echo $! > /dev/null; exit 0")
    devservers._exited_unreaped(leader.pid, timeout=10)
    devservers._terminate(leader, signal.SIGTERM, grace=5, name="test")
    assert leader.returncode == 0
    deadline = time.monotonic() + 10  # the killed child is reaped by whoever inherited it: not at once
    while time.monotonic() < deadline and _group_exists(leader.pid):
        time.sleep(0.05)
    _assert_process_group_gone(leader.pid)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stopping_a_server_reaped_earlier_signals_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # Once reaped, its pid is free: a PostgreSQL backend (a session leader of its own) can take it
    # over on a machine with a small pid_max, and a late killpg would kill that backend (CI, stop 20).
    leader = _group_leader("exit 3")
    leader.wait(timeout=10)
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    devservers._terminate(leader, signal.SIGTERM, grace=5, name="test")
    assert sent == []
