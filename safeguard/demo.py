"""``safeguard demo``: broker, database, gateway, simulated sites and console on one machine.

The broker is amqtt in-process (MQTT 3.1.1, enough for a demo; the ``demo`` extra, which
``./run demo`` and ``./run test`` install, so the production image goes without); PostgreSQL runs
from the machine's own server binaries in a data folder of the project's (the same
code path the test suite uses, so what the demo runs is what CI tests; the pip
wheels that embed PostgreSQL ship old or unmaintained builds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg

from gateway.auth import Role, create_token
from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.shutdown import stop_on_signals
from gateway.store.db import connect
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from protocol.mqtt import MqttVersion
from safeguard import demo_settings
from safeguard.devservers import PostgresServer, free_port
from simulators.scenario import DEMO_SCENARIO, Scenario, ScenarioRunner, load_scenario

log = logging.getLogger(__name__)

DEMO_DB = "safeguard"


def port_or_free(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when nothing listens there, else any free port (the demo never fights for 1883/8000)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, preferred))
        except OSError:
            return free_port(host)
    return preferred


AMQTT_MISSING = ("the demo's MQTT broker (amqtt) is not installed: pip install -e '.[demo]'"
                 " (./run demo installs it)")


def _amqtt_broker() -> Any:
    """amqtt's Broker class, or a one-line error saying how to install it (``safeguard`` main says it)."""
    try:
        from amqtt.broker import Broker  # noqa: PLC0415 - the demo extra's, not a core dependency
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("amqtt"):
            raise  # amqtt is there but one of its own dependencies is not: that error says which
        raise ModuleNotFoundError(AMQTT_MISSING, name="amqtt") from exc
    return Broker


class EmbeddedBroker:
    """amqtt on its own asyncio loop in a thread."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._broker: Any = None

    def start(self) -> None:
        broker_class = _amqtt_broker()
        self._thread.start()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def boot() -> None:
            self._broker = broker_class(config)
            await self._broker.start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(timeout=15)

    def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def _prepare_database(pg: PostgresServer) -> str:
    with psycopg.connect(pg.url, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DB,)).fetchone() is None:
            admin.execute(f"CREATE DATABASE {DEMO_DB}")
    return pg.url_for(DEMO_DB)


def _register(database_url: str, scenario: Scenario) -> str:
    with connect(database_url) as conn:
        migrate(conn)
        conn.commit()
        upsert_sites(conn, [SiteRecord(id=s.id, name=s.name, city=s.city, county=s.county, category=s.category,
                                       address=s.address, cameras_required=len(s.cameras)) for s in scenario.sites])
        conn.commit()
        return create_token(conn, role=Role.ADMIN, name="demo admin")


class DemoFeed:
    """The simulators' scenario runner on a thread of its own, for as long as the demo runs."""

    def __init__(self, scenario: Scenario, mqtt_url: str) -> None:
        self._runner = ScenarioRunner(scenario, mqtt_url, MqttVersion.V311)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._runner.run, kwargs={"stop": self._stop}, name="demo-feed",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _Withdraw:
    """Stopped with the demo's other parts: the other commands must not find a demo that is gone."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    def stop(self) -> None:
        demo_settings.withdraw(self._data_dir)


def run_demo(data_dir: Path, *, api_port: int = 8000, mqtt_port: int = 1883, feed: bool = True) -> int:
    _amqtt_broker()  # a missing extra is said before PostgreSQL is started
    stop = stop_on_signals()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = PostgresServer(data_dir / "postgres")
    broker = EmbeddedBroker(port_or_free(mqtt_port))
    started: list[Any] = []
    try:
        log.info("starting PostgreSQL in %s", data_dir / "postgres")
        pg.start()
        started.append(pg)
        database_url = _prepare_database(pg)
        scenario = load_scenario(DEMO_SCENARIO)
        token = _register(database_url, scenario)
        broker.start()
        started.append(broker)
        settings = Settings(
            mqtt_url=broker.url, mqtt_version=MqttVersion.V311, database_url=database_url,
            api_host="127.0.0.1", api_port=port_or_free(api_port), sweep_interval_s=1.0,
        )
        gateway = Gateway(settings)
        gateway.start()
        started.append(gateway)
        published = demo_settings.publish(data_dir, {"mqtt": {"url": broker.url, "version": str(MqttVersion.V311)},
                                                     "database": {"url": database_url}})
        started.append(_Withdraw(data_dir))
        if feed:
            demo_feed = DemoFeed(scenario, broker.url)
            demo_feed.start()
            started.append(demo_feed)
        url = gateway.api_url
        sys.stderr.write(
            "\nSafety Guard demo is running.\n"
            f"  Console / API : {url}/   (API docs: {url}/docs)\n"
            f"  MQTT broker   : {broker.url}  (MQTT 3.1.1)\n"
            f"  PostgreSQL    : {database_url}\n"
            f"  Data folder   : {data_dir}\n"
            f"  Settings      : {published}  (the safeguard commands find them while the demo runs)\n"
            "  Within a minute: a fire alarm and a blocked exit at demo-hz-001, camera cam-2 offline at\n"
            "  demo-nb-001, a low battery at demo-wz-001. Try:\n"
            f"    curl -H 'Authorization: Bearer {token}' {url}/api/v1/alerts\n"
            "Press Ctrl-C to stop. Admin token (next line):\n"
        )
        sys.stderr.flush()
        print(token, flush=True)  # noqa: T201 - the token alone on stdout, as `token create` does
        stop.wait()
        sys.stderr.write("stopping…\n")
        return 0
    finally:
        for part in reversed(started):
            try:
                part.stop()
            except Exception:
                log.exception("while stopping %s", type(part).__name__)
