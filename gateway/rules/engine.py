"""Alert rules of DESIGN section 4 as pure functions: typed inputs in, changes out.

No clock, broker or database here: the caller passes the time and the current
open alerts, applies the returned changes with :func:`apply` and persists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.rules.model import (
    SEVERITY,
    Acknowledge,
    AlertKey,
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
from protocol import (
    DEFAULT_HEARTBEAT_S,
    AlertKind,
    AlertState,
    DeviceKind,
    ExitReading,
    ExitState,
    Heartbeat,
    Reading,
    SmokeReading,
    SmokeState,
    StreamState,
)

# Defaults of the gateway's settings of the same names (DESIGN section 4), defined here only.
BATTERY_LOW_PCT = 20.0  # below this a detector's battery is a detector_fault
MISSED_HEARTBEATS = 3  # silent for heartbeat_s x this: offline


class Heartbeats(BaseModel):
    """When a device or agent counts as silent (DESIGN section 4): heartbeat_s x missed_heartbeats.

    The gateway's ``liveness`` settings are one (gateway/config.py), passed whole to the batch,
    the compliance figures and the sweeps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    missed_heartbeats: int = Field(MISSED_HEARTBEATS, ge=1, le=100)
    default_heartbeat_s: int = Field(DEFAULT_HEARTBEAT_S, ge=1)  # GB/T 28181 keep-alive when the agent did not say

    def params(self) -> dict[str, int]:
        """The query parameters of :data:`gateway.store.db.AGENT_TIMEOUT_S`."""
        return {"default_heartbeat_s": self.default_heartbeat_s, "missed_heartbeats": self.missed_heartbeats}

_DETECTOR_FAULT_STATES = frozenset({SmokeState.FAULT, SmokeState.TAMPER})
_SILENCE_KINDS: Mapping[DeviceKind, AlertKind] = {
    DeviceKind.CAMERA: AlertKind.CAMERA_OFFLINE,
    DeviceKind.SMOKE: AlertKind.DETECTOR_OFFLINE,
}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _condition(
    key: AlertKey,
    alerts: OpenAlerts,
    *,
    holds: bool,
    was_holding: bool,
    detail: Mapping[str, Any],
    clears: bool,
    clear_reason: str,
    tracked: tuple[str, ...] = (),
) -> list[Change]:
    """Raise when the condition starts, count a repeat when it starts again while open, resolve when
    cleared; while it keeps holding, a change of a ``tracked`` detail field (a frozen stream now lost)
    updates the open alert (the other fields, such as fps, change with every message: not tracked)."""
    alert = alerts.get(key)
    if holds:
        if alert is None:
            return [Raise(key, detail)]
        if not was_holding:
            return [Repeat(key, detail)]
        if any(alert.detail.get(f) != detail[f] for f in tracked):
            return [Update(key, detail, "detail_changed")]
        return []
    if clears and alert is not None:
        return [Resolve(key, clear_reason)]
    return []


def _resume(key: AlertKey, alerts: OpenAlerts) -> list[Change]:
    """Any message from a silent device ends its offline alert."""
    return [Resolve(key, "messages resumed")] if key in alerts else []


def _camera(
    site: str, device: str, hb: Heartbeat, prev: DeviceStatus | None, stale: bool, alerts: OpenAlerts
) -> list[Change]:
    changes = _resume(AlertKey(site, device, AlertKind.CAMERA_OFFLINE), alerts)
    if stale:
        return changes
    return changes + _condition(
        AlertKey(site, device, AlertKind.CAMERA_STREAM_FAULT),
        alerts,
        holds=hb.stream is not StreamState.OK,
        was_holding=prev is not None and prev.status != StreamState.OK,
        detail={"stream": hb.stream.value, "fps": hb.fps, "last_frame_ts": hb.last_frame_ts},
        clears=True,
        clear_reason="stream ok again",
        tracked=("stream",),
    )


def _fire_alarm(
    site: str, device: str, reading: SmokeReading, prev: DeviceStatus | None, stale: bool, alerts: OpenAlerts
) -> list[Change]:
    key = AlertKey(site, device, AlertKind.FIRE_ALARM)
    alert = alerts.get(key)
    if reading.state is SmokeState.ALARM:
        # Never lose an alarm: even a late (stale) one raises.
        detail = {"state": "alarm", "obscuration_pct": reading.obscuration_pct, "detector_normal": False}
        if alert is None:
            return [Raise(key, detail)]
        again = prev is None or prev.status != SmokeState.ALARM or alert.detail.get("detector_normal", False)
        return [Repeat(key, detail)] if again and not stale else []
    if alert is None or stale:
        return []
    if reading.state is SmokeState.NORMAL:
        # DESIGN section 4: resolves only when back to normal *and* acknowledged.
        if alert.acknowledged:
            return [Resolve(key, "detector back to normal after acknowledgement")]
        if not alert.detail.get("detector_normal", False):
            return [Update(key, {"detector_normal": True}, "detector_normal")]
        return []
    if alert.detail.get("detector_normal", False):
        return [Update(key, {"detector_normal": False, "state": reading.state.value}, "detector_state")]
    return []


def _detector_fault_holds(state: str, battery_pct: float | None, battery_low_pct: float) -> bool:
    return state in _DETECTOR_FAULT_STATES or (battery_pct is not None and battery_pct < battery_low_pct)


def _smoke(
    site: str,
    device: str,
    reading: SmokeReading,
    prev: DeviceStatus | None,
    stale: bool,
    alerts: OpenAlerts,
    battery_low_pct: float,
) -> list[Change]:
    changes = _resume(AlertKey(site, device, AlertKind.DETECTOR_OFFLINE), alerts)
    changes += _fire_alarm(site, device, reading, prev, stale, alerts)
    if stale:
        return changes
    holds = _detector_fault_holds(reading.state, reading.battery_pct, battery_low_pct)
    return changes + _condition(
        AlertKey(site, device, AlertKind.DETECTOR_FAULT),
        alerts,
        holds=holds,
        was_holding=prev is not None and _detector_fault_holds(prev.status, prev.battery_pct, battery_low_pct),
        detail={"state": reading.state.value, "battery_pct": reading.battery_pct},
        clears=reading.state is SmokeState.NORMAL and not holds,
        clear_reason="detector normal and battery ok",
        tracked=("state",),
    )


def _exit(
    site: str, device: str, reading: ExitReading, prev: DeviceStatus | None, stale: bool, alerts: OpenAlerts
) -> list[Change]:
    if stale:
        return []
    return _condition(
        AlertKey(site, device, AlertKind.EXIT_BLOCKED),
        alerts,
        holds=reading.state is ExitState.BLOCKED,
        was_holding=prev is not None and prev.status == ExitState.BLOCKED,
        detail={"blocked_ratio": reading.blocked_ratio, "blocked_since": reading.blocked_since},
        clears=reading.state is ExitState.CLEAR,
        clear_reason="exit clear",
    )


def evaluate_reading(
    site: str,
    device: str,
    reading: Reading,
    prev: DeviceStatus | None,
    alerts: OpenAlerts,
    *,
    battery_low_pct: float = BATTERY_LOW_PCT,
) -> list[Change]:
    """Changes caused by one device reading. A reading older than the device's latest state
    (``stale``, e.g. a backlog after a partition) only resumes liveness and raises alarms."""
    stale = prev is not None and reading.ts < prev.ts
    if isinstance(reading, Heartbeat):
        return _camera(site, device, reading, prev, stale, alerts)
    if isinstance(reading, SmokeReading):
        return _smoke(site, device, reading, prev, stale, alerts, battery_low_pct)
    return _exit(site, device, reading, prev, stale, alerts)


_COMPOUND_INPUTS = frozenset({AlertKind.FIRE_ALARM, AlertKind.EXIT_BLOCKED})


def evaluate_compound(site: str, alerts: OpenAlerts) -> list[Change]:
    """``fire_alarm_exit_blocked``: a fire alarm open at the site while one of its exits is blocked."""
    detectors = sorted(k.device or "" for k in alerts if k.site == site and k.kind is AlertKind.FIRE_ALARM)
    exits = sorted(k.device or "" for k in alerts if k.site == site and k.kind is AlertKind.EXIT_BLOCKED)
    key = AlertKey(site, None, AlertKind.FIRE_ALARM_EXIT_BLOCKED)
    alert = alerts.get(key)
    if detectors and exits:
        detail = {"detectors": detectors, "exits": exits}
        if alert is None:
            return [Raise(key, detail)]
        if {k: alert.detail.get(k) for k in detail} != detail:  # other keys (escalation) are not ours
            return [Update(key, detail, "updated")]
        return []
    if alert is None:
        return []
    return [Resolve(key, "exits clear" if detectors else "fire alarm ended")]


def evaluate_agent_status(
    site: str,
    *,
    online: bool,
    boot: str,
    current_boot: str | None,
    currently_online: bool | None,
    alerts: OpenAlerts,
) -> list[Change]:
    """``agent_offline`` from the retained status: raised by the Last Will, resolved by a birth."""
    key = AlertKey(site, None, AlertKind.AGENT_OFFLINE)
    if online:
        return [Resolve(key, "agent back online")] if key in alerts else []
    if currently_online and current_boot is not None and current_boot != boot:
        return []  # the Will of an earlier boot, arriving after the agent restarted
    return [] if key in alerts else [Raise(key, {"boot": boot})]


# Clock skew: each batch's median of (ts - arrival) per agent, clamped, moves a smoothed figure a
# fifth of the way: one wild message moves it by at most 2/5 of the tolerance, a steady skew shows
# within a few batches.
SKEW_WEIGHT = 0.2
SKEW_CLAMP = 2.0  # x tolerance


def smooth_skew(previous: float | None, samples: Iterable[float], tolerance_s: float) -> float | None:
    """The agent's smoothed clock skew after this batch's samples (``ts - received_at``, seconds)."""
    ordered = sorted(samples)
    if not ordered:
        return previous
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    bound = SKEW_CLAMP * tolerance_s
    median = max(-bound, min(bound, median))
    base = previous if previous is not None else 0.0
    return base + SKEW_WEIGHT * (median - base)


def evaluate_clock_skew(site: str, *, skew_s: float, tolerance_s: float, alerts: OpenAlerts) -> list[Change]:
    """``clock_skew`` (minor): raised while the agent's clock runs ahead of arrival by more than the
    tolerance, resolved when it is back within. Only ahead: a clock behind cannot be told from a
    delivery backlog (a reading's ts then lags its arrival as well); it shows as ingest lag."""
    key = AlertKey(site, None, AlertKind.CLOCK_SKEW)
    if skew_s > tolerance_s:
        return [] if key in alerts else [Raise(key, {"skew_s": round(skew_s, 1), "tolerance_s": tolerance_s})]
    return [Resolve(key, "agent clock back within tolerance")] if key in alerts else []


def evaluate_silence(
    site: str, device: str, kind: DeviceKind, *, last_seen: float, timeout_s: float, now: float, alerts: OpenAlerts
) -> list[Change]:
    """``camera_offline`` / ``detector_offline`` for a device silent longer than its timeout."""
    alert_kind = _SILENCE_KINDS.get(kind)
    # DESIGN section 5: still online while the last message is *no more than* the timeout old.
    if alert_kind is None or now - last_seen <= timeout_s:
        return []
    key = AlertKey(site, device, alert_kind)
    if key in alerts:
        return []
    return [Raise(key, {"last_seen": iso(last_seen), "timeout_s": timeout_s})]


def evaluate_unheard(
    site: str, device: str, kind: DeviceKind, *, declared_at: float, timeout_s: float, now: float, alerts: OpenAlerts
) -> list[Change]:
    """``camera_offline`` / ``detector_offline`` for a device its agent declared (at ``declared_at``)
    that has sent nothing at all within the timeout since: silent from the start."""
    return [
        Raise(change.key, {"last_seen": None, "declared_at": iso(declared_at), "timeout_s": timeout_s})
        for change in evaluate_silence(site, device, kind, last_seen=declared_at, timeout_s=timeout_s, now=now,
                                       alerts=alerts)
        if isinstance(change, Raise)
    ]


def evaluate_escalation(alert: OpenAlert, *, opened_at: float, now: float, after_s: float) -> list[Change]:
    """An open critical alert that no one acknowledged within ``after_s`` escalates, once."""
    if (
        SEVERITY[alert.key.kind] is not Severity.CRITICAL
        or alert.state is not AlertState.OPEN
        or alert.detail.get("escalated")
        or now - opened_at < after_s
    ):
        return []
    detail = {"escalated": True, "escalated_at": iso(now), "escalation_level": 1, "unacknowledged_s": now - opened_at}
    return [Update(alert.key, detail, "escalated")]


def evaluate_notifier(
    site: str, channel: str, *, failing: bool, since: float | None, alerts: OpenAlerts
) -> list[Change]:
    """``notifier_failing`` (device: the channel) while deliveries of the site's alerts through
    ``channel`` keep failing (the notifier decides ``failing``); resolved once one gets through."""
    key = AlertKey(site, channel, AlertKind.NOTIFIER_FAILING)
    if failing and key not in alerts:
        return [Raise(key, {"channel": channel, "failing_since": iso(since) if since is not None else None})]
    if not failing and key in alerts:
        return [Resolve(key, "deliveries through the channel succeed again")]
    return []


def evaluate_acknowledged(alert: OpenAlert) -> list[Change]:
    """After an acknowledgement: a fire alarm whose detector is already normal resolves."""
    if alert.key.kind is AlertKind.FIRE_ALARM and alert.detail.get("detector_normal", False):
        return [Resolve(alert.key, "acknowledged with detector back to normal")]
    return []


def refuse_resolve(alert: OpenAlert) -> str | None:
    """Why a manual resolve is refused (HTTP 409), or None when it is allowed (DESIGN section 4)."""
    if alert.acknowledged:
        return None
    if alert.key.kind is AlertKind.FIRE_ALARM:
        return "a fire alarm must be acknowledged before it is resolved"
    if SEVERITY[alert.key.kind] is Severity.CRITICAL:
        return f"a critical alert ({alert.key.kind}) must be acknowledged before it is resolved by hand"
    return None


class StepRefused(Exception):
    """An operator's step that the alert's state does not allow (HTTP 409); ``code`` names why
    (docs/api.md: ``ack_required``, ``already_acknowledged``, ``condition_holds``)."""

    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message)
        self.code = code


def acknowledge(alert: OpenAlert, alerts: OpenAlerts) -> list[Change]:
    """An operator acknowledges ``alert``: the step, what follows it, then the site's compound rule."""
    if alert.acknowledged:
        raise StepRefused("the alert is already acknowledged", "already_acknowledged")
    step: list[Change] = [Acknowledge(alert.key)]
    after = apply(alerts, step)
    follow = evaluate_acknowledged(after[alert.key])
    after = apply(after, follow)
    compound = evaluate_compound(alert.key.site, after)
    return step + follow + compound


def resolve_by_hand(alert: OpenAlert, alerts: OpenAlerts) -> list[Change]:
    """An operator resolves ``alert`` (refused for an unacknowledged critical one), then the compound rule."""
    refusal = refuse_resolve(alert)
    if refusal:
        raise StepRefused(refusal, "ack_required")
    step: list[Change] = [Resolve(alert.key, "resolved by hand", by_hand=True)]
    follow = evaluate_compound(alert.key.site, apply(alerts, step))
    if any(isinstance(c, Raise) and c.key == alert.key for c in follow):
        # The compound alert would open again at once as a new alert, losing its acknowledgement
        # and escalation: it ends when its fire alarm ends or its exits clear, not by hand.
        raise StepRefused("the fire alarm is still open and an exit still blocked: resolve the fire alarm"
                          " or clear the exit first", "condition_holds")
    return step + follow


def apply(alerts: OpenAlerts, changes: Iterable[Change]) -> dict[AlertKey, OpenAlert]:
    """The open alerts after ``changes``."""
    result = dict(alerts)
    for change in changes:
        current = result.get(change.key)
        match change:
            case Raise():
                result[change.key] = OpenAlert(change.key, AlertState.OPEN, 1, dict(change.detail))
            case Repeat() if current is not None:
                result[change.key] = OpenAlert(
                    change.key, current.state, current.count + 1, {**current.detail, **change.detail}
                )
            case Update() if current is not None:
                result[change.key] = OpenAlert(
                    change.key, current.state, current.count, {**current.detail, **change.detail}
                )
            case Acknowledge() if current is not None:
                result[change.key] = OpenAlert(change.key, AlertState.ACKNOWLEDGED, current.count, current.detail)
            case Resolve():
                result.pop(change.key, None)
    return result


def evaluate(
    site: str,
    device: str,
    reading: Reading,
    prev: DeviceStatus | None,
    alerts: OpenAlerts,
    *,
    battery_low_pct: float = BATTERY_LOW_PCT,
) -> tuple[list[Change], OpenAlerts]:
    """A reading's own changes followed by the site-level compound rule, and the alerts after both."""
    changes = evaluate_reading(site, device, reading, prev, alerts, battery_low_pct=battery_low_pct)
    if not any(c.key.kind in _COMPOUND_INPUTS for c in changes):
        # The compound rule reads only fire alarms and blocked exits: nothing for it to redo. This
        # keeps a routine reading from scanning every open alert of the batch's sites.
        return changes, apply(alerts, changes) if changes else alerts
    after = apply(alerts, changes)
    compound = evaluate_compound(site, after)
    return changes + compound, apply(after, compound)
