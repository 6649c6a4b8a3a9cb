"""Real-time interface compliance of DESIGN section 5 as pure functions: heartbeats in, figures out.

No clock or database here. A camera is *online* at instant t when its latest heartbeat that
arrived at or before t arrived no more than ``timeout_s`` (``heartbeat_s x missed_heartbeats``)
before t and said ``stream: ok``. Everything is measured over the half-open period [start, end).

Times are epoch seconds as floats at the interface. Inside, they are whole microseconds (the
resolution of PostgreSQL timestamps), so that "no more than the timeout" and "arrived exactly when
the previous heartbeat expired" are decided exactly rather than by floating-point luck; a time
finer than a microsecond is rounded to the nearest microsecond.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Beat:
    """One camera heartbeat: when it arrived at the gateway, its sender time, and its stream state."""

    arrival: float
    ts: float
    stream_ok: bool


@dataclass(frozen=True, slots=True)
class CameraFigures:
    """A camera's figures over one period."""

    device: str
    online_s: float
    period_s: float
    online_share: float
    outages: int
    longest_outage_s: float
    delay_p50_s: float | None
    delay_p95_s: float | None
    reporting: bool  # heard from (any stream state) at some instant of the period
    heartbeats: int  # heartbeats that arrived within the period


@dataclass(frozen=True, slots=True)
class Verdict:
    """``compliant`` is None when there is nothing to judge (the site was not reporting yet);
    ``reasons`` are English text (CLI, logs), ``codes`` the same as ``{"code": ..., params}``
    for translation (gateway/compliance/reasons.py, the console)."""

    compliant: bool | None
    reasons: list[str]
    cameras_reporting: int
    codes: list[dict[str, Any]] = field(default_factory=list)


NOT_YET_REPORTING = "not_yet_reporting"


def not_yet_reporting(cameras_required: int) -> Verdict:
    """No verdict: the period ended before the site was registered or its agent first reported."""
    return Verdict(compliant=None, reasons=["not yet reporting"], cameras_reporting=0,
                   codes=[{"code": NOT_YET_REPORTING, "required": cameras_required}])


def _us(seconds: float) -> int:
    return round(seconds * _US)


def _s(microseconds: float) -> float:
    return microseconds / _US


def online_intervals(
    beats: Iterable[Beat], *, start: float, end: float, timeout_s: float
) -> list[tuple[float, float]]:
    """The maximal online stretches within [start, end), as (from, to) epoch seconds, in order."""
    return [(_s(a), _s(b)) for a, b in _online_us(_sorted(beats), _us(start), _us(end), _us(timeout_s))]


def _sorted(beats: Iterable[Beat]) -> list[tuple[int, int, bool]]:
    # The latest heartbeat at t is the last one in arrival order; equal arrivals keep the newer ts last.
    return sorted((_us(b.arrival), _us(b.ts), b.stream_ok) for b in beats)


def _coverage(beats: list[tuple[int, int, bool]], end: int, timeout: int) -> list[tuple[int, int, bool]]:
    """Per heartbeat arrived before ``end``: (arrival, last instant it is the live one, stream ok).

    A heartbeat is the latest one from its arrival until the next arrival (exclusive), and
    counts for at most ``timeout`` after its arrival (inclusive: DESIGN says "no more than").
    """
    beats = [b for b in beats if b[0] < end]
    spans = []
    for i, (arrival, _ts, ok) in enumerate(beats):
        until = arrival + timeout
        if i + 1 < len(beats):
            until = min(until, beats[i + 1][0])
        spans.append((arrival, until, ok))
    return spans


def _online_us(beats: list[tuple[int, int, bool]], start: int, end: int, timeout: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for arrival, until, ok in _coverage(beats, end, timeout):
        lo, hi = max(arrival, start), min(until, end)
        if not ok or hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:  # touching stretches are one: no instant in between is offline
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks, as PostgreSQL's
    ``percentile_cont``; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def camera_figures(
    device: str, beats: Iterable[Beat], *, start: float, end: float, timeout_s: float
) -> CameraFigures:
    """Online share, outages and delay of one camera over [start, end).

    ``beats`` are its heartbeats that arrived in the period and just before it (any arrived
    before ``start - timeout_s`` changes nothing); a camera with none has share 0 and one outage
    as long as the period. Delays (arrival - ts) are taken over the heartbeats that arrived
    within the period.
    """
    lo, hi, timeout = _us(start), _us(end), _us(timeout_s)
    if hi <= lo:
        raise ValueError("the period must end after it starts")
    if timeout <= 0:
        raise ValueError("the timeout must be positive")
    ordered = _sorted(beats)
    online = _online_us(ordered, lo, hi, timeout)
    gaps: list[int] = []
    position = lo
    for a, b in [*online, (hi, hi)]:
        if a > position:
            gaps.append(a - position)
        position = b
    online_us = sum(b - a for a, b in online)
    in_period = [(arrival, ts) for arrival, ts, _ok in ordered if lo <= arrival < hi]
    delays = [_s(arrival - ts) for arrival, ts in in_period]
    p50, p95 = percentile(delays, 0.5), percentile(delays, 0.95)
    return CameraFigures(
        device=device,
        online_s=_s(online_us),
        period_s=_s(hi - lo),
        online_share=online_us / (hi - lo),
        outages=len(gaps),
        longest_outage_s=_s(max(gaps, default=0)),
        delay_p50_s=None if p50 is None else round(p50, 6),
        delay_p95_s=None if p95 is None else round(p95, 6),
        reporting=any(until >= lo for _a, until, _ok in _coverage(ordered, hi, timeout)),
        heartbeats=len(in_period),
    )


def _shown(value: float, holds: bool, bound: float) -> str:
    """``value`` with one decimal, or as many more (up to 6) as it takes not to look like ``bound``."""
    for decimals in range(1, 7):
        text = f"{value:.{decimals}f}"
        if (float(text) < bound) if holds else (float(text) > bound):
            return text
    return repr(value)


# Real-time interface thresholds (DESIGN section 5): the defaults of compliance_online_share and
# compliance_delay_p50_s, defined here only.
ONLINE_SHARE = 0.99
DELAY_P50_S = 10.0


def verdict(
    cameras: Sequence[CameraFigures], *, cameras_required: int, online_share: float, delay_p50_s: float
) -> Verdict:
    """Compliant iff every camera's online share >= ``online_share``, every camera's median delay
    <= ``delay_p50_s`` and at least ``cameras_required`` cameras reporting; otherwise the reasons."""
    reasons: list[str] = []
    codes: list[dict[str, Any]] = []
    limit_pct = online_share * 100
    for camera in sorted(cameras, key=lambda c: c.device):
        if camera.online_share < online_share:
            pct = _shown(camera.online_share * 100, True, limit_pct)
            reasons.append(f"{camera.device} online {pct} % < {limit_pct:g} %")
            codes.append({"code": "camera_online_below", "device": camera.device, "pct": float(pct),
                          "limit_pct": limit_pct, "longest_outage_s": camera.longest_outage_s})
        if camera.delay_p50_s is not None and camera.delay_p50_s > delay_p50_s:
            shown = _shown(camera.delay_p50_s, False, delay_p50_s)
            reasons.append(f"{camera.device} median delay {shown} s > {delay_p50_s:g} s")
            codes.append({"code": "camera_delay_above", "device": camera.device, "delay_s": float(shown),
                          "limit_s": delay_p50_s})
    reporting = sum(1 for c in cameras if c.reporting)
    if reporting < cameras_required:
        reasons.append(f"{reporting} of {cameras_required} required cameras reporting")
        codes.append({"code": "cameras_missing", "reporting": reporting, "required": cameras_required})
    return Verdict(compliant=not reasons, reasons=reasons, cameras_reporting=reporting, codes=codes)
