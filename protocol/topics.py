"""Topic strings of wire contract v1: built and parsed here and nowhere else.

Layout (DESIGN.md section 3)::

    sg/v1/{site}/agent/status        retained agent birth / Last Will
    sg/v1/{site}/{device}/heartbeat  camera heartbeat
    sg/v1/{site}/{device}/smoke      smoke detector state
    sg/v1/{site}/{device}/exit       exit blockage state
    sg/v1/{site}/{device}/snapshot   JPEG bytes
    sg/v1/alerts/{site}              alert changes, published by the gateway
    sg/v1/{site}/agent/ack           what the gateway committed, published by the gateway (issue 15)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "sg/v1"
SUBSCRIPTION = f"{PREFIX}/#"
# Safety-critical messages (smoke, exit, agent status) have their own ingest lane, so that they
# never queue behind routine traffic (camera heartbeats): not at the broker, not in a batch.
ALARM_FILTERS = (f"{PREFIX}/+/+/smoke", f"{PREFIX}/+/+/exit", f"{PREFIX}/+/+/status")
_ALARM_TYPES = frozenset({"smoke", "exit", "status"})
# Everything but the alarm filters, without overlap, except five-level topics of an unknown type
# (sg/v1/{site}/{device}/video): MQTT has no "all but" filter. The gateway's own confirmations
# (sg/v1/{site}/agent/ack) are such a topic: these filters never match them, sg/v1/# does. Those need sg/v1/#
# (a second delivery of every safety message) or a broker ACL that refuses them (the one `safeguard
# broker-config` writes).
ROUTINE_FILTERS = (f"{PREFIX}/+/+/heartbeat", f"{PREFIX}/+/+/snapshot", f"{PREFIX}/+", f"{PREFIX}/+/+",
                   f"{PREFIX}/+/+/+/+/#")  # "#" also matches its parent level: six levels and more
_PREFIX_SLASH = f"{PREFIX}/"
ALERTS_FILTER = f"{PREFIX}/alerts/#"
_ALERTS_LEVEL = "alerts"
_AGENT_DEVICE = "agent"
_ACK_TYPE = "ack"
# The gateway's confirmations to every agent (its ACL: write sg/v1/+/agent/ack; a site reads its own).
ACK_FILTER = f"{PREFIX}/+/{_AGENT_DEVICE}/{_ACK_TYPE}"
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A site called "alerts" could publish on sg/v1/alerts/{other site} under a per-site broker ACL
# (sg/v1/{site}/#) and forge gateway alerts; a device called "agent" would shadow the status topic.
RESERVED_SITE_IDS = frozenset({_ALERTS_LEVEL})
RESERVED_DEVICE_IDS = frozenset({_AGENT_DEVICE})


class MessageType(StrEnum):
    STATUS = "status"
    HEARTBEAT = "heartbeat"
    SMOKE = "smoke"
    EXIT = "exit"
    SNAPSHOT = "snapshot"


_DEVICE_TYPES = frozenset(MessageType) - {MessageType.STATUS}


class TopicError(ValueError):
    """A topic that is not part of the contract; ``str()`` is the precise reason."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed inbound topic. ``device`` is None for the agent status topic."""

    site: str
    device: str | None
    type: MessageType

    def __str__(self) -> str:
        if self.device is None:
            return status_topic(self.site)
        return device_topic(self.site, self.device, self.type)


def valid_id(value: str) -> bool:
    """True when ``value`` is a contract identifier (site or device id)."""
    return _ID_RE.fullmatch(value) is not None


def _checked_id(value: str, what: str) -> str:
    if not valid_id(value):
        raise ValueError(f"{what} id {value!r} does not match {_ID_RE.pattern}")
    return value


def _checked_site(site: str) -> str:
    if site in RESERVED_SITE_IDS:
        raise ValueError(f"site id {site!r} is reserved")
    return _checked_id(site, "site")


def status_topic(site: str) -> str:
    return f"{PREFIX}/{_checked_site(site)}/{_AGENT_DEVICE}/{MessageType.STATUS}"


def device_topic(site: str, device: str, message_type: MessageType) -> str:
    if message_type not in _DEVICE_TYPES:
        raise ValueError(f"{message_type} is not a device message type")
    if device in RESERVED_DEVICE_IDS:
        raise ValueError(f"device id {device!r} is reserved")
    return f"{PREFIX}/{_checked_site(site)}/{_checked_id(device, 'device')}/{message_type}"


def alert_topic(site: str) -> str:
    return f"{PREFIX}/{_ALERTS_LEVEL}/{_checked_id(site, 'site')}"


def is_alert_topic(topic: str) -> bool:
    """True for the gateway's own outbound alert topics (which ingest ignores)."""
    levels = topic.split("/")
    return len(levels) == 4 and "/".join(levels[:3]) == f"{PREFIX}/{_ALERTS_LEVEL}"


def ack_topic(site: str) -> str:
    """Where the gateway confirms to ``site``'s agent what it has committed (wire contract, issue 15)."""
    return f"{PREFIX}/{_checked_site(site)}/{_AGENT_DEVICE}/{_ACK_TYPE}"


def is_ack_topic(topic: str) -> bool:
    """True for the gateway's own outbound confirmation topics (which ingest ignores, as alerts)."""
    levels = topic.split("/")
    return (len(levels) == 5 and topic.startswith(_PREFIX_SLASH) and levels[3] == _AGENT_DEVICE
            and levels[4] == _ACK_TYPE)


def ack_topic_site(topic: str) -> str:
    """The site of a confirmation topic, or raise :class:`TopicError` saying why it is not one."""
    if not is_ack_topic(topic):
        raise TopicError(f"topic {topic!r} is not {PREFIX}/{{site}}/{_AGENT_DEVICE}/{_ACK_TYPE}")
    site = topic.split("/")[2]
    if not valid_id(site) or site in RESERVED_SITE_IDS:
        raise TopicError(f"site id {site!r} of {topic!r} is not a site")
    return site


def is_alarm_topic(topic: str) -> bool:
    """True exactly when ``topic`` matches one of :data:`ALARM_FILTERS` (MQTT's ``+`` rules)."""
    levels = topic.split("/")
    return len(levels) == 5 and topic.startswith(_PREFIX_SLASH) and levels[4] in _ALARM_TYPES


# The common case in one match (a device's reading or snapshot): parse_topic runs once per
# inbound message, and the checks one by one cost more than the rest of decoding but pydantic.
_DEVICE_TOPIC_RE = re.compile(rf"{PREFIX}/([A-Za-z0-9_-]{{1,64}})/([A-Za-z0-9_-]{{1,64}})/([a-z]+)")
_DEVICE_TYPE_OF = {t.value: t for t in _DEVICE_TYPES}


def parse_topic(topic: str) -> Topic:
    """Parse an inbound agent topic, or raise :class:`TopicError` saying why not."""
    match = _DEVICE_TOPIC_RE.fullmatch(topic)
    if match is not None:
        site, device, kind = match.groups()
        message_type = _DEVICE_TYPE_OF.get(kind)
        if message_type is not None and site not in RESERVED_SITE_IDS and device not in RESERVED_DEVICE_IDS:
            return Topic(site, device, message_type)
    return _parse_topic_checks(topic)  # agent status, and every refusal with its reason


def _parse_topic_checks(topic: str) -> Topic:
    levels = topic.split("/")
    if "/".join(levels[:2]) != PREFIX:
        raise TopicError(f"topic {topic!r} is not under {PREFIX}/")
    if len(levels) != 5:
        raise TopicError(f"topic {topic!r} has {len(levels)} levels, expected 5: {PREFIX}/site/device/type")
    _, _, site, device, kind = levels
    if not valid_id(site):
        raise TopicError(f"site id {site!r} does not match {_ID_RE.pattern}")
    if site in RESERVED_SITE_IDS:
        raise TopicError(f"site id {site!r} is reserved")
    if not valid_id(device):
        raise TopicError(f"device id {device!r} does not match {_ID_RE.pattern}")
    if device == _AGENT_DEVICE and kind == MessageType.STATUS:
        return Topic(site, None, MessageType.STATUS)
    if device == _AGENT_DEVICE and kind == _ACK_TYPE:
        raise TopicError(f"topic {topic!r} is the gateway's confirmation to the agent, not an agent message")
    try:
        message_type = MessageType(kind)
    except ValueError:
        raise TopicError(f"unknown message type {kind!r} in topic {topic!r}") from None
    if message_type is MessageType.STATUS:
        raise TopicError(f"status is published on {PREFIX}/{{site}}/{_AGENT_DEVICE}/status only")
    if device in RESERVED_DEVICE_IDS:
        raise TopicError(f"device id {device!r} is reserved for {PREFIX}/{{site}}/{_AGENT_DEVICE}/status")
    return Topic(site, device, message_type)
