"""Compliance routes (DESIGN section 5): a site's real-time interface compliance over a period."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, status

from gateway.api.deps import ConnDep, PrincipalDep, SettingsDep, check_site
from gateway.api.inputs import Instant, LocalDay, SiteId
from gateway.compliance.verdicts import daily_compliance, site_compliance
from gateway.store.db import from_epoch

router = APIRouter(prefix="/api/v1", tags=["compliance"])

DEFAULT_PERIOD = timedelta(hours=24)
MAX_PERIOD = timedelta(days=366)


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{name!r} needs a time zone offset (RFC 3339), e.g. Z")
    return value


def period(start: datetime | None, end: datetime | None, now: float) -> tuple[datetime, datetime]:
    """[from, to): ``to`` defaults to now, ``from`` to 24 h before ``to``; 400 unless 0 < length <= 366 days."""
    end = _aware(end, "to") or from_epoch(now)
    start = _aware(start, "from") or end - DEFAULT_PERIOD
    if start >= end:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "'from' must be before 'to'")
    if end - start > MAX_PERIOD:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"the period may be at most {MAX_PERIOD.days} days")
    return start, end


@router.get("/sites/{site}/compliance")
def get_compliance(
    site: SiteId,
    conn: ConnDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    start: Annotated[Instant | None, Query(alias="from", description="RFC 3339; default: 24 h before 'to'")] = None,
    end: Annotated[Instant | None, Query(alias="to", description="RFC 3339, exclusive; default: now")] = None,
) -> dict[str, Any]:
    """Per camera online share, outages and delay, cameras reporting, and the verdict with its reasons."""
    check_site(principal, site)
    start, end = period(start, end, time.time())
    result = site_compliance(
        conn,
        site,
        start,
        end,
        thresholds=settings.compliance,
        heartbeats=settings.liveness,
    )
    if result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site!r} is not registered")
    return result.json()


DEFAULT_DAYS = 7


def days(first: date | None, last: date | None, today: date) -> tuple[date, date]:
    """Local days ``from``..``to`` inclusive: ``to`` defaults to yesterday, ``from`` to 7 days ending
    at ``to``; 400 unless from <= to and at most 366 days."""
    last = last or today - timedelta(days=1)
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "'from' must not be after 'to'")
    if (last - first).days + 1 > MAX_PERIOD.days:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"at most {MAX_PERIOD.days} days at a time")
    return first, last


@router.get("/sites/{site}/compliance/daily")
def get_daily_compliance(
    site: SiteId,
    conn: ConnDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    first: Annotated[LocalDay | None, Query(alias="from", description="local date, e.g. 2026-11-01; default: 'to' - 6")]
    = None,
    last: Annotated[LocalDay | None, Query(alias="to", description="local date, inclusive; default: yesterday")] = None,
) -> dict[str, Any]:
    """The kept daily figures: per local day the same answer as /compliance for that day.
    Days the timeline has not passed yet (today) are left out; ``complete_until`` says how far it is."""
    check_site(principal, site)
    zone = settings.timezone
    first, last = days(first, last, datetime.now(ZoneInfo(zone)).date())
    result = daily_compliance(
        conn, site, first, last, zone=zone,
        thresholds=settings.compliance,
        heartbeats=settings.liveness,
    )
    if result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site!r} is not registered")
    return result.json()
