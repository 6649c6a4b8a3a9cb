"""The scenario checker's verdicts (pure) and the speed-up of a scenario."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from protocol import Alert, AlertKind, AlertState, Severity, alert_key
from simulators.scenario import Scenario, SeenAlert, fleet, judge


def scenario(**extra: Any) -> Scenario:
    base: dict[str, Any] = {"name": "t", "duration": 20, "sites": [{"id": "a"}, {"id": "b"}]}
    return Scenario.model_validate({**base, **extra})


def seen(t: float, kind: str, site: str = "a", device: str | None = "smoke-1", state: str = "open",
         count: int = 1) -> SeenAlert:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    alert = Alert(id=1, key=alert_key(site, device, kind), site=site, device=device, kind=AlertKind(kind),
                  severity=Severity.MAJOR, state=AlertState(state), opened_at=at, updated_at=at, count=count)
    return SeenAlert(t, alert)


def test_expected_alert_in_time_passes_with_its_delay() -> None:
    s = scenario(expect=[{"kind": "fire_alarm", "site": "a", "device": "smoke-1", "at": 2, "within": 5}])
    (verdict,) = judge(s, [seen(3.25, "fire_alarm")])
    assert verdict.ok
    assert verdict.delay_s == pytest.approx(1.25)
    assert verdict.detail == "after 1.25 s"


@pytest.mark.parametrize(
    ("alerts", "detail"),
    [
        ([], "never happened"),
        ([seen(7.5, "fire_alarm")], "after 5.50 s"),  # too late
        ([seen(3, "fire_alarm", device="smoke-2")], "never happened"),  # another device
        ([seen(3, "fire_alarm", site="b")], "never happened"),  # another site
        ([seen(3, "fire_alarm", state="resolved")], "never happened"),  # not the state expected
        ([seen(1.0, "fire_alarm")], "never happened"),  # before `at` (beyond the 0.5 s tolerance)
    ],
)
def test_expected_alert_missing_or_late_fails(alerts: list[SeenAlert], detail: str) -> None:
    s = scenario(expect=[{"kind": "fire_alarm", "site": "a", "device": "smoke-1", "at": 2, "within": 5}])
    (verdict,) = judge(s, alerts)
    assert not verdict.ok
    assert verdict.detail == detail


def test_resolution_is_an_expectation_of_its_own() -> None:
    s = scenario(expect=[{"kind": "exit_blocked", "site": "a", "device": "exit-1", "state": "resolved", "at": 8,
                          "within": 3}])
    alerts = [seen(2.2, "exit_blocked", device="exit-1"), seen(8.4, "exit_blocked", device="exit-1",
                                                               state="resolved")]
    assert judge(s, alerts)[0].ok


def test_site_level_expectation_matches_device_null_only() -> None:
    s = scenario(expect=[{"kind": "agent_offline", "site": "a", "at": 1, "within": 3}])
    assert not judge(s, [seen(2, "agent_offline", device="cam-1")])[0].ok
    assert judge(s, [seen(2, "agent_offline", device=None)])[0].ok


def test_forbid_any_kind_anywhere() -> None:
    s = scenario(forbid=[{"kind": "any"}])
    assert judge(s, [])[0].ok
    verdict = judge(s, [seen(4, "camera_offline", site="b", device="cam-2")])[0]
    assert not verdict.ok
    assert verdict.detail == "raised: camera_offline@b/cam-2"


def test_forbid_counts_openings_not_later_changes() -> None:
    s = scenario(forbid=[{"kind": "fire_alarm", "site": "a"}])
    # A repeat (count 2) or an acknowledgement of an alert opened before the run is not an opening.
    assert judge(s, [seen(3, "fire_alarm", count=2), seen(4, "fire_alarm", state="acknowledged")])[0].ok
    assert not judge(s, [seen(3, "fire_alarm")])[0].ok


def test_forbid_on_one_device_ignores_the_others() -> None:
    s = scenario(forbid=[{"kind": "fire_alarm", "site": "a", "device": "smoke-2"}])
    assert judge(s, [seen(3, "fire_alarm", device="smoke-1")])[0].ok
    assert not judge(s, [seen(3, "fire_alarm", device="smoke-2")])[0].ok


def test_speed_up_divides_every_time() -> None:
    s = scenario(
        heartbeat_s=4,
        max_delay_s=2,
        events=[{"at": 4, "site": "a", "do": "partition", "until": 8}],
        expect=[{"kind": "camera_offline", "site": "a", "device": "cam-1", "at": 4, "within": 12}],
    )
    fast = s.scaled(4)
    assert (fast.heartbeat_s, fast.duration, fast.max_delay_s) == (1, 5, 0.5)
    assert (fast.events[0].at, fast.events[0].until) == (1, 2)
    assert (fast.expect[0].at, fast.expect[0].within) == (1, 3)
    assert s.scaled(1) is s
    with pytest.raises(ValueError, match="positive"):
        s.scaled(0)


def test_fleet_is_named_and_sized() -> None:
    f = fleet(3, cameras=1, smoke=2, exits=0, prefix="x")
    assert [site.id for site in f.sites] == ["x-0001", "x-0002", "x-0003"]
    assert (f.sites[0].cameras, f.sites[0].smoke, f.sites[0].exits) == (["cam-1"], ["smoke-1", "smoke-2"], [])
    with pytest.raises(ValueError, match="at least 1"):
        fleet(0)
