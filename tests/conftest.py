"""Fixtures: a private PostgreSQL (one per storage path per test session, a fresh database per test
copied from a migrated template) and a private Mosquitto per test, both on free ports.

Two storage paths (docs/testing.md): ``plain`` PostgreSQL and ``timescale`` (the same server
binaries with TimescaleDB preloaded, its job scheduler off so no policy runs behind a test's
back). Tests marked ``storage`` run on both; the others on plain. ``SAFEGUARD_TEST_STORAGE``
picks: ``both`` (default), ``plain``, or ``timescale`` (everything on TimescaleDB: the whole
suite, once). Where TimescaleDB is not installed its half is skipped and the summary says so,
unless ``SAFEGUARD_REQUIRE_TIMESCALE=1`` (CI) makes that an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path

import psycopg
import pytest
from _pytest.terminal import TerminalReporter
from pydantic import SecretStr

from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.migrate import migrate
from protocol.mqtt import MqttVersion
from safeguard.devservers import MosquittoServer, PostgresServer, find_postgres_bindir, timescaledb_available
from tests.support import ADMIN_TOKEN

TEMPLATE_DB = "sg_template"
PLAIN, TIMESCALE = "plain", "timescale"
STORAGES = (PLAIN, TIMESCALE)
_CHOICES = ("both", PLAIN, TIMESCALE)
TIMESCALE_SKIPPED = "TimescaleDB half skipped"
TIMESCALE_HOW = (
    "TimescaleDB is not installed for this machine's PostgreSQL: run ../shared/tools/install-timescaledb"
    " where that folder exists (as root), or install timescaledb for your PostgreSQL (docs/operations.md)"
)


def _choice() -> str:
    choice = os.environ.get("SAFEGUARD_TEST_STORAGE", "both") or "both"
    if choice not in _CHOICES:
        raise pytest.UsageError(f"SAFEGUARD_TEST_STORAGE={choice!r}: expected one of {', '.join(_CHOICES)}")
    return choice


def _required() -> bool:
    return os.environ.get("SAFEGUARD_REQUIRE_TIMESCALE", "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "storage: runs on both storage paths, plain PostgreSQL and TimescaleDB")
    config.addinivalue_line("markers", "timescale_only: runs on TimescaleDB only (what only TimescaleDB has)")
    config.stash[_STORAGE_OF] = {}
    _choice()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage" not in metafunc.fixturenames:
        return
    choice = _choice()
    if metafunc.definition.get_closest_marker("timescale_only"):
        storages: tuple[str, ...] = () if choice == PLAIN else (TIMESCALE,)
    elif metafunc.definition.get_closest_marker("storage"):
        storages = STORAGES if choice == "both" else (choice,)
    else:
        return  # the default storage (the ``storage`` fixture), without a parameter in the test id
    metafunc.parametrize("storage", storages, indirect=True, scope="function")


_STORAGE_OF = pytest.StashKey[dict[str, str]]()
_STORAGE_PROPERTY = "storage"  # each test report's storage path, in its user_properties


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    storage_of = config.stash[_STORAGE_OF]
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "storage" in callspec.params:
            storage_of[item.nodeid] = callspec.params["storage"]
        elif "storage" in getattr(item, "fixturenames", ()):
            storage_of[item.nodeid] = _default_storage()


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    """Per storage path, what ran; and a loud line when the TimescaleDB half was skipped."""
    outcomes: dict[str, Counter[str]] = {s: Counter() for s in STORAGES}
    skipped_timescale = 0
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):  # pytest's categories
        for report in terminalreporter.stats.get(outcome, []):
            # From the report itself: under pytest-xdist the workers collect, not this process.
            storage = dict(getattr(report, "user_properties", ())).get(_STORAGE_PROPERTY)
            if storage not in outcomes:  # none, or pytest's "not set" for a timescale_only test on plain
                continue
            outcomes[storage][outcome] += 1
            if outcome == "skipped" and storage == TIMESCALE and TIMESCALE_SKIPPED in str(report.longrepr):
                skipped_timescale += 1
    if not any(outcomes.values()):
        return
    terminalreporter.section("storage paths")
    for storage, counts in outcomes.items():
        if counts:
            line = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
            terminalreporter.write_line(f"{storage}: {line}")
    if skipped_timescale:
        terminalreporter.write_line(
            f"{TIMESCALE_SKIPPED.upper()}: {skipped_timescale} tests did not run on TimescaleDB. {TIMESCALE_HOW}.",
            yellow=True, bold=True,
        )


def _default_storage() -> str:
    return TIMESCALE if _choice() == TIMESCALE else PLAIN


class _Servers:
    """One private server per storage path, started when first needed, each with a migrated template."""

    def __init__(self) -> None:
        self._servers: dict[str, PostgresServer] = {}
        self._broken: dict[str, str] = {}
        self._roots: list[Path] = []

    def get(self, storage: str) -> PostgresServer:
        if storage in self._broken:
            pytest.fail(f"the {storage} server or its template failed to start earlier: {self._broken[storage]}",
                        pytrace=False)
        if storage not in self._servers:
            # Not under pytest's basetemp: another pytest session resets that to 0700, and the server
            # runs as the unprivileged `postgres` user when we are root.
            root = Path(tempfile.mkdtemp(prefix=f"safeguard-test-pg-{storage}-"))
            self._roots.append(root)
            # Sessions' ends logged: a test whose connection was closed under it says by whom (below).
            server = PostgresServer(root / "data", fast=True, timescale=storage == TIMESCALE, timescale_jobs=False,
                                    log_sessions=True)
            try:
                server.start()
                self._servers[storage] = server
                with psycopg.connect(server.url, autocommit=True) as admin:
                    admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
                with connect(server.url_for(TEMPLATE_DB)) as conn:
                    migrate(conn)
                    conn.commit()
            except Exception as exc:
                self._broken[storage] = f"{type(exc).__name__}: {exc}"  # the next tests say so, not a confusing error
                raise
        return self._servers[storage]

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        for root in self._roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg_servers() -> Iterator[_Servers]:
    servers = _Servers()
    yield servers
    servers.stop()


@pytest.fixture
def storage(request: pytest.FixtureRequest) -> str:
    """The storage path this test runs on: ``plain`` or ``timescale`` (skipped, or failed under
    SAFEGUARD_REQUIRE_TIMESCALE, where TimescaleDB is not installed)."""
    storage = str(getattr(request, "param", _default_storage()))
    if storage == TIMESCALE and not timescaledb_available():
        message = f"{TIMESCALE_SKIPPED}: {TIMESCALE_HOW} (server binaries: {find_postgres_bindir()})"
        if _required():
            pytest.fail(f"SAFEGUARD_REQUIRE_TIMESCALE is set, but {message}", pytrace=False)
        pytest.skip(message)
    return storage


# Lines of a server log that say a session or the server itself went wrong (a backend killed or
# crashed, the postmaster resetting every connection, a session ended by a FATAL error).
_SERVER_TROUBLE = ("terminated by signal", "was terminated", "PANIC", "FATAL", "terminating any other active server",
                   "all server processes terminated", "database system was interrupted", "out of memory")
_PG_LOG_AT = pytest.StashKey[tuple[Path, int]]()
_TEST_DB = pytest.StashKey[str]()
# A session's end after a second or more (a gateway's pooled connection, not a probe's quick query).
_LASTING_SESSION = re.compile(r"disconnection: session time: (?!0:00:00\.)")


@pytest.fixture
def pg_server(_pg_servers: _Servers, storage: str, request: pytest.FixtureRequest) -> PostgresServer:
    server = _pg_servers.get(storage)
    request.node.stash[_PG_LOG_AT] = (server.log_path, server.log_path.stat().st_size)
    return server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries what the shared server logged about its own trouble meanwhile:
    a connection that dies mid-test is otherwise a riddle once the server's log is gone with CI."""
    report = yield
    storage = item.config.stash[_STORAGE_OF].get(item.nodeid)
    if storage is not None:
        report.user_properties.append((_STORAGE_PROPERTY, storage))
    if report.failed and _PG_LOG_AT in item.stash:
        path, offset = item.stash[_PG_LOG_AT]
        with contextlib.suppress(OSError), path.open("rb") as log_file:
            log_file.seek(offset)
            lines = log_file.read().decode(errors="replace").splitlines()
            # The server's own trouble, and how each session of this test's database ended.
            mine = f"database={item.stash[_TEST_DB]}" if _TEST_DB in item.stash else None
            trouble = [line for line in lines if any(mark in line for mark in _SERVER_TROUBLE)
                       or (mine is not None and mine in line and _LASTING_SESSION.search(line))]
            if trouble:
                report.sections.append((f"PostgreSQL server log ({path})", "\n".join(trouble[-40:])))
    return report


@pytest.fixture
def template_db(pg_server: PostgresServer) -> str:
    return TEMPLATE_DB


@pytest.fixture
def database_url(pg_server: PostgresServer, template_db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    request.node.stash[_TEST_DB] = name
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield pg_server.url_for(name)
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = MosquittoServer(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(database_url: str, mosquitto: MosquittoServer) -> Settings:
    return Settings(
        mqtt_url=mosquitto.url,
        mqtt_version=MqttVersion.V5,
        mqtt_client_id=f"gw-{uuid.uuid4().hex[:8]}",
        database_url=database_url,
        api_host="127.0.0.1",
        api_port=0,
        bootstrap_token=SecretStr(ADMIN_TOKEN),
        batch_interval_s=0.05,
        sweep_interval_s=0.2,
        escalate_after_s=60,
    )


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    gw = Gateway(settings)
    gw.start()
    assert gw.ingest is not None
    assert gw.ingest.wait_connected(10)
    yield gw
    gw.stop()
