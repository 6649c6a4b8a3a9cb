"""The FastAPI application: REST, SSE, health, readiness and metrics."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge
from psycopg_pool import ConnectionPool

from gateway.api import errors
from gateway.api.compliance import router as compliance_router
from gateway.api.inputs import NulGuard
from gateway.api.inspection import router as inspection_router
from gateway.api.live import AlertHub, ProvisionalFeed
from gateway.api.problems import router as problems_router
from gateway.api.reports import router as reports_router
from gateway.api.routes import router
from gateway.api.snapshots import router as snapshots_router
from gateway.config import Settings
from gateway.metrics_merge import exposition
from gateway.rules.model import AlertKind
from gateway.store import alerts as alert_store
from gateway.store.db import Conn, ping

log = logging.getLogger(__name__)

OPEN_ALERTS = Gauge("sg_open_alerts", "Unresolved alerts by kind", ["kind"])
DB_UNAVAILABLE = Counter("sg_api_db_unavailable_total", "API requests answered 503: the database was away")
RETRY_AFTER_S = 5  # what a 503 for a database away tells the client to wait


def broker_reachable(settings: Settings, timeout: float = 1.0) -> bool:
    """For API processes without an ingest worker: can we open a TCP connection to the broker?"""
    endpoint = settings.mqtt.endpoint
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


class DatabaseReadiness:
    """The database half of ``/readyz``, logged when it changes, not at every probe.

    An orchestrator probes every few seconds: a database away for an hour would otherwise
    write a warning per probe. The first failure is logged with its error, the recovery once
    (with the number of failed probes); the probes in between answer 503 silently.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # probes run on the API's thread pool, several at once
        self._reachable: bool | None = None  # None: not probed yet
        self._failed_probes = 0  # since the database was last reachable

    def record(self, error: Exception | None) -> bool:
        """Note one probe's outcome (``error`` None: reachable); return whether it was reachable."""
        reachable = error is None
        with self._lock:
            previous, self._reachable = self._reachable, reachable
            failed = self._failed_probes
            self._failed_probes = 0 if reachable else failed + 1
        if not reachable and previous is not False:
            log.warning("readiness: database not reachable: %s: %s (not logged again until it is back)",
                        type(error).__name__, error)
        elif reachable and previous is False:
            log.info("readiness: database reachable again after %d failed probe(s)", failed)
        return reachable


def create_app(
    settings: Settings,
    pool: ConnectionPool[Conn],
    *,
    broker_ready: Callable[[], bool] | None = None,
    static_dir: str | None = None,
) -> FastAPI:
    hub = AlertHub(settings, pool)
    feed = ProvisionalFeed(settings, hub) if settings.ingest.provisional_alerts else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        if feed is not None:
            feed.start()
        yield
        if feed is not None:
            feed.stop()
        await hub.stop()

    app = FastAPI(
        title="Safety Guard API",
        version="1.0",
        description="Fire-safety monitoring of tutoring institutions: sites, devices, alerts, live push.",
        lifespan=lifespan,
    )
    app.add_middleware(NulGuard)
    app.state.settings = settings
    app.state.pool = pool
    app.state.hub = hub
    app.state.provisional_feed = feed
    app.include_router(compliance_router)
    app.include_router(inspection_router)
    app.include_router(reports_router)
    app.include_router(snapshots_router)
    app.include_router(problems_router)
    app.include_router(router)
    errors.install(app)
    is_broker_ready = broker_ready or (lambda: broker_reachable(settings))
    database_readiness = DatabaseReadiness()

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        checks: dict[str, Any] = {"broker": is_broker_ready()}
        error: Exception | None = None
        try:
            with pool.connection(timeout=settings.api.db_timeout_s) as conn:
                ping(conn)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason goes to the log
            error = exc
        checks["database"] = database_readiness.record(error)
        ready = all(checks.values())
        code = status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse({"ready": ready, "checks": checks}, status_code=code)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        with pool.connection(timeout=settings.api.db_timeout_s) as conn:
            counts = alert_store.open_counts(conn)
        for kind in AlertKind:
            OPEN_ALERTS.labels(kind.value).set(counts.get(kind.value, 0))
        body, content_type = exposition(settings.api.metrics_merge)
        return Response(body, media_type=content_type)

    @app.exception_handler(psycopg.OperationalError)
    async def database_away(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # PoolTimeout is one too: no connection within api_db_timeout_s. A quick 503 the client may
        # retry, not a request hanging for the pool's default 30 s and then a 500 (issue 15).
        DB_UNAVAILABLE.inc()
        log.warning("%s %s: database unavailable: %s: %s", request.method, request.url.path,
                    type(exc).__name__, exc)
        return JSONResponse(
            {"detail": "database unavailable, retry later", "error": "database_unavailable"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(ValueError)
    async def value_error(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_400_BAD_REQUEST)

    if static_dir is not None:
        from fastapi.staticfiles import StaticFiles  # noqa: PLC0415 - only when a console is shipped

        app.mount("/", StaticFiles(directory=static_dir, html=True), name="console")
    return app
