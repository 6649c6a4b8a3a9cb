"""A camera's availability timeline cut into day pieces, from which daily figures are sums.

The figures of :mod:`gateway.compliance.timeline` need every heartbeat in arrival order (a
heartbeat is live until the next one arrives), which no continuous aggregate can express.
So the supervisor writes the timeline itself: pieces of constant state, none crossing a
local midnight, each stamped with what a plain ``GROUP BY day`` needs to give exactly the
figures :func:`~gateway.compliance.timeline.camera_figures` gives for that day:

- ``online``: the camera is online throughout (its online time is the sum of their lengths);
- ``outage_start``: the piece begins a stretch of offline time within its day (outages are
  counted per day, so a stretch crossing midnight starts again at midnight);
- ``outage_since``: where the piece's offline stretch began, no earlier than its day's start
  (the longest outage of a day is the largest ``until - outage_since``);
- ``heard``: a heartbeat is live during the piece (or, as a zero-length piece at a midnight, it
  expires exactly then: the period on its other side still heard from it);
- ``delay_s``: set on the first piece of each heartbeat that arrived in the piece's range, the
  heartbeat's delay (arrival - ts); zero-length when the next heartbeat arrived at once.

Pure functions of integers (microseconds), like the timeline module; no clock, no database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.compliance.timeline import _US, Beat, CameraFigures, _coverage, _s, _sorted, percentile

DayStart = Callable[[int], int]  # microseconds -> the start (µs) of the day containing it


def micros(value: datetime) -> int:
    """An aware datetime as whole microseconds since the epoch (the timeline's unit)."""
    return round(value.timestamp() * _US)


def local_days(zone: str) -> tuple[DayStart, DayStart]:
    """(start of the day containing t, start of the next day) in time zone ``zone``, in µs."""
    tz = ZoneInfo(zone)

    def midnight(t: int, days_after: int) -> int:
        local = datetime.fromtimestamp(t / _US, tz)
        day = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(days=days_after)
        return round(day.timestamp() * _US)

    return (lambda t: midnight(t, 0)), (lambda t: midnight(t, 1))


@dataclass(frozen=True, slots=True)
class Piece:
    since: int
    until: int
    online: bool
    heard: bool
    outage_start: bool = False
    outage_since: int | None = None
    delay_s: float | None = None

    @property
    def length(self) -> int:
        return self.until - self.since


@dataclass(frozen=True, slots=True)
class Prior:
    """The last piece of positive length written before a run's start: the outage it continues."""

    since: int
    online: bool
    outage_since: int | None


def timeline_pieces(
    beats: Iterable[Beat],
    *,
    start: int,
    end: int,
    timeout_us: int,
    day_start: DayStart,
    next_day: DayStart,
    prior: Prior | None,
) -> list[Piece]:
    """The pieces covering [start, end) in order.

    ``beats`` are the camera's heartbeats that arrived in [start - timeout, end) (older ones
    change nothing); those that arrived before ``start`` only extend their liveness into the
    range, their delays belong to an earlier run. ``prior`` is the last positive piece before
    ``start`` (None when the timeline starts here).
    """
    if end <= start:
        return []
    ordered = [b for b in _sorted(beats) if b[0] < end]
    spans = _coverage(ordered, end, timeout_us)
    raw: list[Piece] = []
    position = start
    for (arrival, until, ok), (_, ts, _ok) in zip(spans, ordered, strict=True):
        arrived_here = arrival >= start
        if arrival > position:  # nothing live between the previous heartbeat's liveness and this one
            raw.append(Piece(position, arrival, online=False, heard=False))
        lo, hi = max(arrival, start), min(until, end)
        if arrived_here or hi > lo:
            delay = (arrival - ts) / _US if arrived_here else None
            raw.append(Piece(lo, max(lo, hi), online=ok, heard=True, delay_s=delay))
        position = max(position, hi)
        expires_at_midnight = until == arrival + timeout_us and until == day_start(until) and until > arrival
        if expires_at_midnight and start <= until < end:
            raw.append(Piece(until, until, online=False, heard=True))
    if position < end:
        raw.append(Piece(position, end, online=False, heard=False))
    return _mark_outages(_split_at_midnight(raw, next_day), day_start, prior)


def _split_at_midnight(pieces: list[Piece], next_day: DayStart) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        rest = piece
        while rest.length > 0 and next_day(rest.since) < rest.until:
            cut = next_day(rest.since)
            out.append(replace(rest, until=cut))
            rest = replace(rest, since=cut, delay_s=None)
        out.append(rest)
    return out


def _mark_outages(pieces: list[Piece], day_start: DayStart, prior: Prior | None) -> list[Piece]:
    out: list[Piece] = []
    last = prior
    for piece in pieces:
        if piece.length == 0:
            out.append(piece)
            continue
        if piece.online:
            marked = piece
        elif last is None or last.online or day_start(last.since) != day_start(piece.since):
            marked = replace(piece, outage_start=True, outage_since=piece.since)
        else:
            marked = replace(piece, outage_since=last.outage_since)
        out.append(marked)
        last = Prior(marked.since, marked.online, marked.outage_since)
    return out


@dataclass(frozen=True, slots=True)
class DayFigures:
    """One camera's figures for one day: the columns of ``compliance_daily`` (times in µs)."""

    day: int
    online_us: int
    outages: int
    longest_outage_us: int
    heartbeats: int
    delay_p50_s: float | None
    delay_p95_s: float | None
    reporting: bool

    def camera(self, device: str, period_us: int) -> CameraFigures:
        """The figures as :func:`~gateway.compliance.timeline.camera_figures` gives them for the day."""
        return CameraFigures(
            device=device,
            online_s=_s(self.online_us),
            period_s=_s(period_us),
            online_share=self.online_us / period_us,
            outages=self.outages,
            longest_outage_s=_s(self.longest_outage_us),
            delay_p50_s=self.delay_p50_s,
            delay_p95_s=self.delay_p95_s,
            reporting=self.reporting,
            heartbeats=self.heartbeats,
        )


def absent_day(day: int, period_us: int) -> DayFigures:
    """A day without pieces: before the camera's first heartbeat, so offline throughout."""
    return DayFigures(day, 0, 1, period_us, 0, None, None, False)


def day_figures(pieces: Iterable[Piece], day_start: DayStart) -> list[DayFigures]:
    """What ``GROUP BY day`` over the pieces gives (the rollup's SQL makes the same sums)."""
    by_day: dict[int, list[Piece]] = {}
    for piece in pieces:
        by_day.setdefault(day_start(piece.since), []).append(piece)
    result = []
    for day, group in sorted(by_day.items()):
        delays = [p.delay_s for p in group if p.delay_s is not None]
        p50, p95 = percentile(delays, 0.5), percentile(delays, 0.95)
        result.append(DayFigures(
            day=day,
            online_us=sum(p.length for p in group if p.online),
            outages=sum(p.outage_start for p in group),
            longest_outage_us=max(
                (p.until - p.outage_since for p in group if not p.online and p.outage_since is not None), default=0
            ),
            heartbeats=len(delays),
            delay_p50_s=None if p50 is None else round(p50, 6),
            delay_p95_s=None if p95 is None else round(p95, 6),
            reporting=any(p.heard for p in group),
        ))
    return result
