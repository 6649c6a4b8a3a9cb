"""Wire contract v1 of Safety Guard (DESIGN.md section 3).

Edge agents, simulators and the gateway all speak through this package:
``topics`` builds and parses topic strings (the only place they are written),
``messages`` holds the frozen payload models and the decoder that turns raw
bytes into a validated message or a precise :class:`Rejection`.
"""

from protocol.messages import (
    MAX_PAYLOAD_BYTES,
    AgentStatus,
    DeclaredDevice,
    DeviceKind,
    ExitReading,
    ExitState,
    Heartbeat,
    Reading,
    Rejection,
    RejectReason,
    SmokeReading,
    SmokeState,
    Snapshot,
    StreamState,
    decode,
)
from protocol.topics import (
    ALARM_FILTERS,
    ALERTS_FILTER,
    ROUTINE_FILTERS,
    SUBSCRIPTION,
    MessageType,
    Topic,
    alert_topic,
    device_topic,
    is_alarm_topic,
    is_alert_topic,
    parse_topic,
    status_topic,
    valid_id,
)

__all__ = [
    "ALARM_FILTERS",
    "ALERTS_FILTER",
    "MAX_PAYLOAD_BYTES",
    "ROUTINE_FILTERS",
    "SUBSCRIPTION",
    "AgentStatus",
    "DeclaredDevice",
    "DeviceKind",
    "ExitReading",
    "ExitState",
    "Heartbeat",
    "MessageType",
    "Reading",
    "RejectReason",
    "Rejection",
    "SmokeReading",
    "SmokeState",
    "Snapshot",
    "StreamState",
    "Topic",
    "alert_topic",
    "decode",
    "device_topic",
    "is_alarm_topic",
    "is_alert_topic",
    "parse_topic",
    "status_topic",
    "valid_id",
]
