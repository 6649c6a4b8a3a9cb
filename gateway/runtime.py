"""Composes the gateway's roles (ingest, supervisor, API) in one process, with a clean stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import uvicorn
from prometheus_client import start_http_server
from psycopg_pool import ConnectionPool

from dashboards import CONSOLE_DIR
from gateway.api.app import create_app
from gateway.config import Settings
from gateway.ingest.service import IngestService
from gateway.notify.service import Notifier
from gateway.store.db import Conn, open_pool
from gateway.supervisor import Supervisor

log = logging.getLogger(__name__)


class ApiServer:
    """uvicorn in a thread of ours, so tests and the demo can start and stop it."""

    def __init__(
        self, settings: Settings, pool: ConnectionPool[Conn], *, broker_ready: Callable[[], bool] | None = None
    ) -> None:
        static = str(CONSOLE_DIR) if (CONSOLE_DIR / "index.html").exists() else None
        app = create_app(settings, pool, broker_ready=broker_ready, static_dir=static)
        config = uvicorn.Config(
            app, host=settings.api.host, port=settings.api.port, log_level="warning",
            timeout_graceful_shutdown=2, lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.05)
        if not self._server.started:
            raise RuntimeError("the API server did not start (is the port taken?)")

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)


class Gateway:
    """``safeguard serve``: the roles chosen, sharing one connection pool."""

    def __init__(
        self, settings: Settings, *, ingest: bool = True, supervise: bool = True, api: bool = True,
        notify: bool | None = None,
    ) -> None:
        self.settings = settings
        self._roles = (ingest, supervise, api)
        # The notifier by default when routes are configured (docs/operations.md, "Notifications").
        self._notify = bool(settings.notify.routes) if notify is None else notify
        self.notifier: Notifier | None = None
        self.pool: ConnectionPool[Conn] | None = None
        self.ingest: IngestService | None = None
        self.supervisor: Supervisor | None = None
        self.api: ApiServer | None = None

    def start(self) -> None:
        ingest, supervise, api = self._roles
        self.pool = open_pool(self.settings.database.url, max_size=10, timeout=self.settings.database.pool_timeout_s)
        if ingest:
            self.ingest = IngestService(self.settings, self.pool)
            self.ingest.start()
        if supervise:
            self.supervisor = Supervisor(self.settings, self.pool)
            self.supervisor.start()
        if self._notify:
            self.notifier = Notifier(self.settings)  # a pool of its own: sends never starve ingest
            self.notifier.start()
        if not api and self.settings.api.metrics_port is not None:
            start_http_server(self.settings.api.metrics_port, addr=self.settings.api.host)
        if api:
            in_process = self.ingest
            ready = (lambda: in_process.connected) if in_process is not None else None
            self.api = ApiServer(self.settings, self.pool, broker_ready=ready)
            self.api.start()

    @property
    def api_url(self) -> str:
        assert self.api is not None
        return f"http://{self.settings.api.host}:{self.api.port}"

    def stop(self) -> None:
        for part in (self.api, self.notifier, self.supervisor, self.ingest):
            if part is not None:
                part.stop()
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
