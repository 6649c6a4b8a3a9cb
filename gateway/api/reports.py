"""Inspectors' exports (issue 6 points 3 and 5): the ledger and the city summary report, docs/reports.md."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response

from gateway.api.compliance import period
from gateway.api.deps import ConnDep, require
from gateway.api.inputs import NO_NUL_PATTERN, Instant
from gateway.auth import Role
from gateway.config import Settings
from gateway.reports.ledger import ledger_csv, ledger_rows, ledger_xlsx
from gateway.reports.spreadsheet import period_text
from gateway.reports.summary import summary, summary_csv, summary_html, summary_title, summary_xlsx

router = APIRouter(prefix="/api/v1", tags=["reports"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MEDIA = {"csv": "text/csv; charset=utf-8", "xlsx": XLSX, "html": "text/html; charset=utf-8"}
Start = Annotated[Instant, Query(alias="from", description="RFC 3339, inclusive")]
End = Annotated[Instant, Query(alias="to", description="RFC 3339, exclusive")]
Place = Annotated[str, Query(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]


def _stamp(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%S") if value.time() != datetime.min.time() else value.strftime("%Y%m%d")


def attachment(stem: str, parts: list[str | None], start: datetime, end: datetime, extension: str) -> str:
    """Content-Disposition for ``<stem>[-parts]-<from>-<to>.<ext>``: an ASCII ``filename`` (non-ASCII
    replaced) and the exact UTF-8 ``filename*`` (RFC 6266)."""
    name = "-".join([stem, *(p for p in parts if p), _stamp(start), _stamp(end)]) + f".{extension}"
    ascii_name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get("/reports/ledger", dependencies=[require(Role.INSPECTOR, Role.ADMIN)])
def get_ledger(
    request: Request,
    conn: ConnDep,
    start: Start,
    end: End,
    city: Place | None = None,
    county: Place | None = None,
    format: Literal["csv", "xlsx"] = "csv",
) -> Response:
    """The ledger (工作台账): one row per site, compliance and problem counts for [from, to)."""
    settings: Settings = request.app.state.settings
    start, end = period(start, end, time.time())
    rows = ledger_rows(conn, start, end, city=city, county=county, settings=settings)
    if format == "xlsx":
        when = period_text(start, end, settings.timezone)
        title = " ".join(filter(None, [city, county, "工作台账", when]))
        body = ledger_xlsx(rows, title=title, sheet_name=f"台账 {when}")
    else:
        body = ledger_csv(rows)
    return Response(body, media_type=MEDIA[format],
                    headers={"Content-Disposition": attachment("ledger", [city, county], start, end, format)})


@router.get("/reports/summary", dependencies=[require(Role.INSPECTOR, Role.ADMIN)])
def get_summary(
    request: Request,
    conn: ConnDep,
    start: Start,
    end: End,
    city: Place,
    format: Literal["csv", "xlsx", "html"] = "html",
) -> Response:
    """The city summary report for [from, to): per county and the city's total."""
    settings: Settings = request.app.state.settings
    start, end = period(start, end, time.time())
    report = summary(conn, start, end, city=city, settings=settings)
    if format == "xlsx":
        body = summary_xlsx(report, title=summary_title(report))
    elif format == "csv":
        body = summary_csv(report)
    else:
        body = summary_html(report).encode()
    return Response(body, media_type=MEDIA[format],
                    headers={"Content-Disposition": attachment("summary", [city], start, end, format)})
