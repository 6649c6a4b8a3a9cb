"""Types the alert rules speak: kinds, keys, the open alerts they see and the changes they decide."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The kinds, severities and states are the wire contract's (protocol/alerts.py); in __all__ for the
# code that imported them from here before they moved.
from protocol.alerts import AlertKind, AlertState, Severity

__all__ = [
    "GATEWAY_KINDS",
    "SEVERITY",
    "SITE_LEVEL_KINDS",
    "Acknowledge",
    "AlertKey",
    "AlertKind",
    "AlertState",
    "Change",
    "DeviceStatus",
    "OpenAlert",
    "OpenAlerts",
    "Raise",
    "Repeat",
    "Resolve",
    "Severity",
    "Update",
]

# DESIGN section 4.
SEVERITY: Mapping[AlertKind, Severity] = {
    AlertKind.FIRE_ALARM: Severity.CRITICAL,
    AlertKind.FIRE_ALARM_EXIT_BLOCKED: Severity.CRITICAL,
    AlertKind.EXIT_BLOCKED: Severity.MAJOR,
    AlertKind.CAMERA_OFFLINE: Severity.MAJOR,
    AlertKind.CAMERA_STREAM_FAULT: Severity.MAJOR,
    AlertKind.DETECTOR_OFFLINE: Severity.MAJOR,
    AlertKind.DETECTOR_FAULT: Severity.MINOR,
    AlertKind.AGENT_OFFLINE: Severity.MAJOR,
    AlertKind.NOTIFIER_FAILING: Severity.MINOR,
    AlertKind.CLOCK_SKEW: Severity.MINOR,
}
# Kinds raised by the gateway's own roles, not by anything a site sends.
GATEWAY_KINDS = frozenset({AlertKind.NOTIFIER_FAILING})
SITE_LEVEL_KINDS = frozenset({AlertKind.AGENT_OFFLINE, AlertKind.FIRE_ALARM_EXIT_BLOCKED, AlertKind.CLOCK_SKEW})


@dataclass(frozen=True, slots=True)
class AlertKey:
    """At most one unresolved alert exists per key."""

    site: str
    device: str | None
    kind: AlertKind


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An unresolved alert (state open or acknowledged) as the rules see it."""

    key: AlertKey
    state: AlertState = AlertState.OPEN
    count: int = 1
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def acknowledged(self) -> bool:
        return self.state is AlertState.ACKNOWLEDGED


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """The device's latest accepted state before the reading being evaluated."""

    status: str  # stream (camera) or state (smoke, exit)
    ts: float
    battery_pct: float | None = None


@dataclass(frozen=True, slots=True)
class Raise:
    """Open a new alert for ``key``."""

    key: AlertKey
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Repeat:
    """The condition of an open alert occurred again: ``count`` grows, ``detail`` is merged."""

    key: AlertKey
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Update:
    """Merge ``detail`` into an open alert (e.g. detector back to normal, escalation)."""

    key: AlertKey
    detail: Mapping[str, Any]
    action: str


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """An operator acknowledged the open alert ``key`` (who and when are the store's)."""

    key: AlertKey


@dataclass(frozen=True, slots=True)
class Resolve:
    key: AlertKey
    reason: str
    by_hand: bool = False  # an operator's step (who is the store's), not a condition that ended


Change = Raise | Repeat | Update | Acknowledge | Resolve
OpenAlerts = Mapping[AlertKey, OpenAlert]
