"""Who is told what, when: the notifier's decisions as pure functions (no clock, database or network).

For each alert change (an ``alert_history`` row) :func:`plan` returns the deliveries to schedule:

- ``opened``, critical or major: every matching route's steps, each due ``after_s`` after the alert
  opened; a channel named by several steps or routes is told once, at its earliest step. Steps
  after the first are sent only while the alert is still unacknowledged (the store's claim checks).
- ``opened``, minor: one digest item per channel of the matching routes' first steps; the items of
  a channel go out together at the next multiple of ``digest_interval_s`` (never one page each).
- ``acknowledged``: the pending steps stop. ``resolved``: they stop, and every channel already told
  (or being told) gets an all clear.

A maintenance window suppresses the kinds it names; quiet hours suppress what is not critical.
A change older than ``stale_after_s`` when planned is not notified at all (a notifier first
configured on a gateway with months of history must not page for all of it).
A suppressed delivery is scheduled all the same, in state ``suppressed``: it is recorded, never sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.notify.config import Maintenance, NotifyConfig, QuietHours, Route

Purpose = Literal["alert", "all_clear", "digest"]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert change, with the site's county and city (from the site registry)."""

    history_id: int
    alert_id: int
    action: str  # opened, repeated, escalated, acknowledged, resolved, ...
    at: float
    site: str
    device: str | None
    kind: str
    severity: str
    opened_at: float
    county: str = ""
    city: str = ""


@dataclass(frozen=True, slots=True)
class Planned:
    alert_id: int
    site: str
    purpose: Purpose
    route: str
    step: int
    channel: str
    due_at: float
    suppressed: str | None = None  # why a quiet hour or a maintenance window holds it back


@dataclass(frozen=True, slots=True)
class Told:
    """An alert delivery of the alert that was sent, or is still being sent (not cancelled, suppressed
    or given up)."""

    channel: str
    route: str
    step: int


@dataclass(frozen=True, slots=True)
class Plan:
    deliveries: tuple[Planned, ...] = ()
    stop_steps: bool = False  # cancel the alert's escalation steps not yet sent


def matches(route: Route, event: AlertEvent) -> bool:
    m = route.match
    return (
        (not m.severity or event.severity in m.severity)
        and (not m.kind or event.kind in m.kind)
        and (not m.site or event.site in m.site)
        and (not m.county or event.county in m.county)
        and (not m.city or event.city in m.city)
    )


def digest_due(at: float, interval_s: float) -> float:
    """The next digest time after ``at``: the same for every notifier process, without coordination."""
    return (math.floor(at / interval_s) + 1) * interval_s


def _in_window(q: QuietHours, at: float) -> bool:
    local = datetime.fromtimestamp(at, ZoneInfo(q.timezone)).time().replace(tzinfo=None)
    if q.start < q.end:
        return q.start <= local < q.end
    return local >= q.start or local < q.end  # across midnight


def _covers_site(q: QuietHours, event: AlertEvent) -> bool:
    if not q.sites and not q.counties:
        return True
    return event.site in q.sites or (bool(event.county) and event.county in q.counties)


def _in_maintenance(m: Maintenance, event: AlertEvent, at: float) -> bool:
    return (
        m.site == event.site
        and event.kind in m.kinds
        and (not m.devices or event.device in m.devices)
        and m.start.timestamp() <= at < m.end.timestamp()
    )


def _clock(value: time) -> str:
    return value.strftime("%H:%M")


def suppression(config: NotifyConfig, event: AlertEvent, at: float) -> str | None:
    """Why a delivery of ``event`` due at ``at`` is not sent, or None."""
    for m in config.maintenance:
        if _in_maintenance(m, event, at):
            until = m.end.astimezone(UTC).isoformat().replace("+00:00", "Z")
            return f"maintenance until {until}" + (f": {m.note}" if m.note else "")
    if event.severity != "critical":
        for q in config.quiet_hours:
            if _covers_site(q, event) and _in_window(q, at):
                return f"quiet hours {_clock(q.start)}-{_clock(q.end)} {q.timezone}"
    return None


def _earliest(planned: Iterable[Planned]) -> tuple[Planned, ...]:
    """A channel is told once per purpose: at its earliest step."""
    best: dict[str, Planned] = {}
    for p in planned:
        if p.channel not in best or p.due_at < best[p.channel].due_at:
            best[p.channel] = p
    return tuple(sorted(best.values(), key=lambda p: (p.due_at, p.channel)))


def plan(config: NotifyConfig, event: AlertEvent, told: Sequence[Told] = (), *, now: float | None = None) -> Plan:
    if now is not None and now - event.at > config.stale_after_s:
        return Plan()  # a backlog from before the notifier was configured or while it was off for long
    if event.action == "opened":
        routes = [r for r in config.routes if matches(r, event)]
        if event.severity == "minor":
            due = digest_due(event.at, config.digest_interval_s)
            items = [Planned(event.alert_id, event.site, "digest", r.name, 0, c, due, suppression(config, event, due))
                     for r in routes for c in r.steps[0].channels]
            return Plan(_earliest(items))
        steps = [
            Planned(event.alert_id, event.site, "alert", r.name, index, channel, due,
                    suppression(config, event, due))
            for r in routes for index, step in enumerate(r.steps) for channel in step.channels
            for due in [event.opened_at + step.after_s]
        ]
        return Plan(_earliest(steps))
    if event.action == "acknowledged":
        return Plan(stop_steps=True)
    if event.action == "resolved":
        clear = [Planned(event.alert_id, event.site, "all_clear", t.route, t.step, t.channel, event.at) for t in told]
        return Plan(_earliest(clear), stop_steps=True)
    return Plan()


def backoff_s(attempts: int, base_s: float, cap_s: float) -> float:
    """The wait before attempt ``attempts + 1``: doubling from ``base_s``, at most ``cap_s``."""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))


def failing_since(attempts: Sequence[tuple[float, bool]]) -> float | None:
    """Given a channel's latest attempts (time, succeeded), newest first: when its current run of
    failures began, or None when its latest attempt succeeded (or there is none)."""
    since = None
    for at, ok in attempts:
        if ok:
            break
        since = at
    return since


def channel_failing(attempts: Sequence[tuple[float, bool]], now: float, after_s: float) -> bool:
    since = failing_since(attempts)
    return since is not None and now - since >= after_s
