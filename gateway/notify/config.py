"""The notifier's settings (``notify:`` in the gateway's YAML): channels, routes in steps, quiet hours
and maintenance windows. Validated here so that a bad file is refused at start with the key named.

docs/operations.md, "Notifications", explains each key with an example for a county.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.notify.channels.dingtalk import DingTalkConfig
from gateway.notify.channels.email import EmailConfig
from gateway.notify.channels.webhook import WebhookConfig
from gateway.notify.channels.wecom import WeComConfig
from protocol import AlertKind, Severity

# One adapter per ``type``; an SMS gateway is one more config class here and one more file in
# channels/ (docs/operations.md, "Adding a channel").
ChannelConfig = Annotated[WebhookConfig | WeComConfig | DingTalkConfig | EmailConfig, Field(discriminator="type")]

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Which alerts a route takes: every listed field must match (an empty list: any)."""

    severity: tuple[Severity, ...] = ()
    kind: tuple[AlertKind, ...] = ()
    site: tuple[str, ...] = ()
    county: tuple[str, ...] = ()
    city: tuple[str, ...] = ()


class Step(_Strict):
    """Tell ``channels`` once the alert has been open and unacknowledged for ``after_s``."""

    after_s: float = Field(0.0, ge=0)
    channels: tuple[str, ...] = Field(min_length=1)


class Route(_Strict):
    name: str = Field(pattern=_NAME)
    match: Match = Match()
    steps: tuple[Step, ...] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _in_order(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        delays = [s.after_s for s in steps]
        if delays != sorted(delays) or len(set(delays)) != len(delays):
            raise ValueError(f"steps must have strictly increasing after_s (got {delays})")
        return steps


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
    return value


class QuietHours(_Strict):
    """Every day from ``start`` to ``end`` (local time; may cross midnight): no page for a major or
    minor alert of these sites (recorded as suppressed). Critical alerts are never held back."""

    sites: tuple[str, ...] = ()  # empty with empty counties: every site
    counties: tuple[str, ...] = ()
    start: time
    end: time
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return _zone(value)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end are the same time: quiet hours would be empty")
        return self


class Maintenance(_Strict):
    """Planned work on a site from ``start`` to ``end``: alerts of the ``kinds`` named (of the
    ``devices`` named, if any) page no one; recorded as suppressed. Only the kinds named: planned
    detector work names detector_fault and detector_offline, and a real fire alarm still pages."""

    site: str
    kinds: tuple[AlertKind, ...] = Field(min_length=1)
    devices: tuple[str, ...] = ()
    start: datetime
    end: datetime
    note: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Maintenance:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a time zone, e.g. 2026-12-01T09:00:00+08:00")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class NotifyConfig(_Strict):
    """``notify:`` in the gateway's settings. No channels and no routes: the notifier has nothing to do."""

    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    quiet_hours: tuple[QuietHours, ...] = ()
    maintenance: tuple[Maintenance, ...] = ()
    language: Literal["zh-CN", "en"] = "zh-CN"
    # Minor alerts go into one digest per channel at most this often, never one page each.
    digest_interval_s: float = Field(900.0, gt=0)
    timeout_s: float = Field(5.0, gt=0, le=120)  # per delivery (connect, read, write; SMTP too)
    concurrency: int = Field(16, ge=1, le=256)  # deliveries under way at once per notifier process
    max_attempts: int = Field(8, ge=1, le=100)
    retry_backoff_s: float = Field(2.0, gt=0)  # doubled after each failed attempt
    retry_max_s: float = Field(300.0, gt=0)
    poll_interval_s: float = Field(0.5, gt=0, le=60)  # besides the wake-up on each alert change
    # A delivery claimed by a notifier that died is taken again this long after its timeout.
    lease_margin_s: float = Field(10.0, gt=0)
    # A channel whose attempts failed for this long (no success in between) raises notifier_failing.
    failing_after_s: float = Field(300.0, ge=0)
    # Alert changes older than this when the notifier first sees them are not notified (a backlog).
    stale_after_s: float = Field(86_400.0, gt=0)
    # Links in the messages to the console's alert page, e.g. https://safeguard.example.gov.cn
    console_url: str | None = None

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, channels: dict[str, ChannelConfig]) -> dict[str, ChannelConfig]:
        bad = sorted(name for name in channels if not re.match(_NAME, name))
        if bad:
            raise ValueError(f"channel names must match {_NAME}: {bad}")
        return channels

    @model_validator(mode="after")
    def _routes_name_channels(self) -> NotifyConfig:
        names = [r.name for r in self.routes]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"route names must be unique: {doubled}")
        for route in self.routes:
            for index, step in enumerate(route.steps):
                unknown = sorted(set(step.channels) - set(self.channels))
                if unknown:
                    raise ValueError(f"route {route.name!r} step {index} names unknown channel(s) {unknown};"
                                     f" configured: {sorted(self.channels)}")
        return self


