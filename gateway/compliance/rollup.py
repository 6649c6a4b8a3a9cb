"""Daily compliance figures kept in the database (issue 6 point 1, docs/compliance.md).

The leader supervisor extends every camera's timeline (:mod:`gateway.compliance.daily`) up to a
settled horizon a minute behind now; the per-day figures are one ``GROUP BY`` over it:

- with TimescaleDB, ``compliance_daily`` is a continuous aggregate of :data:`DAILY_QUERY`
  (real-time, so what reads it directly, as Grafana does, sees the days not materialised yet);
- on plain PostgreSQL, the same query with ``date_trunc`` in place of ``time_bucket`` fills the
  ``compliance_daily`` table.

Either way :func:`rollup` materialises the days every camera's timeline has passed (INSERT, or a
refresh of the aggregate), and :func:`daily_rows` reads those as stored and aggregates the others
on read: the same code reads both paths.

Readings committed after the run that should have seen them (a late commit) are found by their
transaction id; the camera's timeline is rewritten from that heartbeat on, and the days touched
are rolled up again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.compliance.daily import DayFigures, DayStart, Piece, Prior, local_days, micros, timeline_pieces
from gateway.compliance.timeline import _US, Beat
from gateway.rules.engine import Heartbeats
from gateway.store import compliance as store
from gateway.store.daily import is_continuous_aggregate
from gateway.store.db import Conn, from_epoch

log = logging.getLogger(__name__)

@dataclass(slots=True)
class Advance:
    """What one run did."""

    horizon: float
    behind: int = 0  # cameras not brought up to the horizon by this run (each run writes at most max_span_s)
    furthest_behind: float | None = None  # where the camera furthest behind now stands (epoch s)
    cameras: int = 0
    pieces: int = 0
    rewritten: list[tuple[str, str]] = field(default_factory=list)  # cameras rewritten after late readings
    touched_from: int | None = None  # earliest µs written for new or rewritten cameras (days to roll up again)


@dataclass(slots=True)
class _Camera:
    site: str
    device: str
    timeout_us: int
    start: int
    end: int  # this run writes [start, end)
    rewrite: bool  # its timeline is rewritten from ``start`` (late readings)
    new: bool = False  # first heard of: its timeline begins at ``start``
    prior: Prior | None = None
    prior_until: int | None = None
    prior_heard: bool = False
    beats: list[Beat] = field(default_factory=list)


def _at(us: int) -> Any:
    return from_epoch(us / _US)


def advance(
    conn: Conn, now: float, *, settle_s: float, zone: str, heartbeats: Heartbeats, max_span_s: float = 3600.0,
) -> Advance:
    """Extend every camera's timeline to ``now - settle_s``; rewrite those with late readings.

    A run writes at most ``max_span_s`` of each camera's timeline, so that taking in a long
    history (the first run on an existing database) is many bounded runs: ``behind`` counts
    the cameras still short of the horizon.
    """
    day_start, next_day = local_days(zone)
    horizon = round((now - settle_s) * _US)
    result = Advance(horizon=horizon / _US)
    # A session lock, taken before the transaction: its snapshot must not predate another writer's commit.
    store.lock_timeline(conn)
    conn.commit()
    try:
        with conn.transaction():
            # One snapshot for every statement: the next run treats what it did not show as new.
            store.repeatable_read(conn)
            row = store.progress_snapshot(conn)
            seen, snapshot = (row["snapshot"], row["now"]) if row else (None, None)
            planned = _plan(conn, seen, horizon, day_start, heartbeats, round(max_span_s * _US))
            cameras = [c for c in planned if c.start < horizon]
            # First heard of, but their day starts past the horizon: a cursor, so they are not forgotten.
            _start_cursors(conn, [c for c in planned if c.start >= horizon])
            _load_priors(conn, cameras)
            _load_beats(conn, cameras)
            written: list[tuple[_Camera, Piece]] = []
            extended: list[tuple[_Camera, int]] = []
            for camera in cameras:
                pieces = timeline_pieces(camera.beats, start=camera.start, end=camera.end,
                                         timeout_us=camera.timeout_us, day_start=day_start, next_day=next_day,
                                         prior=camera.prior)
                if pieces and _continues(camera, pieces[0], day_start):
                    extended.append((camera, pieces.pop(0).until))
                written += [(camera, p) for p in pieces]
                if camera.rewrite:
                    result.rewritten.append((camera.site, camera.device))
                if camera.rewrite or camera.new:  # days behind the rollup may have changed
                    result.touched_from = min(camera.start, result.touched_from or camera.start)
            _store(conn, written, extended, cameras)
            touched = None if result.touched_from is None else _at(day_start(result.touched_from))
            store.set_progress(conn, str(snapshot), _at(horizon), touched)
            result.behind = sum(1 for c in cameras if c.end < horizon)
    finally:
        store.unlock_timeline(conn)
        conn.commit()
    result.cameras, result.pieces = len(cameras), len(written)
    if result.rewritten:
        log.info("compliance timeline rewritten after late readings: %s", result.rewritten)
    if result.behind:
        result.furthest_behind = min(c.end for c in cameras) / _US
    return result


def catch_up(
    conn: Conn, now: float, *, settle_s: float, zone: str, heartbeats: Heartbeats, budget_s: float | None = None,
    max_span_s: float = 3600.0,
) -> Advance:
    """:func:`advance` run after run until no camera is behind, or for at most ``budget_s`` of
    wall time (then the caller comes back later). What the runs did together (``behind`` and
    ``cameras`` are the last run's)."""
    deadline = None if budget_s is None else time.monotonic() + budget_s
    total: Advance | None = None
    runs = 0
    while True:
        done = advance(conn, now, settle_s=settle_s, zone=zone, heartbeats=heartbeats, max_span_s=max_span_s)
        if total is not None:
            done.pieces += total.pieces
            done.rewritten = sorted({*total.rewritten, *done.rewritten})
            if total.touched_from is not None:
                done.touched_from = min(total.touched_from, done.touched_from or total.touched_from)
        total, runs = done, runs + 1
        if not done.behind or (deadline is not None and time.monotonic() > deadline):
            if done.behind and done.furthest_behind is not None:
                log.info("compliance timeline catching up: %d cameras behind after %d runs, the furthest at %s",
                         done.behind, runs, from_epoch(done.furthest_behind).isoformat())
            return total


def _plan(
    conn: Conn, seen: Any, horizon: int, day_start: DayStart, heartbeats: Heartbeats, max_span: int,
) -> list[_Camera]:
    """The cameras to extend and where each run starts: its cursor, or earlier for late readings.

    Readings the last run could not see (``seen``: its snapshot) are new: a camera first heard of
    starts its timeline at the start of that day; one whose new readings arrived before its
    cursor (committed late) is rewritten from the piece where the earliest of them arrived.
    """
    rows = store.cameras_to_extend(conn, seen, heartbeats=heartbeats)
    cameras = []
    for row in rows:
        timeout_us = round(row["timeout_s"] * _US)
        if row["upto"] is None:  # first heard of: the timeline begins at the start of that day
            start, rewrite = day_start(micros(row["first"])), False
        elif row["first"] is not None and row["first"] < row["upto"]:  # committed after a run passed it
            late, piece = micros(row["first"]), row["first_piece"]
            # From the piece it falls in; before the timeline's first piece, from the start of its day.
            start = micros(piece) if piece is not None and micros(piece) <= late else day_start(late)
            rewrite = True
        else:
            start, rewrite = micros(row["upto"]), False
        end = min(horizon, start + max_span)
        cameras.append(_Camera(row["site"], row["device"], timeout_us, start, end, rewrite, new=row["upto"] is None))
    return cameras


def _arrays(cameras: Iterable[_Camera]) -> store.CameraSpans:
    cameras = list(cameras)
    return {
        "sites": [c.site for c in cameras],
        "devices": [c.device for c in cameras],
        "starts": [_at(c.start) for c in cameras],
        "ends": [_at(c.end) for c in cameras],
        "timeouts": [c.timeout_us / _US for c in cameras],
    }


def _load_priors(conn: Conn, cameras: list[_Camera]) -> None:
    """The last positive piece before each start (the outage it continues); drop what is rewritten."""
    rewritten = [c for c in cameras if c.rewrite]
    if rewritten:
        store.drop_pieces_from(conn, _arrays(rewritten))
    for camera, row in _per_camera(cameras, store.last_pieces(conn, _arrays(cameras))):
        since = None if row["outage_since"] is None else micros(row["outage_since"])
        camera.prior = Prior(micros(row["since"]), row["online"], since)
        camera.prior_until = micros(row["until"])
        camera.prior_heard = row["heard"]


def _load_beats(conn: Conn, cameras: list[_Camera]) -> None:
    """Each camera's heartbeats that arrived in [start - timeout, end)."""
    for camera, row in _per_camera(cameras, store.span_heartbeats(conn, _arrays(cameras))):
        camera.beats.append(Beat(row["arrival"], row["ts"], bool(row["ok"])))


def _per_camera(cameras: list[_Camera], rows: Iterable[Any]) -> Iterator[tuple[_Camera, Any]]:
    """The rows of a query over the cameras' arrays, each with its camera."""
    by_key = {(c.site, c.device): c for c in cameras}
    for row in rows:
        yield by_key[(row["site"], row["device"])], row


def _continues(camera: _Camera, first: Piece, day_start: DayStart) -> bool:
    """The run's first piece only carries on the last one written: lengthen that instead."""
    prior = camera.prior
    return (
        prior is not None and camera.prior_until == first.since and first.length > 0 and first.delay_s is None
        and camera.prior_heard == first.heard and not first.outage_start
        and prior.online == first.online and prior.outage_since == first.outage_since
        and day_start(prior.since) == day_start(first.since)
    )


def _start_cursors(conn: Conn, cameras: list[_Camera]) -> None:
    if cameras:
        store.start_cursors(conn, _arrays(cameras))


def _store(
    conn: Conn, written: list[tuple[_Camera, Piece]], extended: list[tuple[_Camera, int]], cameras: list[_Camera]
) -> None:
    if extended:
        store.lengthen_pieces(conn, [(_at(until), c.site, c.device, _at(c.prior.since), _at(c.prior_until))
                                     for c, until in extended if c.prior is not None and c.prior_until is not None])
    if written:
        store.copy_pieces(conn, (
            (camera.site, camera.device, _at(p.since), _at(p.until), p.online, p.heard, p.outage_start,
             None if p.outage_since is None else _at(p.outage_since), p.delay_s)
            for camera, p in written
        ))
    if cameras:
        store.set_cursors(conn, _arrays(cameras))


def rollup(conn: Conn, *, zone: str) -> int:
    """Materialise the days every cursor has passed (again for rewritten days): INSERT into the
    ``compliance_daily`` table on plain PostgreSQL, a refresh of the continuous aggregate over the
    same days on TimescaleDB. ``timeline_progress.materialized_until`` records how far, on both.

    Returns the number of (camera, day) rows written.
    """
    day_start, _ = local_days(zone)
    continuous = is_continuous_aggregate(conn)
    with conn.transaction():
        row = store.progress_for_update(conn)
        if row is None or row["horizon"] is None:
            return 0
        complete_until = day_start(micros(row["horizon"]))
        if row["materialized_until"] is not None:
            lo = micros(row["materialized_until"])
        else:
            since = store.first_piece_since(conn)
            lo = day_start(micros(since)) if since is not None else complete_until
        span = (_at(lo), _at(complete_until), zone, row["materialized_until"])
        written = 0
        if lo < complete_until and not continuous:
            written = store.write_plain_days(conn, *span)
    if lo < complete_until and continuous:
        store.refresh_continuous_aggregate(conn, span[0], span[1])
        written = store.count_days(conn, *span)
    with conn.transaction():
        store.mark_materialized(conn, *span)
    return written


def daily_rows(conn: Conn, site: str, start: int, end: int, *, zone: str) -> list[tuple[str, DayFigures]]:
    """(device, figures) of ``site`` for the days starting in [start, end): the days materialised
    by :func:`rollup` as stored, the others aggregated here from the timeline (on both paths, so a
    day rewritten after late readings reads right before it is materialised again)."""
    return [
        (
            row["device"],
            DayFigures(
                day=micros(row["day"]),
                online_us=int(row["online_us"]),
                outages=int(row["outages"]),
                longest_outage_us=int(row["longest_outage_us"]),
                heartbeats=int(row["heartbeats"]),
                delay_p50_s=None if row["delay_p50_s"] is None else round(row["delay_p50_s"], 6),
                delay_p95_s=None if row["delay_p95_s"] is None else round(row["delay_p95_s"], 6),
                reporting=bool(row["reporting"]),
            ),
        )
        for row in store.daily_rows(conn, site, _at(start), _at(end), zone=zone)
    ]
