"""The notifier's decisions (gateway/notify/routing.py): routes, steps, digests, suppression, backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.config import ConfigError, load_settings
from gateway.notify.config import NotifyConfig
from gateway.notify.routing import (
    AlertEvent,
    Told,
    backoff_s,
    channel_failing,
    digest_due,
    failing_since,
    plan,
)
from gateway.rules.engine import apply, evaluate_notifier
from gateway.rules.model import AlertKind, Raise, Resolve

CHANNELS = {
    "inst": {"type": "wecom", "url": "http://127.0.0.1:1/inst"},
    "county": {"type": "dingtalk", "url": "http://127.0.0.1:1/county", "secret": "SECxyz"},
    "city": {"type": "webhook", "url": "http://127.0.0.1:1/city", "secret": "0123456789abcdef"},
    "mail": {"type": "email", "host": "127.0.0.1", "sender": "sg@example.org", "to": ["duty@example.org"]},
}
ROUTES = [
    {"name": "xihu", "match": {"county": ["Xihu"]},
     "steps": [{"after_s": 0, "channels": ["inst"]}, {"after_s": 60, "channels": ["county"]},
               {"after_s": 300, "channels": ["city", "mail"]}]},
    {"name": "city-fire", "match": {"city": ["Hangzhou"], "kind": ["fire_alarm"]},
     "steps": [{"after_s": 300, "channels": ["city"]}, {"after_s": 600, "channels": ["inst"]}]},
]
# 2026-12-01 10:00 in Shanghai (UTC+8)
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC).timestamp()


def config(**extra: Any) -> NotifyConfig:
    return NotifyConfig.model_validate({"channels": CHANNELS, "routes": ROUTES, **extra})


def event(action: str = "opened", *, kind: str = "fire_alarm", severity: str = "critical", county: str = "Xihu",
          at: float = T0, site: str = "s1", device: str | None = "smoke-1") -> AlertEvent:
    return AlertEvent(history_id=1, alert_id=7, action=action, at=at, site=site, device=device, kind=kind,
                      severity=severity, opened_at=T0, county=county, city="Hangzhou")


def test_a_critical_alert_is_planned_in_the_routes_steps_each_channel_once_at_its_earliest() -> None:
    planned = plan(config(), event()).deliveries
    assert [(p.channel, p.route, p.step, p.due_at - T0) for p in planned] == [
        ("inst", "xihu", 0, 0.0), ("county", "xihu", 1, 60.0), ("city", "xihu", 2, 300.0), ("mail", "xihu", 2, 300.0),
    ]
    assert {p.purpose for p in planned} == {"alert"}
    assert all(p.suppressed is None for p in planned)


def test_routes_match_on_every_field_given() -> None:
    assert plan(config(), event(county="Shangcheng", kind="exit_blocked", severity="major")).deliveries == ()
    other_county = plan(config(), event(county="Shangcheng")).deliveries  # the city route only
    assert [(p.channel, p.step) for p in other_county] == [("city", 0), ("inst", 1)]


def test_minor_alerts_become_digest_items_at_the_next_interval_never_pages() -> None:
    cfg = config(digest_interval_s=900)
    planned = plan(cfg, event(kind="detector_fault", severity="minor", at=T0 + 10)).deliveries
    assert [(p.purpose, p.channel) for p in planned] == [("digest", "inst")]
    assert planned[0].due_at == digest_due(T0 + 10, 900) == T0 + 900  # T0 is a multiple of 900
    assert digest_due(T0, 900) == T0 + 900


def test_acknowledge_stops_the_steps_and_resolve_clears_to_whoever_was_told() -> None:
    assert plan(config(), event("acknowledged")).stop_steps
    assert plan(config(), event("acknowledged")).deliveries == ()
    told = [Told("inst", "xihu", 0), Told("county", "xihu", 1)]
    resolved = plan(config(), event("resolved", at=T0 + 500), told)
    assert resolved.stop_steps
    assert [(p.purpose, p.channel, p.step, p.due_at) for p in resolved.deliveries] == [
        ("all_clear", "county", 1, T0 + 500), ("all_clear", "inst", 0, T0 + 500)]
    assert plan(config(), event("repeated")).deliveries == ()


def test_maintenance_suppresses_only_the_kinds_it_names() -> None:
    cfg = config(maintenance=[{"site": "s1", "kinds": ["detector_fault", "detector_offline"],
                               "start": "2026-12-01T09:00:00+08:00", "end": "2026-12-01T12:00:00+08:00",
                               "note": "annual detector test"}])
    fault = plan(cfg, event(kind="detector_offline", severity="major")).deliveries
    assert fault
    assert all(p.suppressed and "annual detector test" in p.suppressed for p in fault)
    # A real fire alarm during the detector work still pages; so does another site's fault.
    assert all(p.suppressed is None for p in plan(cfg, event()).deliveries)
    assert all(p.suppressed is None for p in plan(cfg, event(kind="detector_offline", severity="major",
                                                                  site="s2")).deliveries)
    # Each step is judged at its own due time: those due after the window ends are sent.
    cfg_short = config(maintenance=[{"site": "s1", "kinds": ["detector_offline"], "start": "2026-12-01T09:00:00+08:00",
                                     "end": "2026-12-01T10:02:00+08:00"}])
    steps = plan(cfg_short, event(kind="detector_offline", severity="major")).deliveries
    assert [(p.step, p.suppressed is None) for p in steps] == [(0, False), (1, False), (2, True), (2, True)]


def test_quiet_hours_hold_back_what_is_not_critical_even_across_midnight() -> None:
    cfg = config(quiet_hours=[{"counties": ["Xihu"], "start": "22:00", "end": "07:00"}])
    night = datetime(2026, 12, 1, 23, 30, tzinfo=UTC).timestamp()  # 07:30 next day in Shanghai: outside
    late = datetime(2026, 12, 1, 15, 30, tzinfo=UTC).timestamp()  # 23:30 in Shanghai: inside
    inside = plan(cfg, AlertEvent(1, 7, "opened", late, "s1", "exit-1", "exit_blocked", "major", late, "Xihu", "H"))
    assert inside.deliveries[0].suppressed == "quiet hours 22:00-07:00 Asia/Shanghai"
    outside = plan(cfg, AlertEvent(1, 7, "opened", night, "s1", "exit-1", "exit_blocked", "major", night, "Xihu"))
    assert outside.deliveries[0].suppressed is None
    fire = plan(cfg, AlertEvent(1, 7, "opened", late, "s1", "smoke-1", "fire_alarm", "critical", late, "Xihu"))
    assert all(p.suppressed is None for p in fire.deliveries)


def test_a_backlog_older_than_stale_after_is_not_notified() -> None:
    cfg = config(stale_after_s=3600)
    assert plan(cfg, event(), now=T0 + 3601).deliveries == ()
    assert plan(cfg, event(), now=T0 + 60).deliveries


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 2.0, 30.0) for n in (1, 2, 3, 4, 5, 6)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_channel_is_failing_when_its_failures_since_the_last_success_last_long_enough() -> None:
    assert failing_since([]) is None
    assert failing_since([(30.0, True), (20.0, False)]) is None
    newest_first = [(30.0, False), (20.0, False), (10.0, True), (5.0, False)]
    assert failing_since(newest_first) == 20.0
    assert channel_failing(newest_first, now=320.0, after_s=300)
    assert not channel_failing(newest_first, now=319.0, after_s=300)


@pytest.mark.parametrize(("bad", "says"), [
    ({"routes": [{"name": "r", "steps": [{"channels": ["nope"]}]}]}, "unknown channel(s) ['nope']"),
    ({"routes": [{"name": "r", "steps": [{"after_s": 60, "channels": ["inst"]},
                                         {"after_s": 0, "channels": ["inst"]}]}]}, "strictly increasing after_s"),
    ({"routes": [{"name": "r", "steps": []}]}, "at least 1 item"),
    ({"routes": [{"name": "r", "match": {"severity": ["loud"]}, "steps": [{"channels": ["inst"]}]}]}, "severity"),
    ({"channels": {"x": {"type": "sms", "url": "http://h"}}}, "does not match any of the expected tags"),
    ({"channels": {"x": {"type": "webhook", "url": "http://h", "secret": "short"}}}, "at least 16"),
    ({"quiet_hours": [{"start": "22:00", "end": "07:00", "timezone": "Mars/Base"}]}, "unknown time zone"),
    ({"maintenance": [{"site": "s1", "kinds": ["fire_alarm"], "start": "2026-12-01T10:00:00+08:00",
                       "end": "2026-12-01T09:00:00+08:00"}]}, "end must be after start"),
])
def test_bad_notify_config_is_refused_naming_the_key(bad: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(notify={"channels": CHANNELS, **bad})
    assert "notify" in str(refused.value)
    assert says in str(refused.value)


def test_notifier_failing_is_raised_once_while_failing_and_resolved_on_recovery() -> None:
    raised = evaluate_notifier("s1", "city-hook", failing=True, since=T0, alerts={})
    assert [type(c) for c in raised] == [Raise]
    assert raised[0].key.kind is AlertKind.NOTIFIER_FAILING
    assert raised[0].key.device == "city-hook"
    alerts = apply({}, raised)
    assert evaluate_notifier("s1", "city-hook", failing=True, since=T0, alerts=alerts) == []
    recovered = evaluate_notifier("s1", "city-hook", failing=False, since=None, alerts=alerts)
    assert [type(c) for c in recovered] == [Resolve]
    assert evaluate_notifier("s1", "city-hook", failing=False, since=None, alerts={}) == []
