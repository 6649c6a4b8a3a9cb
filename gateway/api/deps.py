"""FastAPI dependencies: database connections and the authenticated principal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, status
from psycopg_pool import ConnectionPool

from gateway.auth import Principal, Role, authenticate
from gateway.config import Settings
from gateway.store.db import Conn


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def request_connection(request: Request) -> AbstractContextManager[Conn]:
    """A pooled connection for a request, waited for at most ``api_db_timeout_s``: with the database
    away the request fails fast (``PoolTimeout``, answered 503 by the app) instead of hanging."""
    pool: ConnectionPool[Conn] = request.app.state.pool
    settings: Settings = request.app.state.settings
    return pool.connection(timeout=settings.api.db_timeout_s)


def get_conn(request: Request) -> Iterator[Conn]:
    with request_connection(request) as conn:
        yield conn


# scope="function": the connection is committed and returned before the response is sent, so a
# database lost at that moment answers 503 (not a 200 and then an error after it; issue 15).
ConnDep = Annotated[Conn, Depends(get_conn, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def get_principal(
    request: Request,
    settings: SettingsDep,
    access_token: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        # EventSource cannot send headers: the SSE stream also accepts ?access_token=.
        if access_token is None or request.url.path != "/api/v1/alerts/stream":
            raise _unauthorized("missing bearer token")
        token = access_token
    elif scheme.lower() != "bearer" or not token:
        raise _unauthorized("expected 'Authorization: Bearer <token>'")
    bootstrap = settings.api.bootstrap_token.get_secret_value() if settings.api.bootstrap_token else None
    # A short-lived connection of its own: a streaming route must not hold one for its whole life.
    with request_connection(request) as conn:
        principal = authenticate(conn, token.strip(), bootstrap)
    if principal is None:
        raise _unauthorized("unknown or revoked token")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Any:
    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role} may not do this")
        return principal

    return Depends(check)


def check_site(principal: Principal, site: str) -> None:
    if not principal.sees(site):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token is limited to site {principal.site!r}")
