"""Alerts as wire contract v1 carries them on ``sg/v1/alerts/{site}`` (DESIGN.md sections 4 and 7).

The gateway decides alerts and publishes every change; anyone may subscribe (a fire brigade's
dispatch system, the scenario checker, tests) and parse a message with
``Alert.model_validate_json(payload)``. The same object is what the API answers for an alert.

The model is frozen and strict like the other contract messages, and ignores unknown fields
(new fields are v1-compatible additions). Kinds, severities and states are closed enums: an alert
of a kind newer than this copy of ``protocol`` is refused, so upgrade it with the gateway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
)


class AlertKind(StrEnum):
    FIRE_ALARM = "fire_alarm"
    FIRE_ALARM_EXIT_BLOCKED = "fire_alarm_exit_blocked"
    EXIT_BLOCKED = "exit_blocked"
    CAMERA_OFFLINE = "camera_offline"
    CAMERA_STREAM_FAULT = "camera_stream_fault"
    DETECTOR_OFFLINE = "detector_offline"
    DETECTOR_FAULT = "detector_fault"
    AGENT_OFFLINE = "agent_offline"
    NOTIFIER_FAILING = "notifier_failing"  # raised by the notifier (gateway/notify), device = the channel
    CLOCK_SKEW = "clock_skew"  # the agent's clock runs ahead of arrival beyond the tolerance (issue 15)


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def rfc3339(value: datetime) -> str:
    """Alert (and API) times: RFC 3339 in UTC with a ``Z``."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_key(site: str, device: str | None, kind: str) -> str:
    """``site/device/kind`` (``site//kind`` for a site-level alert): at most one unresolved alert has
    it (DESIGN section 4), so a provisional alert and the stored one that replaces it share it.
    Unambiguous: ids have no ``/`` and are never empty."""
    return f"{site}/{device or ''}/{kind}"


Time = Annotated[AwareDatetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]


class Alert(BaseModel):
    """One alert change on ``sg/v1/alerts/{site}``: the alert as the API shows it (DESIGN section 7).

    ``key`` was added in issue 15; so were ``change_id`` (the relay's, to drop repeats by) and
    ``provisional`` (an alert ingest published while the database was away, ``id`` null): both are
    left out of the JSON when unset, as the gateway has always sent them.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", allow_inf_nan=False)

    id: int | None  # None: a provisional alert, not stored yet
    key: str
    site: str
    device: str | None  # None: a site-level alert; the channel of a notifier_failing alert
    kind: AlertKind
    severity: Severity
    state: AlertState
    opened_at: Time
    updated_at: Time
    acknowledged_at: Time | None = None
    acknowledged_by: str | None = None
    resolved_at: Time | None = None
    resolved_by: str | None = None
    count: int = 1  # times raised while open
    detail: dict[str, Any] = Field(default_factory=dict)
    change_id: int | None = None
    provisional: bool = False

    @model_serializer(mode="wrap")
    def _without_unset_additions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.change_id is None:
            data.pop("change_id", None)
        if not self.provisional:
            data.pop("provisional", None)
        return data
