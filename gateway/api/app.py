"""The FastAPI application: REST, SSE, health, readiness and metrics."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from psycopg_pool import ConnectionPool

from gateway.api import errors
from gateway.api.compliance import router as compliance_router
from gateway.api.inspection import router as inspection_router
from gateway.api.live import AlertHub
from gateway.api.problems import router as problems_router
from gateway.api.reports import router as reports_router
from gateway.api.routes import router
from gateway.api.snapshots import router as snapshots_router
from gateway.config import Settings
from gateway.rules.model import AlertKind
from gateway.store.db import Conn

OPEN_ALERTS = Gauge("sg_open_alerts", "Unresolved alerts by kind", ["kind"])


def broker_reachable(settings: Settings, timeout: float = 1.0) -> bool:
    """For API processes without an ingest worker: can we open a TCP connection to the broker?"""
    endpoint = settings.mqtt
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def create_app(
    settings: Settings,
    pool: ConnectionPool[Conn],
    *,
    broker_ready: Callable[[], bool] | None = None,
    static_dir: str | None = None,
) -> FastAPI:
    hub = AlertHub(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()

    app = FastAPI(
        title="Safety Guard API",
        version="1.0",
        description="Fire-safety monitoring of tutoring institutions: sites, devices, alerts, live push.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.hub = hub
    app.include_router(compliance_router)
    app.include_router(inspection_router)
    app.include_router(reports_router)
    app.include_router(snapshots_router)
    app.include_router(problems_router)
    app.include_router(router)
    errors.install(app)
    is_broker_ready = broker_ready or (lambda: broker_reachable(settings))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        checks: dict[str, Any] = {"broker": is_broker_ready()}
        try:
            with pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            checks["database"] = True
        except Exception:  # noqa: BLE001 - any failure means not ready; the reason is in the logs
            checks["database"] = False
        ready = all(checks.values())
        code = status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse({"ready": ready, "checks": checks}, status_code=code)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        with pool.connection() as conn:
            counts = {
                r["kind"]: r["n"]
                for r in conn.execute("SELECT kind, count(*) AS n FROM alerts WHERE state <> 'resolved' GROUP BY kind")
            }
        for kind in AlertKind:
            OPEN_ALERTS.labels(kind.value).set(counts.get(kind.value, 0))
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ValueError)
    async def value_error(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_400_BAD_REQUEST)

    if static_dir is not None:
        from fastapi.staticfiles import StaticFiles  # noqa: PLC0415 - only when a console is shipped

        app.mount("/", StaticFiles(directory=static_dir, html=True), name="console")
    return app
