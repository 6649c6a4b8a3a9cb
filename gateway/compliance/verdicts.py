"""A site's real-time interface compliance over a period, from ``readings`` (DESIGN section 5).

One query (:func:`gateway.store.compliance.camera_heartbeats`) fetches the site, its cameras and
every camera heartbeat that can matter for the period: those that arrived within it and those that
arrived up to one timeout before it (the one of these that is latest at ``from`` says whether the
camera is online when the period starts; anything older cannot). The figures themselves come from
:mod:`gateway.compliance.timeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from gateway.compliance.daily import DayFigures, absent_day, micros
from gateway.compliance.rollup import daily_rows
from gateway.compliance.timeline import (
    DELAY_P50_S,
    ONLINE_SHARE,
    Beat,
    CameraFigures,
    Verdict,
    camera_figures,
    not_yet_reporting,
    verdict,
)
from gateway.rules.engine import Heartbeats
from gateway.store import compliance as store
from gateway.store.db import Conn, rfc3339


class Thresholds(BaseModel):
    """What every camera keeps to (DESIGN section 5); the gateway's ``compliance`` settings are one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Online at least this share of the period, and the median delay from ts to arrival no more than this.
    online_share: float = Field(ONLINE_SHARE, ge=0, le=1)
    delay_p50_s: float = Field(DELAY_P50_S, ge=0)


@dataclass(frozen=True, slots=True)
class SiteCompliance:
    site: str
    start: datetime
    end: datetime
    cameras_required: int
    timeout_s: float
    thresholds: Thresholds
    cameras: list[CameraFigures]
    verdict: Verdict
    measured_from: datetime | None = None  # later than ``start`` when the site began reporting in the period

    def json(self) -> dict[str, Any]:
        return compliance_json(self)


def _judged(
    site: str, start: datetime, end: datetime, since: datetime | None, required: int, timeout_s: float,
    thresholds: Thresholds, figures: Callable[[datetime], list[CameraFigures]],
) -> SiteCompliance:
    """The verdict over [max(start, since), end); none when the site was not reporting before ``end``."""
    if since is None or since >= end:
        return SiteCompliance(site=site, start=start, end=end, cameras_required=required, timeout_s=timeout_s,
                              thresholds=thresholds, cameras=[], verdict=not_yet_reporting(required))
    begin = max(start, since)
    cameras = figures(begin)
    return SiteCompliance(
        site=site, start=start, end=end, cameras_required=required, timeout_s=timeout_s, thresholds=thresholds,
        cameras=cameras, measured_from=begin,
        verdict=verdict(cameras, cameras_required=required, online_share=thresholds.online_share,
                        delay_p50_s=thresholds.delay_p50_s),
    )


def compliance_by_site(
    conn: Conn,
    start: datetime,
    end: datetime,
    *,
    thresholds: Thresholds,
    heartbeats: Heartbeats,
    site: str | None = None,
) -> dict[str, SiteCompliance]:
    """Compliance over [start, end) (aware datetimes) of ``site``, or of every site when None."""
    rows = store.camera_heartbeats(conn, start, end, heartbeats=heartbeats, site=site)
    grouped: dict[str, tuple[Any, dict[str, list[Beat]]]] = {}
    for row in rows:
        _, beats = grouped.setdefault(row["site"], (row, {}))
        if row["device"] is None:
            continue
        camera = beats.setdefault(row["device"], [])
        if row["arrival"] is not None:
            camera.append(Beat(row["arrival"], row["ts"], bool(row["stream_ok"])))
    result = {}
    for site_id, (first, beats) in grouped.items():
        timeout_s = float(first["timeout_s"])

        def figures(begin: datetime, beats: dict[str, list[Beat]] = beats, timeout_s: float = timeout_s
                    ) -> list[CameraFigures]:
            return [
                camera_figures(device, device_beats, start=begin.timestamp(), end=end.timestamp(),
                               timeout_s=timeout_s)
                for device, device_beats in sorted(beats.items())
            ]

        result[site_id] = _judged(site_id, start, end, first["reporting_since"], int(first["cameras_required"]),
                                  timeout_s, thresholds, figures)
    return result


def site_compliance(
    conn: Conn,
    site: str,
    start: datetime,
    end: datetime,
    *,
    thresholds: Thresholds,
    heartbeats: Heartbeats,
) -> SiteCompliance | None:
    """The site's compliance over [start, end) (aware datetimes), or None for an unknown site."""
    return compliance_by_site(conn, start, end, thresholds=thresholds, heartbeats=heartbeats, site=site).get(site)


def _camera_json(camera: CameraFigures) -> dict[str, Any]:
    return {
        "device": camera.device,
        "online_share": camera.online_share,
        "outages": camera.outages,
        "longest_outage_s": camera.longest_outage_s,
        "delay_p50_s": camera.delay_p50_s,
        "delay_p95_s": camera.delay_p95_s,
    }


def compliance_json(result: SiteCompliance) -> dict[str, Any]:
    """The answer of ``GET /api/v1/sites/{site}/compliance`` (DESIGN section 5)."""
    cameras: Sequence[CameraFigures] = result.cameras
    return {
        "site": result.site,
        "from": rfc3339(result.start),
        "to": rfc3339(result.end),
        "compliant": result.verdict.compliant,
        "status": ("not_yet_reporting" if result.verdict.compliant is None
                   else "compliant" if result.verdict.compliant else "not_compliant"),
        "measured_from": rfc3339(result.measured_from),
        "reasons": list(result.verdict.reasons),
        "reason_codes": [dict(c) for c in result.verdict.codes],
        "cameras_required": result.cameras_required,
        "cameras_reporting": result.verdict.cameras_reporting,
        "thresholds": {
            "online_share": result.thresholds.online_share,
            "delay_p50_s": result.thresholds.delay_p50_s,
        },
        "cameras": [_camera_json(c) for c in cameras],
    }


@dataclass(frozen=True, slots=True)
class DailyCompliance:
    site: str
    zone: str
    days: list[SiteCompliance]  # one per local day, oldest first
    complete_until: datetime | None  # the timeline's horizon: later days are not kept yet

    def json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "time_zone": self.zone,
            "complete_until": rfc3339(self.complete_until),
            "days": [{"date": d.start.astimezone(ZoneInfo(self.zone)).date().isoformat(), **d.json()}
                     for d in self.days],
        }


def daily_compliance(
    conn: Conn,
    site: str,
    first: date,
    last: date,
    *,
    zone: str,
    thresholds: Thresholds,
    heartbeats: Heartbeats,
) -> DailyCompliance | None:
    """The site's kept daily figures for local days ``first``..``last`` (inclusive), each day exactly
    what :func:`site_compliance` gives for it; days past the timeline's horizon are left out.
    None for an unknown site."""
    head = store.daily_head(conn, site, heartbeats=heartbeats)
    if head is None:
        return None
    tz = ZoneInfo(zone)
    horizon: datetime | None = head["horizon"]
    bounds = []
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        start = datetime(day.year, day.month, day.day, tzinfo=tz)
        end = start + timedelta(days=1)
        if horizon is None or end > horizon:
            break
        bounds.append((start.astimezone(UTC), end.astimezone(UTC)))
    figures: dict[tuple[str, int], DayFigures] = {}
    if bounds:
        rows = daily_rows(conn, site, micros(bounds[0][0]), micros(bounds[-1][1]), zone=zone)
        figures = {(device, f.day): f for device, f in rows}
    days = []
    since: datetime | None = head["reporting_since"]
    for start, end in bounds:
        if since is not None and start < since < end:
            # The day the site began reporting: its kept figures cover the whole day; measured from
            # the first birth instead, from the readings (as /compliance would for that stretch).
            clipped = compliance_by_site(conn, start, end, thresholds=thresholds, heartbeats=heartbeats,
                                         site=site).get(site)
            if clipped is not None:
                days.append(clipped)
                continue
        period = micros(end) - micros(start)

        def kept(_begin: datetime, start: datetime = start, period: int = period) -> list[CameraFigures]:
            return [
                figures.get((device, micros(start)), absent_day(micros(start), period)).camera(device, period)
                for device in head["cameras"]
            ]

        days.append(_judged(site, start, end, since, int(head["cameras_required"]), float(head["timeout_s"]),
                            thresholds, kept))
    return DailyCompliance(site=site, zone=zone, days=days, complete_until=horizon)
