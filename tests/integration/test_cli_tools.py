"""The command line's tools tell the truth: they find the broker's MQTT version and the running
demo by themselves, a broker that refuses is an error, and a mistake gets one line, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.db import connect
from gateway.store.sites import SiteRecord, upsert_sites
from protocol.mqtt import BrokerUnavailable, BrokerUnreachable, MqttEndpoint, MqttVersion, negotiate_version
from safeguard import demo_settings
from safeguard.demo import EmbeddedBroker
from safeguard.devservers import MosquittoServer, free_port
from tests.support import safeguard

pytestmark = pytest.mark.integration


@pytest.fixture
def mqtt311_broker() -> Iterator[EmbeddedBroker]:
    """amqtt, as in the demo: it speaks MQTT 3.1.1 only and drops a version-5 CONNECT."""
    broker = EmbeddedBroker(free_port())
    broker.start()
    yield broker
    broker.stop()


def _closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: a connection there is refused
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_negotiate_version_finds_each_brokers_version(tmp_path: Path, mqtt311_broker: EmbeddedBroker) -> None:
    assert negotiate_version(MqttEndpoint.parse(mqtt311_broker.url)) is MqttVersion.V311
    with MosquittoServer(tmp_path / "broker") as mosquitto:
        assert negotiate_version(MqttEndpoint.parse(mosquitto.url)) is MqttVersion.V5
    with pytest.raises(BrokerUnreachable, match="cannot reach"):
        negotiate_version(MqttEndpoint.parse(f"mqtt://127.0.0.1:{_closed_port()}"))


def test_simulate_against_a_311_broker_delivers_without_being_told(mqtt311_broker: EmbeddedBroker) -> None:
    result = safeguard("simulate", "--sites", "2", "--duration", "2", "--heartbeat-s", "1",
                       "--mqtt-url", mqtt311_broker.url)
    assert result.returncode == 0, result.stderr
    assert "speaks MQTT 3.1.1" in result.stderr
    published = int(result.stderr.split("published ")[1].split()[0])
    assert published > 0
    assert "0 not delivered" in result.stderr


def test_simulate_with_the_wrong_version_is_an_error_not_a_success(mqtt311_broker: EmbeddedBroker) -> None:
    result = safeguard("simulate", "--sites", "2", "--duration", "2", "--mqtt-version", "5",
                       "--mqtt-url", mqtt311_broker.url)
    assert result.returncode == 1, result.stderr
    assert "no site could connect" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [("record", "out.jsonl", "--duration", "1"), ("replay", "in.jsonl"),
                                     ("simulate", "--sites", "1", "--duration", "1")])
def test_tools_say_when_there_is_no_broker(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "in.jsonl").write_text('{"format": "safeguard-record/1", "started": 0}\n', encoding="utf-8")
    args = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in command]
    result = safeguard(*args, "--mqtt-url", f"mqtt://127.0.0.1:{_closed_port()}", "--mqtt-version", "5")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("safeguard: error: cannot reach the MQTT broker")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.jsonl").exists()  # no empty recording that looks like a quiet broker


def test_record_with_a_refusing_broker_writes_nothing(tmp_path: Path, mqtt311_broker: EmbeddedBroker) -> None:
    out = tmp_path / "out.jsonl"
    result = safeguard("record", str(out), "--duration", "1", "--mqtt-version", "5", "--mqtt-url", mqtt311_broker.url)
    assert result.returncode == 1, result.stderr
    assert any(why in result.stderr for why in ("refused the connection", "closed the connection before answering"))
    assert not out.exists()


def _site(conn_url: str) -> None:
    with connect(conn_url) as conn:
        upsert_sites(conn, [SiteRecord(id="hz-1", name="西湖", city="杭州市", county="西湖区", category="art")])
        conn.commit()


def test_tools_find_a_running_demo(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a demo's settings published in the working folder, `inspect` needs nothing typed."""
    _site(database_url)
    data_dir = tmp_path / demo_settings.DEFAULT_DATA_DIR
    data_dir.mkdir(parents=True)
    demo_settings.publish(data_dir, {"database_url": database_url, "mqtt_version": "3.1.1"})
    monkeypatch.chdir(tmp_path)
    (data_dir / "demo.pid").write_text(f"{os.getpid()}\n", encoding="utf-8")  # "running": the test process
    result = _in(tmp_path, "inspect", "compliance", "--from", "2026-11-01", "--to", "2026-11-30")
    assert result.returncode == 0, result.stderr
    assert "using the running demo's settings" in result.stderr
    assert "hz-1" in result.stdout
    assert "from 2026-11-01T00:00:00+08:00 to 2026-12-01T00:00:00+08:00" in result.stderr

    demo_settings.withdraw(data_dir)
    assert demo_settings.running(data_dir) is None
    stopped = _in(tmp_path, "inspect", "compliance")
    assert stopped.returncode != 0
    assert "using the running demo's settings" not in stopped.stderr


def test_a_dead_demo_is_not_found(tmp_path: Path) -> None:
    demo_settings.publish(tmp_path, {"database_url": "postgresql://nowhere/x"})
    (tmp_path / "demo.pid").write_text(f"{_dead_pid()}\n", encoding="utf-8")
    assert demo_settings.running(tmp_path) is None


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])  # a process that has certainly exited
    child.wait()
    return child.pid


def _in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``safeguard`` run in ``folder`` (where a demo's settings may be published), no SAFEGUARD_* set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run([sys.executable, "-m", "safeguard.cli", *args], cwd=folder, capture_output=True, text=True,
                          env=environ, timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inspect", "compliance", "--city", "不存在市"), "no registered site is in city '不存在市'"),
        (("inspect", "ledger", "--county", "无此区", "--out", "x.csv"), "no registered site is in county '无此区'"),
        (("inspect", "ledger", "--from", "2026-13-01", "--out", "x.csv"), "--from '2026-13-01': give a day"),
        (("inspect", "compliance", "--from", "2026-11-01T08:00:00"), "give the time's zone"),
        (("inspect", "compliance", "--from", "2026-12", "--to", "2026-11"), "must be before --to"),
    ],
)
def test_inspect_mistakes_are_one_line(tmp_path: Path, database_url: str, args: tuple[str, ...],
                                       message: str) -> None:
    _site(database_url)
    result = safeguard(*[str(tmp_path / a) if a.endswith(".csv") else a for a in args], database_url=database_url)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_inspect_ledger_defaults_to_this_month(tmp_path: Path, database_url: str) -> None:
    _site(database_url)
    out = tmp_path / "ledger.xlsx"
    result = safeguard("inspect", "ledger", "--out", str(out), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_broker_unavailable_is_a_connection_error() -> None:
    assert issubclass(BrokerUnreachable, BrokerUnavailable)
    assert issubclass(BrokerUnavailable, ConnectionError)
