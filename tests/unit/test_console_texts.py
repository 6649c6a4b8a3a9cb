"""Issue 13's pure parts: the compound alert is not resolved by hand while it holds; reasons,
durations and periods in words."""

# ruff: noqa: RUF001 - the inspectors' texts use Chinese full-width punctuation on purpose
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.compliance.reasons import duration_text, reason_text, reasons_text
from gateway.compliance.timeline import CameraFigures, verdict
from gateway.reports.spreadsheet import period_text
from gateway.rules import engine
from gateway.rules.model import Acknowledge, AlertKey, AlertKind, OpenAlert, Raise, Resolve


def _site_with_compound(acknowledged: bool) -> tuple[AlertKey, dict[AlertKey, OpenAlert]]:
    fire = AlertKey("s1", "smoke-1", AlertKind.FIRE_ALARM)
    exit_ = AlertKey("s1", "exit-1", AlertKind.EXIT_BLOCKED)
    opened = engine.apply({}, [Raise(fire, {}), Raise(exit_, {})])
    compound = engine.evaluate_compound("s1", opened)
    alerts = engine.apply(opened, compound)
    key = AlertKey("s1", None, AlertKind.FIRE_ALARM_EXIT_BLOCKED)
    if acknowledged:
        alerts = engine.apply(alerts, [Acknowledge(key)])
    return key, alerts


def test_the_compound_alert_is_not_resolved_by_hand_while_it_holds() -> None:
    key, alerts = _site_with_compound(acknowledged=False)
    with pytest.raises(engine.StepRefused) as refused:
        engine.resolve_by_hand(alerts[key], alerts)
    assert refused.value.code == "ack_required"
    key, alerts = _site_with_compound(acknowledged=True)
    with pytest.raises(engine.StepRefused) as refused:
        engine.resolve_by_hand(alerts[key], alerts)
    assert refused.value.code == "condition_holds"
    # Once its exit is no longer blocked it may be resolved by hand (nothing raises it again).
    exit_ = AlertKey("s1", "exit-1", AlertKind.EXIT_BLOCKED)
    alerts = {k: v for k, v in alerts.items() if k != exit_}
    changes = engine.resolve_by_hand(alerts[key], alerts)
    assert [type(c) for c in changes] == [Resolve]


def test_reasons_as_codes_and_in_words() -> None:
    cams = [CameraFigures("cam-1", 80_000.0, 86_400.0, 0.931, 2, 3600.0, 12.5, 13.0, True, 1000),
            CameraFigures("cam-2", 0.0, 86_400.0, 0.0, 1, 86_400.0, None, None, False, 0)]
    v = verdict(cams, cameras_required=3, online_share=0.99, delay_p50_s=10.0)
    assert v.codes[0] == {"code": "camera_online_below", "device": "cam-1", "pct": 93.1, "limit_pct": 99.0,
                          "longest_outage_s": 3600.0}
    assert [c["code"] for c in v.codes] == ["camera_online_below", "camera_delay_above", "camera_online_below",
                                            "cameras_missing"]
    assert len(v.codes) == len(v.reasons)
    assert reason_text(v.codes[0]) == "摄像头 cam-1 在线率 93.1 %，低于 99 %"
    assert reason_text(v.codes[0], "en") == "camera cam-1 online 93.1 %, below 99 %"
    assert reason_text(v.codes[3]) == "应接入摄像头 3 路，实际上报 1 路"
    assert reason_text({"code": "something_new"}) == "something_new"
    assert reasons_text(v.codes[1:2]) == "摄像头 cam-1 时延中位数 12.5 秒，超过 10 秒"


def test_durations_and_periods_in_words() -> None:
    assert duration_text(84_942) == "23 小时 35 分"
    assert duration_text(84_942, "en") == "23 h 35 min"
    assert duration_text(42) == "42 秒"
    assert duration_text(2 * 86_400 + 60) == "2 天 1 分"
    start = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 in Shanghai
    end = datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert period_text(start, end) == "2026年11月1日至2026年11月30日"
    assert period_text(start, end, lang="en") == "1 Nov 2026 to 30 Nov 2026"
    assert period_text(start, datetime(2026, 11, 1, 16, tzinfo=UTC)) == "2026年11月1日"
    assert period_text(datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)) == (
        "2025年3月1日 08:00至2025年3月2日 08:00")
