"""Payload models of wire contract v1 and the decoder from raw MQTT messages.

Models are frozen and strict (a string is not a number, ``1`` is not ``true``);
unknown extra fields are ignored so that newer agents keep working with this
gateway (forward compatibility, DESIGN.md section 3).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from protocol.topics import MessageType, Topic, TopicError, parse_topic

MAX_PAYLOAD_BYTES = 256 * 1024
# 9999-12-31T23:59:59Z: the last second a Python datetime (and so the gateway) can hold; a later
# ts would only fail at the database, taking its whole batch with it (issue 15).
MAX_TIMESTAMP = 253_402_300_799.0
FUTURE_TOLERANCE_S = 300.0  # default of the gateway's ``future_ts_tolerance_s``
# GB/T 28181 keep-alive: an agent's heartbeat interval unless configured, and the interval the
# gateway assumes of an agent whose birth did not announce ``heartbeat_s``.
DEFAULT_HEARTBEAT_S = 60

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _no_nul(value: str) -> str:
    # PostgreSQL text and jsonb refuse U+0000: refused here, at the boundary, with the field named.
    if "\x00" in value:
        raise ValueError("must not contain U+0000 (NUL)")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
BootId = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP)]
Percent = Annotated[float, Field(ge=0, le=100)]


class DeviceKind(StrEnum):
    CAMERA = "camera"
    SMOKE = "smoke"
    EXIT = "exit"


class StreamState(StrEnum):
    OK = "ok"
    FROZEN = "frozen"
    DARK = "dark"
    LOST = "lost"


class SmokeState(StrEnum):
    NORMAL = "normal"
    ALARM = "alarm"
    FAULT = "fault"
    TEST = "test"
    TAMPER = "tamper"


class ExitState(StrEnum):
    CLEAR = "clear"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", allow_inf_nan=False)


class DeclaredDevice(_Message):
    id: Id
    kind: DeviceKind
    name: Text | None = None
    location: Text | None = None


class AgentStatus(_Message):
    """Retained birth message, or the Last Will when ``online`` is false."""

    online: bool
    boot: BootId
    ts: Timestamp | None = None  # optional in the Last Will: arrival time is used then
    agent_version: Text | None = None
    heartbeat_s: Annotated[int, Field(gt=0, le=86_400)] | None = None
    devices: tuple[DeclaredDevice, ...] = ()

    @model_validator(mode="after")
    def _birth_has_ts(self) -> AgentStatus:
        if self.online and self.ts is None:
            raise ValueError("ts is required when online is true (only the Last Will may omit it)")
        counts = Counter(d.id for d in self.devices)
        if len(counts) != len(self.devices):  # which one would the agent mean? refuse, do not guess
            twice = sorted(i for i, n in counts.items() if n > 1)
            raise ValueError(f"devices declares {', '.join(twice[:5])} more than once")
        return self


class _Reading(_Message):
    ts: Timestamp
    boot: BootId
    seq: Seq


class Heartbeat(_Reading):
    kind: ClassVar[DeviceKind] = DeviceKind.CAMERA
    stream: StreamState
    fps: Annotated[float, Field(ge=0)]
    last_frame_ts: Timestamp | None = None


class SmokeReading(_Reading):
    kind: ClassVar[DeviceKind] = DeviceKind.SMOKE
    state: SmokeState
    battery_pct: Percent | None = None
    obscuration_pct: Percent | None = None


class ExitReading(_Reading):
    kind: ClassVar[DeviceKind] = DeviceKind.EXIT
    state: ExitState
    blocked_ratio: Annotated[float, Field(ge=0, le=1)]
    blocked_since: Timestamp | None = None


Reading = Heartbeat | SmokeReading | ExitReading

# ----------------------------------------------------------------------------- the gateway's confirmation

# An ack payload is at most this big: the gateway splits a batch's confirmation to stay below it, and an
# agent ignores (logs, counts) a bigger one, so no confirmation can make an agent parse megabytes.
ACK_MAX_BYTES = 64 * 1024
SeqRange = tuple[Seq, Seq]  # [first, last], both included


def _ordered(ranges: tuple[SeqRange, ...]) -> tuple[SeqRange, ...]:
    for first, last in ranges:
        if first > last:
            raise ValueError(f"range [{first}, {last}] ends before it starts")
    return ranges


class AckedDevice(_Message):
    """What the gateway has durably dealt with of one device in one boot of its agent.

    ``seq``: stored (or already stored: a duplicate); ``refused``: dead-lettered (the gateway will
    never store them, however often they are sent). Both mean "delete it from the outbox"; an agent
    logs and counts the refused ones.
    """

    device: Id
    boot: BootId
    seq: tuple[SeqRange, ...] = ()
    refused: tuple[SeqRange, ...] = ()

    @model_validator(mode="after")
    def _ranges_ordered(self) -> AckedDevice:
        _ordered(self.seq)
        _ordered(self.refused)
        return self


class AgentAck(_Message):
    """``sg/v1/{site}/agent/ack``: the gateway's confirmation of readings it has committed (issue 15)."""

    ts: Timestamp  # the gateway's clock at the commit
    acks: tuple[AckedDevice, ...]


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """The fewest inclusive ``(first, last)`` ranges covering ``seqs`` (any order, repeats allowed)."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def decode_ack(payload: bytes) -> AgentAck:
    """Validate a confirmation as an agent receives it; raise ValueError saying why it is refused."""
    if len(payload) > ACK_MAX_BYTES:
        raise ValueError(f"ack payload is {len(payload)} bytes, limit {ACK_MAX_BYTES}")
    try:
        return AgentAck.model_validate_json(payload)
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """JPEG bytes sent when an exit becomes blocked (the payload is not JSON)."""

    jpeg: bytes


class RejectReason(StrEnum):
    """Short, stable codes used as the metrics label; the detail says more."""

    OVERSIZE = "oversize"
    BAD_TOPIC = "bad_topic"
    MALFORMED_JSON = "malformed_json"
    INVALID_SCHEMA = "invalid_schema"
    UNKNOWN_SITE = "unknown_site"
    BAD_SNAPSHOT = "bad_snapshot"
    FUTURE_TIMESTAMP = "future_timestamp"
    WRONG_DEVICE_KIND = "wrong_device_kind"
    STORAGE_REJECTED = "storage_rejected"  # refused by the database all the same (isolated, see ingest)


class Rejection(Exception):
    """Why a message was refused: ``code`` for counting, ``detail`` for people."""

    def __init__(self, code: RejectReason, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


_MODELS: dict[MessageType, type[_Message]] = {
    MessageType.STATUS: AgentStatus,
    MessageType.HEARTBEAT: Heartbeat,
    MessageType.SMOKE: SmokeReading,
    MessageType.EXIT: ExitReading,
}
_JPEG_MAGIC = b"\xff\xd8\xff"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode(topic: str, payload: bytes) -> tuple[Topic, AgentStatus | Reading | Snapshot]:
    """Validate one inbound message; raise :class:`Rejection` with the precise reason."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejection(RejectReason.OVERSIZE, f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        parsed = parse_topic(topic)
    except TopicError as exc:
        raise Rejection(RejectReason.BAD_TOPIC, str(exc)) from None
    if parsed.type is MessageType.SNAPSHOT:
        if not payload.startswith(_JPEG_MAGIC):
            raise Rejection(RejectReason.BAD_SNAPSHOT, "snapshot payload is not a JPEG image")
        return parsed, Snapshot(payload)
    model = _MODELS[parsed.type]
    try:
        message = model.model_validate_json(payload)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Rejection(RejectReason.MALFORMED_JSON, _describe(exc)) from None
        raise Rejection(RejectReason.INVALID_SCHEMA, _describe(exc)) from None
    assert isinstance(message, AgentStatus | Heartbeat | SmokeReading | ExitReading)
    return parsed, message


_OFFLINE_FIELDS = {"online", "boot", "ts"}


def encode(message: AgentStatus | Reading) -> bytes:
    """The payload of a message an agent (or a simulator) sends, as :func:`decode` reads it back.

    Every field is written, ``null`` included (a heartbeat's ``last_frame_ts: null`` says "no frame
    yet"), except in an offline status (the Last Will, or a clean goodbye): that one says only
    ``online``, ``boot`` and, when it has one, ``ts``.
    """
    if isinstance(message, AgentStatus) and not message.online:
        return message.model_dump_json(include=_OFFLINE_FIELDS, exclude_none=True).encode()
    return message.model_dump_json().encode()


def check_not_ahead(message: AgentStatus | Reading | Snapshot, received_at: float, tolerance_s: float) -> None:
    """Refuse a ``ts`` more than ``tolerance_s`` ahead of its arrival (``future_timestamp``).

    A reading from the future would stand as the device's latest state until that time comes,
    making every real reading until then "stale" (issue 15): a clock that far ahead is a fault.
    """
    ts = getattr(message, "ts", None)
    if ts is not None and ts - received_at > tolerance_s:
        raise Rejection(
            RejectReason.FUTURE_TIMESTAMP,
            f"ts is {ts - received_at:.0f} s ahead of its arrival (tolerance {tolerance_s:.0f} s)",
        )
