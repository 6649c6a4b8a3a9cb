"""The API's input types, declared once (issue 15 point 8): every value a route takes is checked
here, at the boundary, so nothing PostgreSQL or Python's calendar would refuse gets past it.

- no NUL in any string (path, query, body): PostgreSQL's ``text`` refuses it;
- site and device ids match the registry's pattern, row ids fit PostgreSQL's ``bigint``;
- instants and days lie in years 2000..2200, so period arithmetic (a day back, 24 h back, a local
  day's bounds) cannot leave Python's calendar (years 1..9999);
- enums and formats are strict (FastAPI's own validation).

Violations answer 422 with FastAPI's ``{"detail": [...]}`` naming the parameter; the guard in
:func:`reject_nul` answers 400 ``{"detail": "..."}`` for a NUL anywhere in the URL, before any route.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.store.text import PgText

__all__ = [
    "DeviceId", "Instant", "LocalDay", "NulGuard", "OptionalText", "PgText", "RowId", "SiteFilter", "SiteId",
]

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NO_NUL_PATTERN = r"^[^\x00]*$"
MAX_BIGINT = 2**63 - 1
FIRST_YEAR, LAST_YEAR = 2000, 2200


def _sane_instant(value: datetime) -> datetime:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must lie in the years {FIRST_YEAR}..{LAST_YEAR}")
    return value


def _sane_day(value: date) -> date:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must lie in the years {FIRST_YEAR}..{LAST_YEAR}")
    return value


SiteId = Annotated[str, Path(pattern=ID_PATTERN)]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN)]
SiteFilter = Annotated[str | None, Query(pattern=ID_PATTERN)]
RowId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
# Free text filters (city, county, a dead-letter reason code, a cursor): bounded, no NUL.
OptionalText = Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN)]
Instant = Annotated[datetime, AfterValidator(_sane_instant)]
LocalDay = Annotated[date, AfterValidator(_sane_day)]


class NulGuard:
    """ASGI middleware, belt and braces: a NUL in the path or the query string is a 400 before any
    route runs, whatever a route declared (a ``%00`` decodes to NUL in every parameter)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_nul(scope):
            await _bad_request(send, "the URL must not contain the NUL character (%00)")
            return
        await self.app(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"\x00" in query or b"%00" in query.lower()


async def _bad_request(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())]
    start: dict[str, Any] = {"type": "http.response.start", "status": 400, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
