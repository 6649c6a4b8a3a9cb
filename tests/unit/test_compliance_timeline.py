"""Compliance timelines (DESIGN section 5) on hand-made heartbeats, figures computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.compliance.timeline import (
    Beat,
    CameraFigures,
    camera_figures,
    online_intervals,
    percentile,
    verdict,
)

S = datetime(2025, 3, 1, tzinfo=UTC).timestamp()  # period start: midnight
HOUR = 3600.0
DAY = 86_400.0
E = S + HOUR  # a one-hour period unless a test says otherwise
T = 180.0  # timeout: heartbeat_s 60 x missed_heartbeats 3


def beat(arrival: float, ok: bool = True, delay: float = 0.05) -> Beat:
    return Beat(arrival=arrival, ts=arrival - delay, stream_ok=ok)


def every(first: float, last: float, step: float = 60.0, ok: bool = True, delay: float = 0.05) -> list[Beat]:
    """Heartbeats arriving at first, first + step, ... up to and including last."""
    n = round((last - first) / step) + 1
    return [beat(first + i * step, ok, delay) for i in range(n)]


def figures(beats: list[Beat], start: float = S, end: float = E, timeout: float = T) -> CameraFigures:
    return camera_figures("cam-1", beats, start=start, end=end, timeout_s=timeout)


# --------------------------------------------------------------------------- online share and outages


def test_steady_heartbeats_are_online_all_period() -> None:
    f = figures(every(S - 30, E + 30))
    assert (f.online_share, f.online_s, f.period_s) == (1.0, HOUR, HOUR)
    assert (f.outages, f.longest_outage_s) == (0, 0.0)
    assert f.reporting
    assert f.heartbeats == 60  # S+30 ... S+3570; the ones before S and at/after E do not count
    assert online_intervals(every(S - 30, E + 30), start=S, end=E, timeout_s=T) == [(S, E)]


def test_outage_crossing_the_start_stale_heartbeat_before_the_period() -> None:
    # Last heartbeat before the period arrived 200 s before it: 200 > 180, offline at S.
    f = figures([beat(S - 400), beat(S - 200), *every(S + 100, E - 20)])
    assert (f.outages, f.longest_outage_s) == (1, 100.0)
    assert f.online_s == HOUR - 100
    assert f.online_share == pytest.approx(3500 / 3600)


def test_outage_crossing_the_start_heartbeat_before_the_period_still_counts() -> None:
    # The heartbeat of S-100 keeps the camera online until S+80; the next arrives at S+300.
    beats = [beat(S - 100), *every(S + 300, E - 60)]
    f = figures(beats)
    assert online_intervals(beats, start=S, end=E, timeout_s=T) == [(S, S + 80), (S + 300, E)]
    assert (f.outages, f.longest_outage_s) == (1, 220.0)
    assert f.online_s == 80 + (HOUR - 300)
    assert f.reporting
    assert f.heartbeats == len(beats) - 1


def test_outage_crossing_the_end_is_cut_at_the_end() -> None:
    # Last heartbeat at S+2970 keeps the camera online until S+3150; the period ends at S+3600.
    f = figures(every(S - 30, S + 2970))
    assert (f.outages, f.longest_outage_s) == (1, 450.0)
    assert f.online_share == pytest.approx(3150 / 3600)
    assert f.online_share == 0.875


def test_outage_crossing_midnight_counts_in_both_days_and_once_over_both() -> None:
    midnight = S + DAY
    end = S + 2 * DAY
    # Steady until 23:49:30 (online until 23:52:30), silent until 00:20, steady again.
    beats = every(S - 30, midnight - 630) + every(midnight + 1200, end - 60)
    day1 = figures(beats, S, midnight)
    day2 = figures(beats, midnight, end)
    both = figures(beats, S, end)
    assert (day1.outages, day1.longest_outage_s, day1.online_s) == (1, 450.0, DAY - 450)
    assert (day2.outages, day2.longest_outage_s, day2.online_s) == (1, 1200.0, DAY - 1200)
    assert (both.outages, both.longest_outage_s, both.online_s) == (1, 1650.0, 2 * DAY - 1650)
    assert day1.online_s + day2.online_s == both.online_s
    assert day1.online_share == pytest.approx(85_950 / 86_400)
    assert both.online_share == pytest.approx(171_150 / 172_800)


def test_camera_added_mid_period_is_offline_before_its_first_heartbeat() -> None:
    f = figures(every(S + 1800, E - 60))
    assert f.online_share == 0.5
    assert (f.outages, f.longest_outage_s) == (1, 1800.0)
    assert f.reporting


def test_stream_not_ok_is_offline_even_with_fresh_heartbeats() -> None:
    beats = [
        *every(S - 30, S + 570),
        beat(S + 600, ok=False),
        beat(S + 660, ok=False),
        *every(S + 720, E),
    ]
    f = figures(beats)
    assert online_intervals(beats, start=S, end=E, timeout_s=T) == [(S, S + 600), (S + 720, E)]
    assert (f.outages, f.longest_outage_s) == (1, 120.0)
    assert f.online_s == HOUR - 120
    assert f.reporting  # a camera that reports a broken stream is still reporting


def test_stream_not_ok_before_the_period_is_offline_at_the_start() -> None:
    f = figures([beat(S - 30, ok=False), *every(S + 30, E - 30)])
    assert (f.outages, f.longest_outage_s, f.online_s) == (1, 30.0, HOUR - 30)


def test_only_broken_stream_reports_but_is_never_online() -> None:
    f = figures(every(S, E - 60, ok=False))
    assert (f.online_share, f.outages, f.longest_outage_s) == (0.0, 1, HOUR)
    assert f.reporting


@pytest.mark.parametrize(
    "beats",
    [
        [],
        [beat(S - 181)],  # expired before the period
        [beat(E), beat(E + 60)],  # arrived at or after the end: not in [S, E)
    ],
    ids=["none", "expired-before", "after-end"],
)
def test_no_data_is_share_zero_and_one_outage_as_long_as_the_period(beats: list[Beat]) -> None:
    f = figures(beats)
    assert (f.online_share, f.online_s) == (0.0, 0.0)
    assert (f.outages, f.longest_outage_s) == (1, HOUR)
    assert (f.delay_p50_s, f.delay_p95_s) == (None, None)
    assert not f.reporting
    assert f.heartbeats == 0


def test_next_heartbeat_exactly_at_the_timeout_is_no_outage() -> None:
    # "no more than timeout": at S+180 the camera is still online, and the new heartbeat takes over.
    f = figures([beat(S), beat(S + 180), beat(S + 360), beat(S + 540), *every(S + 720, E)])
    assert (f.online_share, f.outages) == (1.0, 0)


def test_next_heartbeat_one_microsecond_after_the_timeout_is_an_outage() -> None:
    f = figures([beat(S), beat(S + 180.000001), *every(S + 360, E)])
    assert f.outages == 1
    assert f.longest_outage_s == pytest.approx(1e-6)
    assert f.online_s == pytest.approx(HOUR - 1e-6)


def test_microsecond_timestamps_decide_the_boundary_exactly() -> None:
    # Epoch floats with microseconds: a + 180 may differ from the stored value by a float ulp.
    a = S + 0.123457
    beats = [beat(a + i * 180) for i in range(-1, 21)]
    f = figures(beats, start=a, end=a + 3600)
    assert (f.online_share, f.outages) == (1.0, 0)


def test_heartbeat_exactly_one_timeout_before_the_start_is_online_only_at_the_start() -> None:
    f = figures([beat(S - 180), *every(S + 50, E - 10)])
    assert f.reporting  # heard from at the instant S
    assert (f.outages, f.longest_outage_s, f.online_s) == (1, 50.0, HOUR - 50)


def test_unsorted_and_tied_heartbeats() -> None:
    # Same arrival: the one with the newer ts is the latest; here it says the stream is frozen.
    beats = [*every(S + 60, E)[::-1], Beat(S, S - 1.0, True), Beat(S, S - 0.5, False)]
    f = figures(beats)
    assert (f.outages, f.longest_outage_s) == (1, 60.0)


def test_the_period_and_timeout_must_make_sense() -> None:
    with pytest.raises(ValueError, match="end after"):
        figures([], start=S, end=S)
    with pytest.raises(ValueError, match="timeout"):
        figures([], timeout=0)


# --------------------------------------------------------------------------- delay


def test_delay_percentiles_over_heartbeats_in_the_period() -> None:
    beats = [
        beat(S - 60, delay=99.0),  # before the period: state yes, delay no
        beat(S + 60, delay=0.4),
        beat(S + 120, delay=0.1),
        beat(S + 180, delay=0.3),
        beat(S + 240, delay=0.2),
        beat(E, delay=50.0),  # at the end: not in the period
    ]
    f = figures(beats)
    assert f.heartbeats == 4
    assert f.delay_p50_s == 0.25
    assert f.delay_p95_s == 0.385  # rank 3 x 0.95 = 2.85: 0.3 + 0.85 x (0.4 - 0.3)


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.95) == pytest.approx(9.55)


# --------------------------------------------------------------------------- verdict


def cam(
    device: str, share: float, p50: float | None = 0.04, *, reporting: bool = True, period: float = HOUR
) -> CameraFigures:
    return CameraFigures(
        device=device, online_s=share * period, period_s=period, online_share=share, outages=0,
        longest_outage_s=0.0, delay_p50_s=p50, delay_p95_s=p50, reporting=reporting, heartbeats=1,
    )


def test_verdict_compliant_without_reasons() -> None:
    v = verdict([cam("cam-1", 1.0), cam("cam-2", 0.995)], cameras_required=2, online_share=0.99, delay_p50_s=10.0)
    assert (v.compliant, v.reasons, v.cameras_reporting) == (True, [], 2)


def test_verdict_of_the_design_example() -> None:
    v = verdict([cam("cam-2", 0.575), cam("cam-1", 1.0)], cameras_required=3, online_share=0.99, delay_p50_s=10.0)
    assert not v.compliant
    assert v.reasons == ["cam-2 online 57.5 % < 99 %", "2 of 3 required cameras reporting"]
    assert v.cameras_reporting == 2


def test_verdict_median_delay_over_the_limit() -> None:
    v = verdict([cam("cam-1", 1.0, 12.0)], cameras_required=1, online_share=0.99, delay_p50_s=10.0)
    assert v.reasons == ["cam-1 median delay 12.0 s > 10 s"]
    v = verdict([cam("cam-1", 1.0, 10.04)], cameras_required=1, online_share=0.99, delay_p50_s=10.0)
    assert v.reasons == ["cam-1 median delay 10.04 s > 10 s"]  # never "10.0 s > 10 s"


def test_verdict_exactly_at_the_thresholds_is_compliant() -> None:
    share = figures(every(S - 36, S + 3384)).online_share  # online until S+3564: 3564 / 3600 = 0.99
    assert share == 0.99
    v = verdict([cam("cam-1", share, 10.0)], cameras_required=1, online_share=0.99, delay_p50_s=10.0)
    assert v.compliant


def test_verdict_never_shows_a_failing_share_as_the_threshold() -> None:
    v = verdict([cam("cam-1", 0.98996)], cameras_required=1, online_share=0.99, delay_p50_s=10.0)
    assert v.reasons == ["cam-1 online 98.996 % < 99 %"]
    v = verdict([cam("cam-1", 0.9949)], cameras_required=1, online_share=0.995, delay_p50_s=10.0)
    assert v.reasons == ["cam-1 online 99.49 % < 99.5 %"]


def test_verdict_silent_camera_and_no_delay_data() -> None:
    silent = cam("cam-3", 0.0, None, reporting=False)
    v = verdict([cam("cam-1", 1.0), silent], cameras_required=2, online_share=0.99, delay_p50_s=10.0)
    assert v.reasons == ["cam-3 online 0.0 % < 99 %", "1 of 2 required cameras reporting"]


def test_verdict_site_without_cameras() -> None:
    assert verdict([], cameras_required=0, online_share=0.99, delay_p50_s=10.0).compliant
    v = verdict([], cameras_required=2, online_share=0.99, delay_p50_s=10.0)
    assert v.reasons == ["0 of 2 required cameras reporting"]
