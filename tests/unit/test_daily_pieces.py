"""Day pieces summed per day give exactly what the on-request figures give for that day,
whether the timeline is written in one run or in many (the supervisor writes it every minute)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.compliance.daily import Piece, Prior, day_figures, local_days, timeline_pieces
from gateway.compliance.timeline import Beat, CameraFigures, camera_figures

US = 1_000_000
DAY_S = 1_000  # a short synthetic "day", so that random histories cross many midnights


def day_start(t: int) -> int:
    return t - t % (DAY_S * US)


def next_day(t: int) -> int:
    return day_start(t) + DAY_S * US


def pieces_in_runs(beats: list[Beat], cuts: list[int], timeout_s: int) -> list[Piece]:
    """Write the timeline as the supervisor does: run after run, each from where the last stopped."""
    written: list[Piece] = []
    for start, end in itertools.pairwise(cuts):
        positive = [p for p in written if p.length > 0]
        prior = Prior(positive[-1].since, positive[-1].online, positive[-1].outage_since) if positive else None
        fetched = [b for b in beats if start / US - timeout_s <= b.arrival < end / US]
        written += timeline_pieces(fetched, start=start, end=end, timeout_us=timeout_s * US,
                                   day_start=day_start, next_day=next_day, prior=prior)
    return written


def on_request(beats: list[Beat], day: int, timeout_s: int) -> CameraFigures:
    start, end = day / US, day / US + DAY_S
    return camera_figures("cam", [b for b in beats if start - timeout_s <= b.arrival < end],
                          start=start, end=end, timeout_s=timeout_s)


beat_lists = st.lists(
    st.tuples(
        st.integers(0, 5 * DAY_S),  # arrival, whole seconds: exact boundary cases are frequent
        st.integers(0, 30),  # delay
        st.booleans() | st.just(True),  # stream ok (mostly)
    ),
    max_size=60,
).map(lambda raw: [Beat(float(a), float(a - d), ok) for a, d, ok in raw])


@settings(max_examples=400, deadline=None)
@given(beats=beat_lists, timeout_s=st.sampled_from([1, 45, 90, 400]),
       cut_offsets=st.lists(st.integers(1, 6 * DAY_S), max_size=6))
def test_day_sums_equal_on_request_figures(beats: list[Beat], timeout_s: int, cut_offsets: list[int]) -> None:
    if not beats:
        return
    first = day_start(int(min(b.arrival for b in beats) * US))
    end = first + 6 * DAY_S * US
    cuts = sorted({first, end, *(first + c * US for c in cut_offsets if first + c * US < end)})
    pieces = pieces_in_runs(beats, cuts, timeout_s)

    # Contiguous, inside [first, end), none across a midnight.
    positive = [p for p in pieces if p.length > 0]
    assert positive[0].since == first
    assert positive[-1].until == end
    assert all(a.until == b.since for a, b in itertools.pairwise(positive))
    assert all(day_start(p.since) == day_start(p.until - 1) for p in positive)

    stored = {f.day: f for f in day_figures(pieces, day_start)}
    for day in range(first, end, DAY_S * US):
        assert stored[day].camera("cam", DAY_S * US) == on_request(beats, day, timeout_s)
    # Every heartbeat that arrived in the range is counted once, whatever the runs.
    assert sum(f.heartbeats for f in stored.values()) == sum(1 for b in beats if b.arrival * US < end)


def test_a_silent_stretch_over_midnight_is_an_outage_on_each_day() -> None:
    # Day 0: silent until 900, online 900-950 (timeout 50), silent 950 to midnight.
    # Day 1: the same silence until 1,100, online 1,100-1,150, silent to its end.
    beats = [Beat(900.0, 899.0, True), Beat(1_100.0, 1_099.0, True)]
    pieces = timeline_pieces(beats, start=0, end=2_000 * US, timeout_us=50 * US,
                             day_start=day_start, next_day=next_day, prior=None)
    figures = day_figures(pieces, day_start)
    assert [(f.outages, f.longest_outage_us, f.online_us) for f in figures] == [
        (2, 900 * US, 50 * US), (2, 850 * US, 50 * US)]


def test_liveness_ending_exactly_at_midnight_reports_on_the_next_day() -> None:
    beats = [Beat(950.0, 950.0, True)]  # timeout 50: live until 1,000 exactly, "no more than" the timeout
    pieces = timeline_pieces(beats, start=0, end=2_000 * US, timeout_us=50 * US,
                             day_start=day_start, next_day=next_day, prior=None)
    second = day_figures(pieces, day_start)[1]
    assert second.reporting
    assert second.online_us == 0
    assert second.outages == 1
    assert on_request(beats, 1_000 * US, 50).reporting


def test_local_days_follow_the_zone() -> None:
    start_of, next_of = local_days("Asia/Shanghai")
    t = 1_740_787_200 * US  # 2025-03-01T00:00:00Z = 08:00 in Shanghai
    assert start_of(t) == t - 8 * 3600 * US
    assert next_of(t) == t + 16 * 3600 * US
