"""Alert rules of DESIGN.md section 4 (gateway/rules): pure functions, typed readings in, changes out."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from gateway.rules.engine import (
    StepRefused,
    acknowledge,
    apply,
    evaluate,
    evaluate_acknowledged,
    evaluate_agent_status,
    evaluate_clock_skew,
    evaluate_compound,
    evaluate_escalation,
    evaluate_reading,
    evaluate_silence,
    evaluate_unheard,
    iso,
    refuse_resolve,
    resolve_by_hand,
    smooth_skew,
)
from gateway.rules.model import (
    SEVERITY,
    SITE_LEVEL_KINDS,
    Acknowledge,
    AlertKey,
    AlertKind,
    AlertState,
    Change,
    DeviceStatus,
    OpenAlert,
    OpenAlerts,
    Raise,
    Repeat,
    Resolve,
    Severity,
    Update,
)
from protocol import DeviceKind, ExitReading, ExitState, Heartbeat, Reading, SmokeReading, SmokeState, StreamState

SITE = "site-1"
OTHER_SITE = "site-2"
CAM = "cam-1"
SMOKE = "smoke-1"
EXIT = "exit-1"
EXIT2 = "exit-2"
T0 = 1_700_000_000.0
BOOT = "boot-a"


# --------------------------------------------------------------------------- factories


def hb(stream: StreamState = StreamState.OK, ts: float = T0, seq: int = 0, fps: float = 25.0) -> Heartbeat:
    return Heartbeat(ts=ts, boot=BOOT, seq=seq, stream=stream, fps=fps, last_frame_ts=ts - 0.04)


def smoke(
    state: SmokeState = SmokeState.NORMAL,
    ts: float = T0,
    seq: int = 0,
    battery: float | None = 90.0,
    obscuration: float | None = None,
) -> SmokeReading:
    return SmokeReading(ts=ts, boot=BOOT, seq=seq, state=state, battery_pct=battery, obscuration_pct=obscuration)


def ex(state: ExitState = ExitState.CLEAR, ts: float = T0, seq: int = 0, ratio: float | None = None) -> ExitReading:
    if ratio is None:
        ratio = 0.9 if state is ExitState.BLOCKED else 0.0
    since = ts - 30 if state is ExitState.BLOCKED else None
    return ExitReading(ts=ts, boot=BOOT, seq=seq, state=state, blocked_ratio=ratio, blocked_since=since)


def status_of(reading: Reading) -> DeviceStatus:
    """The DeviceStatus a caller stores after accepting ``reading``."""
    if isinstance(reading, Heartbeat):
        return DeviceStatus(reading.stream.value, reading.ts)
    if isinstance(reading, SmokeReading):
        return DeviceStatus(reading.state.value, reading.ts, reading.battery_pct)
    return DeviceStatus(reading.state.value, reading.ts)


def key(kind: AlertKind, device: str | None, site: str = SITE) -> AlertKey:
    return AlertKey(site, device, kind)


def open_alert(
    kind: AlertKind,
    device: str | None,
    *,
    site: str = SITE,
    state: AlertState = AlertState.OPEN,
    count: int = 1,
    **detail: object,
) -> OpenAlert:
    return OpenAlert(key(kind, device, site), state, count, dict(detail))


def alerts_of(*alerts: OpenAlert) -> dict[AlertKey, OpenAlert]:
    return {a.key: a for a in alerts}


FIRE = key(AlertKind.FIRE_ALARM, SMOKE)
FAULT = key(AlertKind.DETECTOR_FAULT, SMOKE)
DET_OFFLINE = key(AlertKind.DETECTOR_OFFLINE, SMOKE)
BLOCKED = key(AlertKind.EXIT_BLOCKED, EXIT)
BLOCKED2 = key(AlertKind.EXIT_BLOCKED, EXIT2)
STREAM = key(AlertKind.CAMERA_STREAM_FAULT, CAM)
CAM_OFFLINE = key(AlertKind.CAMERA_OFFLINE, CAM)
COMPOUND = key(AlertKind.FIRE_ALARM_EXIT_BLOCKED, None)
AGENT = key(AlertKind.AGENT_OFFLINE, None)


@dataclass
class Sim:
    """Feeds readings through ``evaluate`` the way the ingest worker does: the device's stored
    state only moves forward in time (a stale reading does not replace it)."""

    alerts: dict[AlertKey, OpenAlert] = field(default_factory=dict)
    prev: dict[tuple[str, str], DeviceStatus] = field(default_factory=dict)
    battery_low_pct: float = 20.0

    def feed(self, device: str, reading: Reading, site: str = SITE) -> list[Change]:
        before = self.prev.get((site, device))
        changes, after = evaluate(site, device, reading, before, self.alerts, battery_low_pct=self.battery_low_pct)
        assert after == apply(self.alerts, changes)
        self.alerts = dict(after)
        if before is None or reading.ts >= before.ts:
            self.prev[(site, device)] = status_of(reading)
        return changes

    def ack(self, k: AlertKey) -> list[Change]:
        """An operator acknowledges ``k``: what follows the step (the step itself left out)."""
        changes = acknowledge(self.alerts[k], self.alerts)
        assert changes[0] == Acknowledge(k)
        self.alerts = apply(self.alerts, changes)
        assert k not in self.alerts or self.alerts[k].acknowledged  # acknowledged, or resolved by what followed
        return changes[1:]

    def silence(self, device: str, kind: DeviceKind, *, last_seen: float, timeout_s: float, now: float) -> list[Change]:
        changes = evaluate_silence(
            SITE, device, kind, last_seen=last_seen, timeout_s=timeout_s, now=now, alerts=self.alerts
        )
        self.alerts = apply(self.alerts, changes)
        return changes


def kinds(changes: Sequence[Change]) -> list[tuple[str, AlertKind]]:
    return [(type(c).__name__, c.key.kind) for c in changes]


# --------------------------------------------------------------------------- model


def test_severity_table_matches_design() -> None:
    assert dict(SEVERITY) == {
        AlertKind.FIRE_ALARM: Severity.CRITICAL,
        AlertKind.FIRE_ALARM_EXIT_BLOCKED: Severity.CRITICAL,
        AlertKind.EXIT_BLOCKED: Severity.MAJOR,
        AlertKind.CAMERA_OFFLINE: Severity.MAJOR,
        AlertKind.CAMERA_STREAM_FAULT: Severity.MAJOR,
        AlertKind.DETECTOR_OFFLINE: Severity.MAJOR,
        AlertKind.DETECTOR_FAULT: Severity.MINOR,
        AlertKind.AGENT_OFFLINE: Severity.MAJOR,
        AlertKind.NOTIFIER_FAILING: Severity.MINOR,  # issue 16: the notifier's own (docs/operations.md)
        AlertKind.CLOCK_SKEW: Severity.MINOR,
    }
    assert set(SEVERITY) == set(AlertKind)


def test_site_level_kinds() -> None:
    assert frozenset({AlertKind.AGENT_OFFLINE, AlertKind.FIRE_ALARM_EXIT_BLOCKED, AlertKind.CLOCK_SKEW}) == \
        SITE_LEVEL_KINDS


def test_alert_kind_and_state_words() -> None:
    assert {k.value for k in AlertKind} == {
        "fire_alarm",
        "fire_alarm_exit_blocked",
        "exit_blocked",
        "camera_offline",
        "camera_stream_fault",
        "detector_offline",
        "detector_fault",
        "agent_offline",
        "notifier_failing",
        "clock_skew",
    }
    assert [s.value for s in AlertState] == ["open", "acknowledged", "resolved"]


def test_open_alert_acknowledged_property() -> None:
    assert not open_alert(AlertKind.FIRE_ALARM, SMOKE).acknowledged
    assert open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.ACKNOWLEDGED).acknowledged


def test_iso_is_utc_rfc3339() -> None:
    assert iso(0) == "1970-01-01T00:00:00+00:00"
    assert iso(T0) == "2023-11-14T22:13:20+00:00"


# --------------------------------------------------------------------------- apply


def test_apply_raise_opens_with_count_one() -> None:
    after = apply({}, [Raise(FIRE, {"state": "alarm"})])
    assert after == {FIRE: OpenAlert(FIRE, AlertState.OPEN, 1, {"state": "alarm"})}


def test_apply_repeat_counts_and_merges_detail_keeping_state() -> None:
    before = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.ACKNOWLEDGED, count=2, a=1, b=2))
    after = apply(before, [Repeat(FIRE, {"b": 3, "c": 4})])
    assert after[FIRE] == OpenAlert(FIRE, AlertState.ACKNOWLEDGED, 3, {"a": 1, "b": 3, "c": 4})


def test_apply_update_merges_detail_without_counting() -> None:
    before = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, count=2, a=1))
    after = apply(before, [Update(FIRE, {"a": 9, "z": True}, "x")])
    assert after[FIRE] == OpenAlert(FIRE, AlertState.OPEN, 2, {"a": 9, "z": True})


def test_apply_resolve_removes_and_ignores_missing() -> None:
    before = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE))
    assert apply(before, [Resolve(FIRE, "r")]) == {}
    assert apply({}, [Resolve(FIRE, "r")]) == {}


def test_apply_repeat_or_update_of_missing_alert_is_ignored() -> None:
    assert apply({}, [Repeat(FIRE, {"a": 1}), Update(FIRE, {"a": 1}, "x")]) == {}


def test_apply_does_not_mutate_its_input() -> None:
    before = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, a=1))
    snapshot = dict(before)
    apply(before, [Repeat(FIRE, {"a": 2}), Raise(BLOCKED, {}), Resolve(FIRE, "r")])
    assert before == snapshot
    assert before[FIRE].detail == {"a": 1}


def test_apply_is_sequential() -> None:
    after = apply({}, [Raise(FIRE, {"n": 1}), Repeat(FIRE, {"n": 2}), Update(FIRE, {"u": 1}, "x"), Repeat(FIRE, {})])
    assert after[FIRE].count == 3
    assert after[FIRE].detail == {"n": 2, "u": 1}


# --------------------------------------------------------------------------- fire_alarm


def test_fire_alarm_raises_critical_with_detail() -> None:
    changes = evaluate_reading(SITE, SMOKE, smoke(SmokeState.ALARM, obscuration=12.5), None, {})
    assert changes == [Raise(FIRE, {"state": "alarm", "obscuration_pct": 12.5, "detector_normal": False})]
    assert SEVERITY[FIRE.kind] is Severity.CRITICAL


def test_fire_alarm_one_alert_and_no_count_on_consecutive_alarms() -> None:
    sim = Sim()
    assert kinds(sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))) == [("Raise", AlertKind.FIRE_ALARM)]
    for i in range(1, 5):
        assert sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + i, seq=i)) == []
    assert sim.alerts[FIRE].count == 1
    assert list(sim.alerts) == [FIRE]


def test_fire_alarm_normal_before_ack_does_not_resolve() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    changes = sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 1))
    assert changes == [Update(FIRE, {"detector_normal": True}, "detector_normal")]
    assert FIRE in sim.alerts
    assert sim.alerts[FIRE].detail["detector_normal"] is True
    # further normal reports change nothing
    assert sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 2)) == []
    assert sim.alerts[FIRE].count == 1


def test_fire_alarm_ack_after_normal_resolves_via_evaluate_acknowledged() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 1))
    changes = sim.ack(FIRE)
    assert changes == [Resolve(FIRE, "acknowledged with detector back to normal")]
    assert sim.alerts == {}


def test_fire_alarm_ack_first_then_normal_resolves() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    assert sim.ack(FIRE) == []  # detector still in alarm: stays acknowledged
    assert sim.alerts[FIRE].state is AlertState.ACKNOWLEDGED
    assert sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 1)) == []
    changes = sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 2))
    assert changes == [Resolve(FIRE, "detector back to normal after acknowledgement")]
    assert sim.alerts == {}


@pytest.mark.parametrize("state", [SmokeState.FAULT, SmokeState.TEST, SmokeState.TAMPER])
def test_acknowledged_fire_alarm_is_not_resolved_by_non_normal_states(state: SmokeState) -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.ack(FIRE)
    sim.feed(SMOKE, smoke(state, ts=T0 + 1))
    assert FIRE in sim.alerts


def test_fire_alarm_back_to_non_normal_after_normal_clears_detector_normal() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 1))
    changes = sim.feed(SMOKE, smoke(SmokeState.TEST, ts=T0 + 2))
    assert Update(FIRE, {"detector_normal": False, "state": "test"}, "detector_state") in changes
    assert sim.alerts[FIRE].detail["detector_normal"] is False
    # acknowledging now must not resolve: the detector is not normal
    assert sim.ack(FIRE) == []
    assert FIRE in sim.alerts
    # ... until it reports normal again
    assert sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 3)) == [
        Resolve(FIRE, "detector back to normal after acknowledgement")
    ]


def test_fire_alarm_non_normal_state_while_still_in_alarm_changes_nothing() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    changes = sim.feed(SMOKE, smoke(SmokeState.TEST, ts=T0 + 1))
    assert [c for c in changes if c.key == FIRE] == []


def test_fire_alarm_manual_resolve_refused_before_ack_allowed_after() -> None:
    unacked = open_alert(AlertKind.FIRE_ALARM, SMOKE)
    reason = refuse_resolve(unacked)
    assert reason == "a fire alarm must be acknowledged before it is resolved"
    # also refused when the detector is already normal
    assert refuse_resolve(open_alert(AlertKind.FIRE_ALARM, SMOKE, detector_normal=True)) is not None
    assert refuse_resolve(replace(unacked, state=AlertState.ACKNOWLEDGED)) is None


@pytest.mark.parametrize("kind", [k for k in AlertKind if SEVERITY[k] is not Severity.CRITICAL])
def test_manual_resolve_of_other_kinds_is_allowed_unacknowledged(kind: AlertKind) -> None:
    device = None if kind in SITE_LEVEL_KINDS else "dev-1"
    assert refuse_resolve(open_alert(kind, device)) is None


def test_manual_resolve_of_any_unacknowledged_critical_alert_is_refused() -> None:
    # DESIGN section 4: "and so does a manual resolve of any critical alert that no one acknowledged".
    compound = open_alert(AlertKind.FIRE_ALARM_EXIT_BLOCKED, None)
    assert refuse_resolve(compound) is not None
    with pytest.raises(StepRefused):
        resolve_by_hand(compound, {compound.key: compound})
    acked = replace(compound, state=AlertState.ACKNOWLEDGED)
    assert resolve_by_hand(acked, {acked.key: acked}) == [Resolve(acked.key, "resolved by hand", by_hand=True)]


def test_acknowledging_twice_is_refused() -> None:
    alert = replace(open_alert(AlertKind.EXIT_BLOCKED, "exit-1"), state=AlertState.ACKNOWLEDGED)
    with pytest.raises(StepRefused):
        acknowledge(alert, {alert.key: alert})


def test_fire_alarm_alarm_normal_alarm_before_ack_counts_two() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 1))
    changes = sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 2, obscuration=30.0))
    assert changes == [Repeat(FIRE, {"state": "alarm", "obscuration_pct": 30.0, "detector_normal": False})]
    assert sim.alerts[FIRE].count == 2
    assert sim.alerts[FIRE].detail["detector_normal"] is False
    # and the repeat means a later ack alone does not resolve it
    assert sim.ack(FIRE) == []


def test_fire_alarm_alarm_fault_alarm_counts_two() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(SMOKE, smoke(SmokeState.FAULT, ts=T0 + 1))
    changes = sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 2))
    assert Repeat(FIRE, {"state": "alarm", "obscuration_pct": None, "detector_normal": False}) in changes
    assert sim.alerts[FIRE].count == 2


def test_fire_alarm_repeat_keeps_acknowledged_state() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.ack(FIRE)
    sim.feed(SMOKE, smoke(SmokeState.FAULT, ts=T0 + 1))
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 2))
    assert sim.alerts[FIRE].count == 2
    assert sim.alerts[FIRE].state is AlertState.ACKNOWLEDGED


def test_fire_alarm_with_open_alert_and_unknown_prev_counts_as_repeat() -> None:
    alerts = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, detector_normal=False))
    changes = evaluate_reading(SITE, SMOKE, smoke(SmokeState.ALARM), None, alerts)
    assert kinds(changes) == [("Repeat", AlertKind.FIRE_ALARM)]


def test_new_fire_alarm_after_resolution_raises_a_new_alert() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.ack(FIRE)
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 1))
    assert sim.alerts == {}
    changes = sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 2))
    assert kinds(changes) == [("Raise", AlertKind.FIRE_ALARM)]
    assert sim.alerts[FIRE].count == 1
    assert sim.alerts[FIRE].state is AlertState.OPEN


def test_normal_reading_without_fire_alarm_changes_nothing() -> None:
    assert evaluate_reading(SITE, SMOKE, smoke(SmokeState.NORMAL), DeviceStatus("normal", T0 - 1, 90.0), {}) == []


def test_stale_alarm_still_raises() -> None:
    prev = DeviceStatus("normal", T0 + 100, 90.0)
    changes = evaluate_reading(SITE, SMOKE, smoke(SmokeState.ALARM, ts=T0), prev, {})
    assert kinds(changes) == [("Raise", AlertKind.FIRE_ALARM)]


def test_stale_alarm_with_open_alert_is_not_a_repeat() -> None:
    alerts = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, detector_normal=True))
    prev = DeviceStatus("normal", T0 + 100, 90.0)
    assert evaluate_reading(SITE, SMOKE, smoke(SmokeState.ALARM, ts=T0), prev, alerts) == []


def test_stale_normal_does_not_resolve_or_mark_detector_normal() -> None:
    prev = DeviceStatus("alarm", T0 + 100, 90.0)
    unacked = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, detector_normal=False))
    assert evaluate_reading(SITE, SMOKE, smoke(SmokeState.NORMAL, ts=T0), prev, unacked) == []
    acked = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.ACKNOWLEDGED, detector_normal=False))
    assert evaluate_reading(SITE, SMOKE, smoke(SmokeState.NORMAL, ts=T0), prev, acked) == []


def test_reading_with_equal_ts_is_not_stale() -> None:
    prev = DeviceStatus("alarm", T0, 90.0)
    acked = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.ACKNOWLEDGED))
    changes = evaluate_reading(SITE, SMOKE, smoke(SmokeState.NORMAL, ts=T0), prev, acked)
    assert kinds(changes) == [("Resolve", AlertKind.FIRE_ALARM)]


def test_evaluate_acknowledged_needs_detector_normal() -> None:
    acked = open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.ACKNOWLEDGED, detector_normal=False)
    assert evaluate_acknowledged(acked) == []
    assert evaluate_acknowledged(replace(acked, detail={})) == []
    assert evaluate_acknowledged(replace(acked, detail={"detector_normal": True})) == [
        Resolve(FIRE, "acknowledged with detector back to normal")
    ]


@pytest.mark.parametrize("kind", [k for k in AlertKind if k is not AlertKind.FIRE_ALARM])
def test_evaluate_acknowledged_resolves_nothing_else(kind: AlertKind) -> None:
    device = None if kind in SITE_LEVEL_KINDS else "dev-1"
    alert = open_alert(kind, device, state=AlertState.ACKNOWLEDGED, detector_normal=True)
    assert evaluate_acknowledged(alert) == []


# --------------------------------------------------------------------------- exit_blocked


def test_exit_blocked_raises_major_with_detail() -> None:
    reading = ex(ExitState.BLOCKED, ts=T0, ratio=0.75)
    changes = evaluate_reading(SITE, EXIT, reading, DeviceStatus("clear", T0 - 5), {})
    assert changes == [Raise(BLOCKED, {"blocked_ratio": 0.75, "blocked_since": T0 - 30})]
    assert SEVERITY[BLOCKED.kind] is Severity.MAJOR


def test_exit_blocked_first_sight_raises() -> None:
    assert kinds(evaluate_reading(SITE, EXIT, ex(ExitState.BLOCKED), None, {})) == [("Raise", AlertKind.EXIT_BLOCKED)]


def test_exit_blocked_lifecycle_and_counting() -> None:
    sim = Sim()
    assert sim.feed(EXIT, ex(ExitState.CLEAR, ts=T0)) == []
    assert kinds(sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1))) == [("Raise", AlertKind.EXIT_BLOCKED)]
    assert sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 2)) == []  # consecutive identical: no count
    assert sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 3, ratio=0.5)) == []
    assert sim.alerts[BLOCKED].count == 1
    # unknown neither holds nor clears
    assert sim.feed(EXIT, ex(ExitState.UNKNOWN, ts=T0 + 4)) == []
    assert BLOCKED in sim.alerts
    # blocked again while still open: a repeat
    changes = sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 5, ratio=0.6))
    assert changes == [Repeat(BLOCKED, {"blocked_ratio": 0.6, "blocked_since": T0 + 5 - 30})]
    assert sim.alerts[BLOCKED].count == 2
    assert sim.feed(EXIT, ex(ExitState.CLEAR, ts=T0 + 6)) == [Resolve(BLOCKED, "exit clear")]
    assert sim.alerts == {}


def test_exit_unknown_without_alert_changes_nothing() -> None:
    assert evaluate_reading(SITE, EXIT, ex(ExitState.UNKNOWN), DeviceStatus("clear", T0 - 1), {}) == []


def test_exit_clear_without_alert_changes_nothing() -> None:
    assert evaluate_reading(SITE, EXIT, ex(ExitState.CLEAR), DeviceStatus("blocked", T0 - 1), {}) == []


def test_stale_exit_readings_change_nothing() -> None:
    newer = DeviceStatus("clear", T0 + 10)
    assert evaluate_reading(SITE, EXIT, ex(ExitState.BLOCKED, ts=T0), newer, {}) == []
    open_blocked = alerts_of(open_alert(AlertKind.EXIT_BLOCKED, EXIT))
    newer_blocked = DeviceStatus("blocked", T0 + 10)
    assert evaluate_reading(SITE, EXIT, ex(ExitState.CLEAR, ts=T0), newer_blocked, open_blocked) == []
    assert evaluate_reading(SITE, EXIT, ex(ExitState.BLOCKED, ts=T0), newer_blocked, open_blocked) == []


def test_exit_alerts_are_per_device() -> None:
    sim = Sim()
    sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0))
    sim.feed(EXIT2, ex(ExitState.BLOCKED, ts=T0))
    assert {BLOCKED, BLOCKED2} <= set(sim.alerts)
    sim.feed(EXIT, ex(ExitState.CLEAR, ts=T0 + 1))
    assert BLOCKED not in sim.alerts
    assert BLOCKED2 in sim.alerts


# --------------------------------------------------------------------------- camera_stream_fault


@pytest.mark.parametrize("stream", [StreamState.FROZEN, StreamState.DARK, StreamState.LOST])
def test_camera_stream_fault_raises(stream: StreamState) -> None:
    reading = hb(stream, fps=0.0)
    changes = evaluate_reading(SITE, CAM, reading, DeviceStatus("ok", T0 - 10), {})
    assert changes == [Raise(STREAM, {"stream": stream.value, "fps": 0.0, "last_frame_ts": T0 - 0.04})]
    assert SEVERITY[STREAM.kind] is Severity.MAJOR


def test_camera_stream_ok_changes_nothing() -> None:
    assert evaluate_reading(SITE, CAM, hb(StreamState.OK), DeviceStatus("ok", T0 - 10), {}) == []
    assert evaluate_reading(SITE, CAM, hb(StreamState.OK), None, {}) == []


def test_camera_stream_fault_lifecycle() -> None:
    sim = Sim()
    assert sim.feed(CAM, hb(StreamState.OK, ts=T0)) == []
    assert kinds(sim.feed(CAM, hb(StreamState.FROZEN, ts=T0 + 10))) == [("Raise", AlertKind.CAMERA_STREAM_FAULT)]
    assert sim.feed(CAM, hb(StreamState.FROZEN, ts=T0 + 20)) == []  # consecutive identical: no count
    # Still faulty, but now dark: the same alert, no count, its detail says dark.
    changed = sim.feed(CAM, hb(StreamState.DARK, ts=T0 + 30))
    assert kinds(changed) == [("Update", AlertKind.CAMERA_STREAM_FAULT)]
    assert sim.alerts[STREAM].count == 1
    assert sim.alerts[STREAM].detail["stream"] == "dark"
    assert sim.feed(CAM, hb(StreamState.DARK, ts=T0 + 35, fps=3.0)) == []  # only fps changed: nothing
    assert sim.feed(CAM, hb(StreamState.OK, ts=T0 + 40)) == [Resolve(STREAM, "stream ok again")]
    assert sim.alerts == {}


def test_camera_stream_fault_with_open_alert_and_prev_ok_is_a_repeat() -> None:
    alerts = alerts_of(open_alert(AlertKind.CAMERA_STREAM_FAULT, CAM))
    changes = evaluate_reading(SITE, CAM, hb(StreamState.LOST), DeviceStatus("ok", T0 - 10), alerts)
    assert kinds(changes) == [("Repeat", AlertKind.CAMERA_STREAM_FAULT)]
    assert apply(alerts, changes)[STREAM].count == 2


def test_stale_heartbeat_changes_stream_fault_nothing() -> None:
    newer_ok = DeviceStatus("ok", T0 + 10)
    assert evaluate_reading(SITE, CAM, hb(StreamState.FROZEN, ts=T0), newer_ok, {}) == []
    faulty = alerts_of(open_alert(AlertKind.CAMERA_STREAM_FAULT, CAM))
    newer_lost = DeviceStatus("lost", T0 + 10)
    assert evaluate_reading(SITE, CAM, hb(StreamState.OK, ts=T0), newer_lost, faulty) == []


# --------------------------------------------------------------------------- detector_fault


@pytest.mark.parametrize("state", [SmokeState.FAULT, SmokeState.TAMPER])
def test_detector_fault_raised_by_state(state: SmokeState) -> None:
    changes = evaluate_reading(SITE, SMOKE, smoke(state, battery=80.0), DeviceStatus("normal", T0 - 1, 80.0), {})
    assert changes == [Raise(FAULT, {"state": state.value, "battery_pct": 80.0})]
    assert SEVERITY[FAULT.kind] is Severity.MINOR


@pytest.mark.parametrize(
    ("battery", "raises"), [(0.0, True), (19.99, True), (20.0, False), (20.01, False), (100.0, False), (None, False)]
)
def test_detector_fault_low_battery_default_threshold(battery: float | None, raises: bool) -> None:
    changes = evaluate_reading(SITE, SMOKE, smoke(SmokeState.NORMAL, battery=battery), None, {})
    expected = [Raise(FAULT, {"state": "normal", "battery_pct": battery})] if raises else []
    assert changes == expected


@pytest.mark.parametrize(
    ("threshold", "battery", "raises"),
    [(30.0, 25.0, True), (30.0, 30.0, False), (10.0, 15.0, False), (10.0, 9.5, True)],
)
def test_detector_fault_low_battery_threshold_parameter(threshold: float, battery: float, raises: bool) -> None:
    changes = evaluate_reading(
        SITE, SMOKE, smoke(SmokeState.NORMAL, battery=battery), None, {}, battery_low_pct=threshold
    )
    assert (kinds(changes) == [("Raise", AlertKind.DETECTOR_FAULT)]) is raises
    changes2, _ = evaluate(SITE, SMOKE, smoke(SmokeState.NORMAL, battery=battery), None, {}, battery_low_pct=threshold)
    assert (kinds(changes2) == [("Raise", AlertKind.DETECTOR_FAULT)]) is raises


def test_low_battery_during_alarm_raises_both() -> None:
    changes = evaluate_reading(SITE, SMOKE, smoke(SmokeState.ALARM, battery=5.0), None, {})
    assert kinds(changes) == [("Raise", AlertKind.FIRE_ALARM), ("Raise", AlertKind.DETECTOR_FAULT)]


def test_detector_fault_cleared_only_by_normal_with_battery_ok() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0))
    sim.feed(SMOKE, smoke(SmokeState.FAULT, ts=T0 + 1))
    assert FAULT in sim.alerts
    # test and alarm states do not clear it
    sim.feed(SMOKE, smoke(SmokeState.TEST, ts=T0 + 2))
    assert FAULT in sim.alerts
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 3))
    assert FAULT in sim.alerts
    # normal with a low battery does not clear it
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 4, battery=10.0))
    assert FAULT in sim.alerts
    # normal with battery ok does
    changes = sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 5, battery=60.0))
    assert Resolve(FAULT, "detector normal and battery ok") in changes
    assert FAULT not in sim.alerts


def test_detector_fault_low_battery_cleared_by_battery_replaced() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0, battery=15.0))
    assert FAULT in sim.alerts
    assert sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 1, battery=15.0)) == []
    assert sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 2, battery=100.0)) == [
        Resolve(FAULT, "detector normal and battery ok")
    ]


def test_detector_fault_cleared_by_normal_with_unknown_battery() -> None:
    alerts = alerts_of(open_alert(AlertKind.DETECTOR_FAULT, SMOKE))
    changes = evaluate_reading(
        SITE, SMOKE, smoke(SmokeState.NORMAL, battery=None), DeviceStatus("fault", T0 - 1), alerts
    )
    assert changes == [Resolve(FAULT, "detector normal and battery ok")]


def test_detector_fault_counting() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.FAULT, ts=T0))
    assert sim.feed(SMOKE, smoke(SmokeState.FAULT, ts=T0 + 1)) == []  # consecutive identical
    # Still holding, for another reason: no count, the detail follows.
    assert sim.feed(SMOKE, smoke(SmokeState.TAMPER, ts=T0 + 2)) == [
        Update(FAULT, {"state": "tamper", "battery_pct": 90.0}, "detail_changed")]
    assert sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 3, battery=10.0)) == [  # the battery now
        Update(FAULT, {"state": "normal", "battery_pct": 10.0}, "detail_changed")]
    assert sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 3.5, battery=9.0)) == []  # battery level: not tracked
    assert sim.alerts[FAULT].count == 1
    sim.feed(SMOKE, smoke(SmokeState.TEST, ts=T0 + 4))  # stops holding, does not clear
    assert FAULT in sim.alerts
    changes = sim.feed(SMOKE, smoke(SmokeState.TAMPER, ts=T0 + 5))
    assert changes == [Repeat(FAULT, {"state": "tamper", "battery_pct": 90.0})]
    assert sim.alerts[FAULT].count == 2


def test_detector_fault_was_holding_uses_previous_battery() -> None:
    alerts = alerts_of(OpenAlert(FAULT, AlertState.OPEN, 1, {"state": "fault"}))  # open for a fault
    low_prev = DeviceStatus("normal", T0 - 1, 10.0)
    assert evaluate_reading(SITE, SMOKE, smoke(SmokeState.FAULT), low_prev, alerts) == []
    ok_prev = DeviceStatus("test", T0 - 1, 90.0)
    assert kinds(evaluate_reading(SITE, SMOKE, smoke(SmokeState.FAULT), ok_prev, alerts)) == [
        ("Repeat", AlertKind.DETECTOR_FAULT)
    ]


def test_stale_smoke_readings_do_not_touch_detector_fault() -> None:
    newer = DeviceStatus("normal", T0 + 10, 90.0)
    assert evaluate_reading(SITE, SMOKE, smoke(SmokeState.FAULT, ts=T0), newer, {}) == []
    faulty = alerts_of(open_alert(AlertKind.DETECTOR_FAULT, SMOKE))
    newer_fault = DeviceStatus("fault", T0 + 10, 90.0)
    assert evaluate_reading(SITE, SMOKE, smoke(SmokeState.NORMAL, ts=T0), newer_fault, faulty) == []


# --------------------------------------------------------------------------- camera_offline / detector_offline


@pytest.mark.parametrize(
    ("kind", "alert_kind"),
    [(DeviceKind.CAMERA, AlertKind.CAMERA_OFFLINE), (DeviceKind.SMOKE, AlertKind.DETECTOR_OFFLINE)],
)
def test_silence_raises_just_past_the_timeout(kind: DeviceKind, alert_kind: AlertKind) -> None:
    changes = evaluate_silence(SITE, "dev-1", kind, last_seen=T0, timeout_s=30.0, now=T0 + 30.001, alerts={})
    assert changes == [Raise(key(alert_kind, "dev-1"), {"last_seen": iso(T0), "timeout_s": 30.0})]
    assert SEVERITY[alert_kind] is Severity.MAJOR


@pytest.mark.parametrize("kind", [DeviceKind.CAMERA, DeviceKind.SMOKE])
@pytest.mark.parametrize("elapsed", [0.0, 10.0, 29.999, 30.0 - 1e-6, 30.0])
def test_silence_up_to_the_timeout_raises_nothing(kind: DeviceKind, elapsed: float) -> None:
    assert evaluate_silence(SITE, "dev-1", kind, last_seen=T0, timeout_s=30.0, now=T0 + elapsed, alerts={}) == []


@pytest.mark.parametrize(
    ("kind", "alert_kind"),
    [(DeviceKind.CAMERA, AlertKind.CAMERA_OFFLINE), (DeviceKind.SMOKE, AlertKind.DETECTOR_OFFLINE)],
)
def test_declared_and_never_heard_raises_past_the_timeout(kind: DeviceKind, alert_kind: AlertKind) -> None:
    def unheard(now: float, alerts: OpenAlerts | None = None) -> list[Change]:
        return evaluate_unheard(SITE, "dev-1", kind, declared_at=T0, timeout_s=30.0, now=now, alerts=alerts or {})

    assert unheard(T0 + 30.0) == []
    raised = unheard(T0 + 30.001)
    assert raised == [Raise(key(alert_kind, "dev-1"), {"last_seen": None, "declared_at": iso(T0), "timeout_s": 30.0})]
    assert unheard(T0 + 3600, apply({}, raised)) == []  # already open
    assert evaluate_unheard(SITE, "exit-1", DeviceKind.EXIT, declared_at=T0, timeout_s=30.0, now=T0 + 3600,
                            alerts={}) == []


@pytest.mark.parametrize("kind", [DeviceKind.CAMERA, DeviceKind.SMOKE])
def test_silence_long_after_the_timeout_raises(kind: DeviceKind) -> None:
    assert len(evaluate_silence(SITE, "d", kind, last_seen=T0, timeout_s=30.0, now=T0 + 3600, alerts={})) == 1


def test_silence_uses_the_fractional_epoch_boundary() -> None:
    last_seen = T0 + 0.1
    assert (
        evaluate_silence(
            SITE, CAM, DeviceKind.CAMERA, last_seen=last_seen, timeout_s=30.0, now=last_seen + 30.001, alerts={}
        )
        != []
    )


@pytest.mark.parametrize("elapsed", [30.0, 3600.0, 10**6])
def test_silence_of_an_exit_never_raises(elapsed: float) -> None:
    assert (
        evaluate_silence(SITE, EXIT, DeviceKind.EXIT, last_seen=T0, timeout_s=30.0, now=T0 + elapsed, alerts={}) == []
    )


def test_silence_does_not_raise_twice() -> None:
    sim = Sim()
    assert len(sim.silence(CAM, DeviceKind.CAMERA, last_seen=T0, timeout_s=30.0, now=T0 + 31)) == 1
    assert sim.silence(CAM, DeviceKind.CAMERA, last_seen=T0, timeout_s=30.0, now=T0 + 60) == []
    assert sim.alerts[CAM_OFFLINE].count == 1


@pytest.mark.parametrize("stream", list(StreamState))
def test_camera_offline_resumed_by_any_heartbeat(stream: StreamState) -> None:
    sim = Sim()
    sim.feed(CAM, hb(StreamState.OK, ts=T0))
    sim.silence(CAM, DeviceKind.CAMERA, last_seen=T0, timeout_s=30.0, now=T0 + 31)
    changes = sim.feed(CAM, hb(stream, ts=T0 + 40))
    assert changes[0] == Resolve(CAM_OFFLINE, "messages resumed")
    assert CAM_OFFLINE not in sim.alerts


def test_camera_offline_resumed_by_a_stale_heartbeat() -> None:
    alerts = alerts_of(open_alert(AlertKind.CAMERA_OFFLINE, CAM))
    changes = evaluate_reading(SITE, CAM, hb(StreamState.FROZEN, ts=T0), DeviceStatus("ok", T0 + 50), alerts)
    assert changes == [Resolve(CAM_OFFLINE, "messages resumed")]


@pytest.mark.parametrize("state", list(SmokeState))
def test_detector_offline_resumed_by_any_smoke_reading(state: SmokeState) -> None:
    alerts = alerts_of(open_alert(AlertKind.DETECTOR_OFFLINE, SMOKE))
    changes = evaluate_reading(SITE, SMOKE, smoke(state, ts=T0), DeviceStatus("normal", T0 - 60, 90.0), alerts)
    assert changes[0] == Resolve(DET_OFFLINE, "messages resumed")
    assert DET_OFFLINE not in apply(alerts, changes)


@pytest.mark.parametrize("state", list(SmokeState))
def test_detector_offline_resumed_by_a_stale_smoke_reading(state: SmokeState) -> None:
    alerts = alerts_of(open_alert(AlertKind.DETECTOR_OFFLINE, SMOKE))
    changes = evaluate_reading(SITE, SMOKE, smoke(state, ts=T0), DeviceStatus("normal", T0 + 60, 90.0), alerts)
    assert changes[0] == Resolve(DET_OFFLINE, "messages resumed")


def test_offline_alerts_are_resumed_only_by_their_own_device() -> None:
    alerts = alerts_of(
        open_alert(AlertKind.CAMERA_OFFLINE, "cam-2"),
        open_alert(AlertKind.DETECTOR_OFFLINE, "smoke-2"),
        open_alert(AlertKind.CAMERA_OFFLINE, CAM, site=OTHER_SITE),
    )
    assert evaluate_reading(SITE, CAM, hb(), None, alerts) == []
    assert evaluate_reading(SITE, SMOKE, smoke(), None, alerts) == []


def test_exit_reading_resumes_nothing() -> None:
    alerts = alerts_of(open_alert(AlertKind.CAMERA_OFFLINE, EXIT), open_alert(AlertKind.DETECTOR_OFFLINE, EXIT))
    assert evaluate_reading(SITE, EXIT, ex(), None, alerts) == []


def test_silence_and_resume_cycle_counts_one_each_time() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(ts=T0))
    sim.silence(SMOKE, DeviceKind.SMOKE, last_seen=T0, timeout_s=30.0, now=T0 + 31)
    assert DET_OFFLINE in sim.alerts
    sim.feed(SMOKE, smoke(ts=T0 + 31))
    assert DET_OFFLINE not in sim.alerts
    sim.silence(SMOKE, DeviceKind.SMOKE, last_seen=T0 + 31, timeout_s=30.0, now=T0 + 62)
    assert sim.alerts[DET_OFFLINE].count == 1


# --------------------------------------------------------------------------- agent_offline


def test_agent_offline_raised_by_will() -> None:
    changes = evaluate_agent_status(SITE, online=False, boot=BOOT, current_boot=BOOT, currently_online=True, alerts={})
    assert changes == [Raise(AGENT, {"boot": BOOT})]
    assert changes[0].key.device is None
    assert SEVERITY[AlertKind.AGENT_OFFLINE] is Severity.MAJOR


@pytest.mark.parametrize(
    ("current_boot", "currently_online"), [(None, None), (BOOT, False), ("old", False), (None, True)]
)
def test_agent_offline_raised_when_not_known_to_be_online_under_another_boot(
    current_boot: str | None, currently_online: bool | None
) -> None:
    changes = evaluate_agent_status(
        SITE, online=False, boot=BOOT, current_boot=current_boot, currently_online=currently_online, alerts={}
    )
    assert changes == [Raise(AGENT, {"boot": BOOT})]


def test_agent_offline_not_raised_twice() -> None:
    alerts = alerts_of(open_alert(AlertKind.AGENT_OFFLINE, None, boot=BOOT))
    assert (
        evaluate_agent_status(SITE, online=False, boot=BOOT, current_boot=BOOT, currently_online=False, alerts=alerts)
        == []
    )


def test_agent_offline_resolved_by_birth() -> None:
    alerts = alerts_of(open_alert(AlertKind.AGENT_OFFLINE, None, boot=BOOT))
    changes = evaluate_agent_status(
        SITE, online=True, boot="boot-b", current_boot=BOOT, currently_online=False, alerts=alerts
    )
    assert changes == [Resolve(AGENT, "agent back online")]


def test_birth_without_open_alert_changes_nothing() -> None:
    assert (
        evaluate_agent_status(SITE, online=True, boot=BOOT, current_boot=None, currently_online=None, alerts={}) == []
    )


def test_stale_will_of_an_older_boot_is_ignored_while_online() -> None:
    changes = evaluate_agent_status(
        SITE, online=False, boot="boot-old", current_boot="boot-new", currently_online=True, alerts={}
    )
    assert changes == []


def test_agent_offline_is_per_site() -> None:
    alerts = alerts_of(open_alert(AlertKind.AGENT_OFFLINE, None, site=OTHER_SITE))
    assert (
        evaluate_agent_status(SITE, online=True, boot=BOOT, current_boot=None, currently_online=None, alerts=alerts)
        == []
    )
    assert evaluate_agent_status(
        SITE, online=False, boot=BOOT, current_boot=BOOT, currently_online=True, alerts=alerts
    ) == [Raise(AGENT, {"boot": BOOT})]


# --------------------------------------------------------------------------- fire_alarm_exit_blocked


def test_compound_raised_when_alarm_then_exit_blocked() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    assert COMPOUND not in sim.alerts
    changes = sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1))
    assert changes == [
        Raise(BLOCKED, {"blocked_ratio": 0.9, "blocked_since": T0 + 1 - 30}),
        Raise(COMPOUND, {"detectors": [SMOKE], "exits": [EXIT]}),
    ]
    assert sim.alerts[COMPOUND].key.device is None
    assert SEVERITY[AlertKind.FIRE_ALARM_EXIT_BLOCKED] is Severity.CRITICAL


def test_compound_raised_when_exit_blocked_then_alarm() -> None:
    sim = Sim()
    sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0))
    changes = sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 1))
    assert kinds(changes) == [("Raise", AlertKind.FIRE_ALARM), ("Raise", AlertKind.FIRE_ALARM_EXIT_BLOCKED)]
    assert sim.alerts[COMPOUND].detail == {"detectors": [SMOKE], "exits": [EXIT]}


def test_compound_not_repeated_by_further_readings() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1))
    assert sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 2)) == []
    assert sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 3)) == []
    assert sim.feed(CAM, hb(ts=T0 + 4)) == []
    assert sim.alerts[COMPOUND].count == 1


def test_compound_resolved_when_exit_clears() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1))
    changes = sim.feed(EXIT, ex(ExitState.CLEAR, ts=T0 + 2))
    assert changes == [Resolve(BLOCKED, "exit clear"), Resolve(COMPOUND, "exits clear")]
    assert FIRE in sim.alerts
    assert COMPOUND not in sim.alerts


def test_compound_resolved_when_fire_alarm_ends() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1))
    sim.ack(FIRE)
    changes = sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 2))
    assert changes == [
        Resolve(FIRE, "detector back to normal after acknowledgement"),
        Resolve(COMPOUND, "fire alarm ended"),
    ]
    assert BLOCKED in sim.alerts


def test_compound_resolved_when_fire_alarm_resolved_by_ack() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1))
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 2))
    assert COMPOUND in sim.alerts  # the fire alarm is still open (unacknowledged)
    changes = sim.ack(FIRE)
    assert changes == [
        Resolve(FIRE, "acknowledged with detector back to normal"),
        Resolve(COMPOUND, "fire alarm ended"),
    ]


def test_compound_not_raised_across_sites() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0), site=SITE)
    changes = sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1), site=OTHER_SITE)
    assert kinds(changes) == [("Raise", AlertKind.EXIT_BLOCKED)]
    assert all(k.kind is not AlertKind.FIRE_ALARM_EXIT_BLOCKED for k in sim.alerts)
    alerts = alerts_of(
        open_alert(AlertKind.FIRE_ALARM, SMOKE, site=SITE),
        open_alert(AlertKind.EXIT_BLOCKED, EXIT, site=OTHER_SITE),
    )
    assert evaluate_compound(SITE, alerts) == []
    assert evaluate_compound(OTHER_SITE, alerts) == []


def test_compound_needs_both_conditions() -> None:
    assert evaluate_compound(SITE, {}) == []
    assert evaluate_compound(SITE, alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE))) == []
    assert evaluate_compound(SITE, alerts_of(open_alert(AlertKind.EXIT_BLOCKED, EXIT))) == []
    # other kinds do not count as either condition
    others = alerts_of(
        open_alert(AlertKind.DETECTOR_FAULT, SMOKE),
        open_alert(AlertKind.CAMERA_OFFLINE, EXIT),
        open_alert(AlertKind.AGENT_OFFLINE, None),
    )
    assert evaluate_compound(SITE, others) == []


def test_compound_counts_acknowledged_alerts() -> None:
    alerts = alerts_of(
        open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.ACKNOWLEDGED),
        open_alert(AlertKind.EXIT_BLOCKED, EXIT, state=AlertState.ACKNOWLEDGED),
    )
    assert evaluate_compound(SITE, alerts) == [Raise(COMPOUND, {"detectors": [SMOKE], "exits": [EXIT]})]


def test_compound_detail_follows_devices_and_stays_until_the_last_exit_clears() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(EXIT2, ex(ExitState.BLOCKED, ts=T0 + 1))
    changes = sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 2))
    assert Update(COMPOUND, {"detectors": [SMOKE], "exits": [EXIT, EXIT2]}, "updated") in changes
    assert sim.alerts[COMPOUND].count == 1
    changes = sim.feed(EXIT, ex(ExitState.CLEAR, ts=T0 + 3))
    assert Update(COMPOUND, {"detectors": [SMOKE], "exits": [EXIT2]}, "updated") in changes
    assert COMPOUND in sim.alerts
    changes = sim.feed(EXIT2, ex(ExitState.CLEAR, ts=T0 + 4))
    assert Resolve(COMPOUND, "exits clear") in changes


def test_compound_resolve_without_open_compound_is_nothing() -> None:
    assert evaluate_compound(SITE, alerts_of(open_alert(AlertKind.EXIT_BLOCKED, EXIT))) == []


def test_stale_alarm_raises_compound_too() -> None:
    alerts = alerts_of(open_alert(AlertKind.EXIT_BLOCKED, EXIT))
    changes, after = evaluate(
        SITE, SMOKE, smoke(SmokeState.ALARM, ts=T0), DeviceStatus("normal", T0 + 10, 90.0), alerts
    )
    assert kinds(changes) == [("Raise", AlertKind.FIRE_ALARM), ("Raise", AlertKind.FIRE_ALARM_EXIT_BLOCKED)]
    assert COMPOUND in after


def test_escalated_compound_alert_is_not_updated_by_every_reading() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 1))
    escalation = evaluate_escalation(sim.alerts[COMPOUND], opened_at=T0 + 1, now=T0 + 61, after_s=60.0)
    assert kinds(escalation) == [("Update", AlertKind.FIRE_ALARM_EXIT_BLOCKED)]
    sim.alerts = apply(sim.alerts, escalation)
    # same detectors, same exits: nothing changed, so nothing to record
    assert evaluate_compound(SITE, sim.alerts) == []
    assert sim.feed(EXIT, ex(ExitState.BLOCKED, ts=T0 + 70)) == []


# --------------------------------------------------------------------------- escalation


def _escalation_detail(now: float, after_s: float) -> dict[str, object]:
    return {"escalated": True, "escalated_at": iso(now), "escalation_level": 1, "unacknowledged_s": after_s}


@pytest.mark.parametrize("kind", [AlertKind.FIRE_ALARM, AlertKind.FIRE_ALARM_EXIT_BLOCKED])
def test_critical_open_alert_escalates_exactly_at_the_delay(kind: AlertKind) -> None:
    device = None if kind in SITE_LEVEL_KINDS else SMOKE
    alert = open_alert(kind, device)
    changes = evaluate_escalation(alert, opened_at=T0, now=T0 + 60.0, after_s=60.0)
    assert changes == [Update(alert.key, _escalation_detail(T0 + 60.0, 60.0), "escalated")]


@pytest.mark.parametrize("elapsed", [0.0, 30.0, 59.999])
def test_no_escalation_before_the_delay(elapsed: float) -> None:
    alert = open_alert(AlertKind.FIRE_ALARM, SMOKE)
    assert evaluate_escalation(alert, opened_at=T0, now=T0 + elapsed, after_s=60.0) == []


def test_escalation_long_after_the_delay() -> None:
    alert = open_alert(AlertKind.FIRE_ALARM, SMOKE)
    changes = evaluate_escalation(alert, opened_at=T0, now=T0 + 600, after_s=60.0)
    assert len(changes) == 1
    assert isinstance(changes[0], Update)
    assert changes[0].detail["escalated"] is True
    assert changes[0].detail["escalated_at"] == iso(T0 + 600)


def test_escalation_happens_once() -> None:
    alerts = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE))
    changes = evaluate_escalation(alerts[FIRE], opened_at=T0, now=T0 + 60, after_s=60.0)
    alerts = apply(alerts, changes)
    assert alerts[FIRE].detail["escalated"] is True
    assert alerts[FIRE].count == 1
    assert alerts[FIRE].state is AlertState.OPEN
    assert evaluate_escalation(alerts[FIRE], opened_at=T0, now=T0 + 3600, after_s=60.0) == []


def test_acknowledged_alert_does_not_escalate() -> None:
    alert = open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.ACKNOWLEDGED)
    assert evaluate_escalation(alert, opened_at=T0, now=T0 + 3600, after_s=60.0) == []


def test_resolved_state_does_not_escalate() -> None:
    alert = open_alert(AlertKind.FIRE_ALARM, SMOKE, state=AlertState.RESOLVED)
    assert evaluate_escalation(alert, opened_at=T0, now=T0 + 3600, after_s=60.0) == []


@pytest.mark.parametrize("kind", [k for k in AlertKind if SEVERITY[k] is not Severity.CRITICAL])
def test_non_critical_alerts_never_escalate(kind: AlertKind) -> None:
    device = None if kind in SITE_LEVEL_KINDS else "dev-1"
    alert = open_alert(kind, device)
    assert evaluate_escalation(alert, opened_at=T0, now=T0 + 10**6, after_s=60.0) == []


def test_escalation_respects_the_configured_delay() -> None:
    alert = open_alert(AlertKind.FIRE_ALARM, SMOKE)
    assert evaluate_escalation(alert, opened_at=T0, now=T0 + 119, after_s=120.0) == []
    assert len(evaluate_escalation(alert, opened_at=T0, now=T0 + 120, after_s=120.0)) == 1
    assert len(evaluate_escalation(alert, opened_at=T0, now=T0, after_s=0.0)) == 1


def test_repeat_after_escalation_keeps_escalated_flag() -> None:
    sim = Sim()
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0))
    sim.alerts = apply(sim.alerts, evaluate_escalation(sim.alerts[FIRE], opened_at=T0, now=T0 + 60, after_s=60.0))
    sim.feed(SMOKE, smoke(SmokeState.NORMAL, ts=T0 + 61))
    sim.feed(SMOKE, smoke(SmokeState.ALARM, ts=T0 + 62))
    assert sim.alerts[FIRE].count == 2
    assert sim.alerts[FIRE].detail["escalated"] is True
    assert evaluate_escalation(sim.alerts[FIRE], opened_at=T0, now=T0 + 200, after_s=60.0) == []


# --------------------------------------------------------------------------- evaluate / invariants


def test_evaluate_returns_reading_changes_then_compound_and_the_alerts_after() -> None:
    alerts = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE))
    changes, after = evaluate(SITE, EXIT, ex(ExitState.BLOCKED), None, alerts)
    assert kinds(changes) == [("Raise", AlertKind.EXIT_BLOCKED), ("Raise", AlertKind.FIRE_ALARM_EXIT_BLOCKED)]
    assert set(after) == {FIRE, BLOCKED, COMPOUND}
    assert set(alerts) == {FIRE}  # input untouched


def test_evaluate_reading_never_touches_compound() -> None:
    alerts = alerts_of(open_alert(AlertKind.FIRE_ALARM, SMOKE))
    assert kinds(evaluate_reading(SITE, EXIT, ex(ExitState.BLOCKED), None, alerts)) == [
        ("Raise", AlertKind.EXIT_BLOCKED)
    ]


def test_alerts_of_other_sites_are_untouched() -> None:
    other = alerts_of(
        open_alert(AlertKind.FIRE_ALARM, SMOKE, site=OTHER_SITE, state=AlertState.ACKNOWLEDGED),
        open_alert(AlertKind.EXIT_BLOCKED, EXIT, site=OTHER_SITE),
        open_alert(AlertKind.FIRE_ALARM_EXIT_BLOCKED, None, site=OTHER_SITE),
        open_alert(AlertKind.DETECTOR_OFFLINE, SMOKE, site=OTHER_SITE),
    )
    cases: list[tuple[Reading, str]] = [(smoke(SmokeState.NORMAL), SMOKE), (ex(ExitState.CLEAR), EXIT), (hb(), CAM)]
    for reading, device in cases:
        changes, after = evaluate(SITE, device, reading, DeviceStatus("alarm", T0 - 1), other)
        assert all(c.key.site == SITE for c in changes)
        assert {k: v for k, v in after.items() if k.site == OTHER_SITE} == other


def _random_reading(rng: random.Random, device: str, ts: float, seq: int) -> Reading:
    if device == CAM:
        return hb(rng.choice(list(StreamState)), ts=ts, seq=seq)
    if device in (SMOKE, "smoke-2"):
        battery = rng.choice([None, 5.0, 19.9, 20.0, 80.0])
        return smoke(rng.choice(list(SmokeState)), ts=ts, seq=seq, battery=battery)
    return ex(rng.choice(list(ExitState)), ts=ts, seq=seq)


def _check_invariants(before: OpenAlerts, changes: Sequence[Change]) -> None:
    """Raise only for a key without an unresolved alert, everything else only for an existing one."""
    state = dict(before)
    for change in changes:
        if isinstance(change, Raise):
            assert change.key not in state, f"second open alert for {change.key}"
        else:
            assert change.key in state, f"{type(change).__name__} for missing {change.key}"
        state = apply(state, [change])
        assert (change.key.device is None) == (change.key.kind in SITE_LEVEL_KINDS)


@pytest.mark.parametrize("seed", range(25))
def test_random_streams_keep_one_open_alert_per_key(seed: int) -> None:
    rng = random.Random(seed)
    sim = Sim()
    devices = [CAM, SMOKE, "smoke-2", EXIT, EXIT2]
    ts = dict.fromkeys(devices, T0)
    for seq in range(300):
        device = rng.choice(devices)
        step = rng.choice([1.0, 1.0, 1.0, -5.0])  # sometimes a stale (older) reading
        ts[device] = max(ts[device] + step, T0)
        reading = _random_reading(rng, device, ts[device], seq)
        before = dict(sim.alerts)
        changes = sim.feed(device, reading)
        _check_invariants(before, changes)
        # compound consistency: open iff a fire alarm and a blocked exit are both open
        has_fire = any(k.kind is AlertKind.FIRE_ALARM for k in sim.alerts)
        has_blocked = any(k.kind is AlertKind.EXIT_BLOCKED for k in sim.alerts)
        assert (COMPOUND in sim.alerts) == (has_fire and has_blocked)
        if rng.random() < 0.05 and FIRE in sim.alerts and not sim.alerts[FIRE].acknowledged:
            before = dict(sim.alerts)
            _check_invariants(before, sim.ack(FIRE))
        for alert in sim.alerts.values():
            assert alert.count >= 1


# --------------------------------------------------------------------------- clock skew (issue 15)


def test_one_wild_batch_moves_the_skew_a_bounded_step() -> None:
    skew = smooth_skew(None, [10 * 365 * 86_400.0], 300.0)  # a reading ten years ahead
    assert skew is not None
    assert skew == pytest.approx(0.2 * 600.0)  # clamped to 2 x tolerance, a fifth of the way
    assert evaluate_clock_skew("s", skew_s=skew, tolerance_s=300.0, alerts={}) == []


def test_the_batch_median_not_its_outlier_moves_the_skew() -> None:
    assert smooth_skew(0.0, [1.0, 2.0, 1e9], 300.0) == pytest.approx(0.2 * 2.0)
    assert smooth_skew(5.0, [], 300.0) == 5.0  # nothing new: unchanged


def test_a_steady_skew_raises_clock_skew_and_back_within_resolves_it() -> None:
    key = AlertKey("s", None, AlertKind.CLOCK_SKEW)
    skew: float | None = None
    for _ in range(10):
        skew = smooth_skew(skew, [450.0, 451.0], 300.0)
    assert skew is not None
    assert skew > 300.0
    changes = evaluate_clock_skew("s", skew_s=skew, tolerance_s=300.0, alerts={})
    assert [type(c) for c in changes] == [Raise]
    assert changes[0].key == key
    alerts = apply({}, changes)
    assert evaluate_clock_skew("s", skew_s=skew, tolerance_s=300.0, alerts=alerts) == []  # still open: no repeat
    assert [type(c) for c in evaluate_clock_skew("s", skew_s=-900.0, tolerance_s=300.0, alerts=alerts)] == [Resolve]
    assert evaluate_clock_skew("s", skew_s=-900.0, tolerance_s=300.0, alerts={}) == []  # behind: never raised
