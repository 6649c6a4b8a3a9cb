"""Payload models and ``decode()`` of wire contract v1 (DESIGN.md section 3)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import (
    MAX_PAYLOAD_BYTES,
    MAX_TIMESTAMP,
    AgentStatus,
    DeclaredDevice,
    DeviceKind,
    ExitReading,
    ExitState,
    Heartbeat,
    MessageType,
    Rejection,
    RejectReason,
    SmokeReading,
    SmokeState,
    Snapshot,
    StreamState,
    Topic,
    check_not_ahead,
    decode,
    device_topic,
    encode,
    status_topic,
)

SITE = "site-1"
TS = 1_700_000_000.25

STATUS_TOPIC = status_topic(SITE)
HEARTBEAT_TOPIC = device_topic(SITE, "cam-1", MessageType.HEARTBEAT)
SMOKE_TOPIC = device_topic(SITE, "smoke-1", MessageType.SMOKE)
EXIT_TOPIC = device_topic(SITE, "exit-1", MessageType.EXIT)
SNAPSHOT_TOPIC = device_topic(SITE, "exit-1", MessageType.SNAPSHOT)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256))


def _status(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "online": True,
        "ts": TS,
        "boot": "boot-a",
        "agent_version": "1.2.3",
        "heartbeat_s": 10,
        "devices": [
            {"id": "cam-1", "kind": "camera", "name": "Front door", "location": "1F"},
            {"id": "smoke-1", "kind": "smoke", "name": "Classroom A", "location": "2F"},
            {"id": "exit-1", "kind": "exit", "name": "East stairs", "location": "2F"},
        ],
    }
    base.update(over)
    return base


def _heartbeat(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": TS,
        "boot": "boot-a",
        "seq": 7,
        "stream": "ok",
        "fps": 25.0,
        "last_frame_ts": TS - 0.04,
    }
    base.update(over)
    return base


def _smoke(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": TS,
        "boot": "boot-a",
        "seq": 3,
        "state": "normal",
        "battery_pct": 87.5,
        "obscuration_pct": 0.1,
    }
    base.update(over)
    return base


def _exit(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": TS,
        "boot": "boot-a",
        "seq": 11,
        "state": "clear",
        "blocked_ratio": 0.0,
        "blocked_since": None,
    }
    base.update(over)
    return base


def _raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def _reject(topic: str, payload: bytes) -> Rejection:
    with pytest.raises(Rejection) as info:
        decode(topic, payload)
    return info.value


# Every JSON topic with a factory making a valid payload for it.
JSON_CASES = [
    pytest.param(STATUS_TOPIC, _status, id="status"),
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, id="heartbeat"),
    pytest.param(SMOKE_TOPIC, _smoke, id="smoke"),
    pytest.param(EXIT_TOPIC, _exit, id="exit"),
]


# --------------------------------------------------------------------------- valid payloads


def test_decode_agent_status_birth() -> None:
    topic, message = decode(STATUS_TOPIC, _raw(_status()))
    assert topic == Topic(SITE, None, MessageType.STATUS)
    assert isinstance(message, AgentStatus)
    assert message.online is True
    assert message.ts == TS
    assert message.boot == "boot-a"
    assert message.agent_version == "1.2.3"
    assert message.heartbeat_s == 10
    assert message.devices == (
        DeclaredDevice(id="cam-1", kind=DeviceKind.CAMERA, name="Front door", location="1F"),
        DeclaredDevice(id="smoke-1", kind=DeviceKind.SMOKE, name="Classroom A", location="2F"),
        DeclaredDevice(id="exit-1", kind=DeviceKind.EXIT, name="East stairs", location="2F"),
    )


def test_decode_last_will_without_ts() -> None:
    _, message = decode(STATUS_TOPIC, b'{"online": false, "boot": "boot-a"}')
    assert isinstance(message, AgentStatus)
    assert message.online is False
    assert message.boot == "boot-a"
    assert message.ts is None
    assert message.devices == ()


def test_decode_last_will_with_ts() -> None:
    _, message = decode(STATUS_TOPIC, _raw({"online": False, "boot": "b", "ts": TS}))
    assert isinstance(message, AgentStatus)
    assert message.ts == TS


def test_declared_device_name_and_location_are_optional() -> None:
    _, message = decode(STATUS_TOPIC, _raw(_status(devices=[{"id": "cam-9", "kind": "camera"}])))
    assert isinstance(message, AgentStatus)
    assert message.devices == (DeclaredDevice(id="cam-9", kind=DeviceKind.CAMERA),)


def test_decode_heartbeat() -> None:
    topic, message = decode(HEARTBEAT_TOPIC, _raw(_heartbeat()))
    assert topic == Topic(SITE, "cam-1", MessageType.HEARTBEAT)
    assert message == Heartbeat(ts=TS, boot="boot-a", seq=7, stream=StreamState.OK, fps=25.0, last_frame_ts=TS - 0.04)
    assert Heartbeat.kind is DeviceKind.CAMERA


@pytest.mark.parametrize("stream", list(StreamState))
def test_decode_heartbeat_every_stream_state(stream: StreamState) -> None:
    _, message = decode(HEARTBEAT_TOPIC, _raw(_heartbeat(stream=stream.value)))
    assert isinstance(message, Heartbeat)
    assert message.stream is stream


def test_decode_heartbeat_last_frame_ts_null_or_absent() -> None:
    _, message = decode(HEARTBEAT_TOPIC, _raw(_heartbeat(last_frame_ts=None)))
    assert isinstance(message, Heartbeat)
    assert message.last_frame_ts is None
    payload = _heartbeat()
    del payload["last_frame_ts"]
    _, message = decode(HEARTBEAT_TOPIC, _raw(payload))
    assert isinstance(message, Heartbeat)
    assert message.last_frame_ts is None


def test_decode_smoke() -> None:
    topic, message = decode(SMOKE_TOPIC, _raw(_smoke()))
    assert topic == Topic(SITE, "smoke-1", MessageType.SMOKE)
    assert message == SmokeReading(
        ts=TS, boot="boot-a", seq=3, state=SmokeState.NORMAL, battery_pct=87.5, obscuration_pct=0.1
    )
    assert SmokeReading.kind is DeviceKind.SMOKE


@pytest.mark.parametrize("state", list(SmokeState))
def test_decode_smoke_every_state(state: SmokeState) -> None:
    _, message = decode(SMOKE_TOPIC, _raw(_smoke(state=state.value)))
    assert isinstance(message, SmokeReading)
    assert message.state is state


def test_decode_smoke_nullable_fields() -> None:
    _, message = decode(SMOKE_TOPIC, _raw(_smoke(battery_pct=None, obscuration_pct=None)))
    assert isinstance(message, SmokeReading)
    assert message.battery_pct is None
    assert message.obscuration_pct is None


@pytest.mark.parametrize("battery", [0, 0.0, 19.99, 100, 100.0])
def test_decode_smoke_battery_bounds_inclusive(battery: float) -> None:
    _, message = decode(SMOKE_TOPIC, _raw(_smoke(battery_pct=battery)))
    assert isinstance(message, SmokeReading)
    assert message.battery_pct == battery


def test_decode_exit() -> None:
    topic, message = decode(EXIT_TOPIC, _raw(_exit(state="blocked", blocked_ratio=0.8, blocked_since=TS - 30)))
    assert topic == Topic(SITE, "exit-1", MessageType.EXIT)
    assert message == ExitReading(
        ts=TS, boot="boot-a", seq=11, state=ExitState.BLOCKED, blocked_ratio=0.8, blocked_since=TS - 30
    )
    assert ExitReading.kind is DeviceKind.EXIT


@pytest.mark.parametrize("state", list(ExitState))
def test_decode_exit_every_state(state: ExitState) -> None:
    _, message = decode(EXIT_TOPIC, _raw(_exit(state=state.value)))
    assert isinstance(message, ExitReading)
    assert message.state is state


@pytest.mark.parametrize("ratio", [0, 0.0, 0.5, 1, 1.0])
def test_decode_exit_blocked_ratio_bounds_inclusive(ratio: float) -> None:
    _, message = decode(EXIT_TOPIC, _raw(_exit(blocked_ratio=ratio)))
    assert isinstance(message, ExitReading)
    assert message.blocked_ratio == ratio


def test_decode_snapshot() -> None:
    topic, message = decode(SNAPSHOT_TOPIC, JPEG)
    assert topic == Topic(SITE, "exit-1", MessageType.SNAPSHOT)
    assert message == Snapshot(JPEG)


def test_integer_json_numbers_are_accepted_for_float_fields() -> None:
    _, message = decode(HEARTBEAT_TOPIC, _raw(_heartbeat(ts=1_700_000_000, fps=25, last_frame_ts=1_699_999_999)))
    assert isinstance(message, Heartbeat)
    assert message.ts == 1_700_000_000.0
    assert isinstance(message.ts, float)
    assert isinstance(message.fps, float)


def test_seq_bounds() -> None:
    _, message = decode(SMOKE_TOPIC, _raw(_smoke(seq=0)))
    assert isinstance(message, SmokeReading)
    assert message.seq == 0
    _, message = decode(SMOKE_TOPIC, _raw(_smoke(seq=2**63 - 1)))
    assert isinstance(message, SmokeReading)
    assert message.seq == 2**63 - 1
    rejection = _reject(SMOKE_TOPIC, _raw(_smoke(seq=2**63)))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("seq:")


def test_decoded_messages_are_frozen() -> None:
    _, message = decode(SMOKE_TOPIC, _raw(_smoke()))
    assert isinstance(message, SmokeReading)
    with pytest.raises(ValueError, match="frozen"):
        message.seq = 99  # type: ignore[misc]


def test_utf8_text_fields_are_accepted() -> None:
    devices = [{"id": "cam-1", "kind": "camera", "name": "教室一", "location": "二楼"}]
    _, message = decode(STATUS_TOPIC, json.dumps(_status(devices=devices), ensure_ascii=False).encode())
    assert isinstance(message, AgentStatus)
    assert message.devices[0].name == "教室一"
    assert message.devices[0].location == "二楼"


# --------------------------------------------------------------------------- forward compatibility


@pytest.mark.parametrize(("topic", "factory"), JSON_CASES)
def test_unknown_extra_fields_are_ignored(topic: str, factory: Any) -> None:
    plain = decode(topic, _raw(factory()))[1]
    extended = decode(topic, _raw(factory(future_field={"nested": [1, 2]}, firmware="9.9", kind="something")))[1]
    assert extended == plain
    assert not hasattr(extended, "future_field")


def test_unknown_extra_fields_in_declared_devices_are_ignored() -> None:
    devices = [{"id": "cam-1", "kind": "camera", "resolution": "1080p", "ptz": True}]
    _, message = decode(STATUS_TOPIC, _raw(_status(devices=devices)))
    assert isinstance(message, AgentStatus)
    assert message.devices == (DeclaredDevice(id="cam-1", kind=DeviceKind.CAMERA),)


# --------------------------------------------------------------------------- malformed / non-object JSON


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"{'ts': 1}",
        b'{"ts": 1,}',
        b'{"ts": 1} trailing',
        b"not json",
        b"\xff\xfe\x00",  # not UTF-8
        b'{"boot": "\xff"}',  # invalid UTF-8 inside a string
    ],
)
@pytest.mark.parametrize("topic", [STATUS_TOPIC, HEARTBEAT_TOPIC, SMOKE_TOPIC, EXIT_TOPIC])
def test_malformed_json_is_rejected(topic: str, payload: bytes) -> None:
    rejection = _reject(topic, payload)
    assert rejection.code is RejectReason.MALFORMED_JSON
    assert rejection.detail.startswith("payload: Invalid JSON")


@pytest.mark.parametrize("payload", [b"[]", b"[1, 2]", b"null", b"42", b'"text"', b"true"])
@pytest.mark.parametrize("topic", [STATUS_TOPIC, HEARTBEAT_TOPIC, SMOKE_TOPIC, EXIT_TOPIC])
def test_non_object_json_is_a_schema_error(topic: str, payload: bytes) -> None:
    rejection = _reject(topic, payload)
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail == "payload: Input should be an object"


def test_rejection_str_carries_code_and_detail() -> None:
    rejection = _reject(SMOKE_TOPIC, b"{")
    assert str(rejection) == f"malformed_json: {rejection.detail}"
    assert rejection.args == (f"malformed_json: {rejection.detail}",)


# --------------------------------------------------------------------------- missing / wrongly typed fields


MISSING_CASES = [
    (STATUS_TOPIC, _status, "online"),
    (STATUS_TOPIC, _status, "boot"),
    (HEARTBEAT_TOPIC, _heartbeat, "ts"),
    (HEARTBEAT_TOPIC, _heartbeat, "boot"),
    (HEARTBEAT_TOPIC, _heartbeat, "seq"),
    (HEARTBEAT_TOPIC, _heartbeat, "stream"),
    (HEARTBEAT_TOPIC, _heartbeat, "fps"),
    (SMOKE_TOPIC, _smoke, "ts"),
    (SMOKE_TOPIC, _smoke, "boot"),
    (SMOKE_TOPIC, _smoke, "seq"),
    (SMOKE_TOPIC, _smoke, "state"),
    (EXIT_TOPIC, _exit, "ts"),
    (EXIT_TOPIC, _exit, "boot"),
    (EXIT_TOPIC, _exit, "seq"),
    (EXIT_TOPIC, _exit, "state"),
    (EXIT_TOPIC, _exit, "blocked_ratio"),
]


@pytest.mark.parametrize(("topic", "factory", "field"), MISSING_CASES)
def test_missing_required_field(topic: str, factory: Any, field: str) -> None:
    payload = factory()
    del payload[field]
    rejection = _reject(topic, _raw(payload))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail == f"{field}: Field required"


@pytest.mark.parametrize("field", ["id", "kind"])
def test_missing_required_field_of_declared_device(field: str) -> None:
    device = {"id": "cam-1", "kind": "camera"}
    del device[field]
    rejection = _reject(STATUS_TOPIC, _raw(_status(devices=[device])))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail == f"devices.0.{field}: Field required"


WRONG_TYPE_CASES = [
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "ts", "1700000000", "ts: Input should be a valid number", id="str-ts"),
    pytest.param(SMOKE_TOPIC, _smoke, "ts", "1700000000.5", "ts: Input should be a valid number", id="str-ts-smoke"),
    pytest.param(EXIT_TOPIC, _exit, "ts", None, "ts: Input should be a valid number", id="null-ts"),
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "seq", True, "seq: Input should be a valid integer", id="bool-seq"),
    pytest.param(SMOKE_TOPIC, _smoke, "seq", False, "seq: Input should be a valid integer", id="bool-seq-false"),
    pytest.param(EXIT_TOPIC, _exit, "seq", "5", "seq: Input should be a valid integer", id="str-seq"),
    pytest.param(EXIT_TOPIC, _exit, "seq", 1.5, "seq: Input should be a valid integer", id="float-seq"),
    pytest.param(STATUS_TOPIC, _status, "online", 1, "online: Input should be a valid boolean", id="int-online"),
    pytest.param(STATUS_TOPIC, _status, "online", 0, "online: Input should be a valid boolean", id="int0-online"),
    pytest.param(STATUS_TOPIC, _status, "online", "true", "online: Input should be a valid boolean", id="str-online"),
    pytest.param(STATUS_TOPIC, _status, "heartbeat_s", True, "heartbeat_s: Input should be a valid integer", id="hb"),
    pytest.param(STATUS_TOPIC, _status, "heartbeat_s", "10", "heartbeat_s: Input should be a valid integer", id="hbs"),
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "fps", "25", "fps: Input should be a valid number", id="str-fps"),
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "boot", 7, "boot: Input should be a valid string", id="int-boot"),
    pytest.param(SMOKE_TOPIC, _smoke, "battery_pct", "50", "battery_pct: Input should be a valid number", id="str-bat"),
    pytest.param(EXIT_TOPIC, _exit, "blocked_ratio", True, "blocked_ratio: Input should be a valid number", id="b-rat"),
]


@pytest.mark.parametrize(("topic", "factory", "field", "value", "detail"), WRONG_TYPE_CASES)
def test_wrong_type(topic: str, factory: Any, field: str, value: Any, detail: str) -> None:
    rejection = _reject(topic, _raw(factory(**{field: value})))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith(f"{field}:")
    assert rejection.detail == detail


def test_devices_must_be_a_list_of_objects() -> None:
    rejection = _reject(STATUS_TOPIC, _raw(_status(devices="cam-1")))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("devices:")
    rejection = _reject(STATUS_TOPIC, _raw(_status(devices=["cam-1"])))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("devices.0:")


def test_several_errors_are_all_named() -> None:
    rejection = _reject(SMOKE_TOPIC, _raw(_smoke(seq=-1, state="smoky")))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert "seq:" in rejection.detail
    assert "state:" in rejection.detail
    assert "; " in rejection.detail


# --------------------------------------------------------------------------- enums and bounds


ENUM_CASES = [
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "stream", "broken", id="stream"),
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "stream", "OK", id="stream-case"),
    pytest.param(SMOKE_TOPIC, _smoke, "state", "smoky", id="smoke-state"),
    pytest.param(SMOKE_TOPIC, _smoke, "state", "Alarm", id="smoke-state-case"),
    pytest.param(SMOKE_TOPIC, _smoke, "state", "clear", id="smoke-state-exit-word"),
    pytest.param(EXIT_TOPIC, _exit, "state", "open", id="exit-state"),
    pytest.param(EXIT_TOPIC, _exit, "state", "normal", id="exit-state-smoke-word"),
]


@pytest.mark.parametrize(("topic", "factory", "field", "value"), ENUM_CASES)
def test_unknown_enum_value(topic: str, factory: Any, field: str, value: str) -> None:
    rejection = _reject(topic, _raw(factory(**{field: value})))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith(f"{field}: Input should be ")


def test_unknown_device_kind_in_status() -> None:
    rejection = _reject(STATUS_TOPIC, _raw(_status(devices=[{"id": "t-1", "kind": "thermometer"}])))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail == "devices.0.kind: Input should be 'camera', 'smoke' or 'exit'"


@pytest.mark.parametrize(
    ("topic", "factory"), [(HEARTBEAT_TOPIC, _heartbeat), (SMOKE_TOPIC, _smoke), (EXIT_TOPIC, _exit)]
)
@pytest.mark.parametrize("seq", [-1, -(2**40)])
def test_negative_seq(topic: str, factory: Any, seq: int) -> None:
    rejection = _reject(topic, _raw(factory(seq=seq)))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail == "seq: Input should be greater than or equal to 0"


@pytest.mark.parametrize(
    ("topic", "factory"), [(HEARTBEAT_TOPIC, _heartbeat), (SMOKE_TOPIC, _smoke), (EXIT_TOPIC, _exit)]
)
def test_negative_ts(topic: str, factory: Any) -> None:
    rejection = _reject(topic, _raw(factory(ts=-1.0)))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("ts:")


def _with_literal(topic_factory: Any, field: str, literal: str) -> bytes:
    """A payload whose ``field`` is the raw JSON text ``literal`` (json.dumps cannot write 1e999)."""
    payload = topic_factory(**{field: 12345.0})
    text = json.dumps(payload)
    assert text.count("12345.0") == 1
    return text.replace("12345.0", literal).encode()


NON_FINITE_FIELDS = [
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "ts", id="hb-ts"),
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "fps", id="hb-fps"),
    pytest.param(HEARTBEAT_TOPIC, _heartbeat, "last_frame_ts", id="hb-last-frame"),
    pytest.param(SMOKE_TOPIC, _smoke, "ts", id="smoke-ts"),
    pytest.param(SMOKE_TOPIC, _smoke, "battery_pct", id="smoke-battery"),
    pytest.param(SMOKE_TOPIC, _smoke, "obscuration_pct", id="smoke-obscuration"),
    pytest.param(EXIT_TOPIC, _exit, "ts", id="exit-ts"),
    pytest.param(EXIT_TOPIC, _exit, "blocked_ratio", id="exit-ratio"),
    pytest.param(EXIT_TOPIC, _exit, "blocked_since", id="exit-since"),
    pytest.param(STATUS_TOPIC, _status, "ts", id="status-ts"),
]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize(("topic", "factory", "field"), NON_FINITE_FIELDS)
def test_non_finite_numbers_are_rejected(topic: str, factory: Any, field: str, literal: str) -> None:
    rejection = _reject(topic, _with_literal(factory, field, literal))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith(f"{field}: ")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_non_finite_ts_detail_says_finite(literal: str) -> None:
    rejection = _reject(SMOKE_TOPIC, _with_literal(_smoke, "ts", literal))
    assert rejection.detail == "ts: Input should be a finite number"


@pytest.mark.parametrize("ratio", [1.0000001, 1.5, 2, -0.1, -1])
def test_blocked_ratio_outside_zero_to_one(ratio: float) -> None:
    rejection = _reject(EXIT_TOPIC, _raw(_exit(state="blocked", blocked_ratio=ratio)))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("blocked_ratio: Input should be ")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("battery_pct", 100.01),
        ("battery_pct", 101),
        ("battery_pct", -0.5),
        ("obscuration_pct", 100.5),
        ("obscuration_pct", -1),
    ],
)
def test_percent_outside_zero_to_hundred(field: str, value: float) -> None:
    rejection = _reject(SMOKE_TOPIC, _raw(_smoke(**{field: value})))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith(f"{field}: Input should be ")


def test_battery_over_hundred_detail() -> None:
    rejection = _reject(SMOKE_TOPIC, _raw(_smoke(battery_pct=100.5)))
    assert rejection.detail == "battery_pct: Input should be less than or equal to 100"


@pytest.mark.parametrize("heartbeat_s", [0, -5, 86_401])
def test_heartbeat_interval_bounds(heartbeat_s: int) -> None:
    rejection = _reject(STATUS_TOPIC, _raw(_status(heartbeat_s=heartbeat_s)))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("heartbeat_s: ")


def test_negative_fps() -> None:
    rejection = _reject(HEARTBEAT_TOPIC, _raw(_heartbeat(fps=-1)))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("fps: ")


@pytest.mark.parametrize("boot", ["", "b" * 65])
def test_boot_length_bounds(boot: str) -> None:
    rejection = _reject(SMOKE_TOPIC, _raw(_smoke(boot=boot)))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("boot: ")


def test_boot_of_64_chars_is_accepted() -> None:
    _, message = decode(SMOKE_TOPIC, _raw(_smoke(boot="b" * 64)))
    assert isinstance(message, SmokeReading)
    assert message.boot == "b" * 64


@pytest.mark.parametrize("device_id", ["", "bad id", "a/b", "x" * 65, "cam\n", "é"])
def test_declared_device_id_must_be_a_contract_id(device_id: str) -> None:
    rejection = _reject(STATUS_TOPIC, _raw(_status(devices=[{"id": device_id, "kind": "camera"}])))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("devices.0.id: String should match pattern")


def test_declared_device_id_of_64_chars_is_accepted() -> None:
    _, message = decode(STATUS_TOPIC, _raw(_status(devices=[{"id": "x" * 64, "kind": "exit"}])))
    assert isinstance(message, AgentStatus)
    assert message.devices[0].id == "x" * 64


# --------------------------------------------------------------------------- size limit


def _padded(target: int) -> bytes:
    """A valid smoke payload of exactly ``target`` bytes, padded with an ignored extra field."""
    skeleton = _raw(_smoke(pad=""))
    filler = target - len(skeleton)
    assert filler >= 0
    payload = _raw(_smoke(pad="x" * filler))
    assert len(payload) == target
    return payload


def test_max_payload_is_256_kib() -> None:
    assert MAX_PAYLOAD_BYTES == 256 * 1024 == 262_144


def test_payload_of_exactly_256_kib_is_not_rejected_for_size() -> None:
    payload = _padded(MAX_PAYLOAD_BYTES)
    _, message = decode(SMOKE_TOPIC, payload)
    assert isinstance(message, SmokeReading)
    assert message.state is SmokeState.NORMAL


def test_payload_of_256_kib_plus_one_byte_is_oversize() -> None:
    payload = _padded(MAX_PAYLOAD_BYTES + 1)
    rejection = _reject(SMOKE_TOPIC, payload)
    assert rejection.code is RejectReason.OVERSIZE
    assert rejection.detail == f"payload is {MAX_PAYLOAD_BYTES + 1} bytes, limit {MAX_PAYLOAD_BYTES}"


def test_oversize_snapshot_is_rejected() -> None:
    payload = JPEG[:4] + b"\x00" * (MAX_PAYLOAD_BYTES + 1 - 4)
    rejection = _reject(SNAPSHOT_TOPIC, payload)
    assert rejection.code is RejectReason.OVERSIZE


def test_snapshot_of_exactly_256_kib_is_accepted() -> None:
    payload = JPEG[:4] + b"\x00" * (MAX_PAYLOAD_BYTES - 4)
    _, message = decode(SNAPSHOT_TOPIC, payload)
    assert message == Snapshot(payload)


def test_oversize_is_checked_before_the_topic() -> None:
    rejection = _reject("not/a/topic", b"x" * (MAX_PAYLOAD_BYTES + 1))
    assert rejection.code is RejectReason.OVERSIZE


# --------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff",
        b"\xff\xd8",  # two bytes of the three-byte marker
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b'{"jpeg": "base64..."}',
        b"\x00\xff\xd8\xff",  # magic not at the start
    ],
)
def test_snapshot_not_starting_with_jpeg_magic(payload: bytes) -> None:
    rejection = _reject(SNAPSHOT_TOPIC, payload)
    assert rejection.code is RejectReason.BAD_SNAPSHOT
    assert rejection.detail == "snapshot payload is not a JPEG image"


def test_snapshot_minimal_magic_is_accepted() -> None:
    _, message = decode(SNAPSHOT_TOPIC, b"\xff\xd8\xff")
    assert message == Snapshot(b"\xff\xd8\xff")


# --------------------------------------------------------------------------- bad topics


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("sg/v2/site-1/cam-1/heartbeat", "is not under sg/v1/"),
        ("sg/v1/site-1/cam-1", "has 4 levels"),
        ("sg/v1/site-1/cam-1/heartbeat/x", "has 6 levels"),
        ("sg/v1/bad site/cam-1/heartbeat", "site id 'bad site'"),
        ("sg/v1/site-1/bad dev/heartbeat", "device id 'bad dev'"),
        (f"sg/v1/{'s' * 65}/cam-1/heartbeat", "site id"),
        ("sg/v1/site-1/cam-1/temperature", "unknown message type 'temperature'"),
        ("sg/v1/site-1/cam-1/status", "status is published on"),
        ("sg/v1/alerts/site-1", "has 4 levels"),
    ],
)
def test_bad_topic_is_rejected_with_the_parser_reason(topic: str, fragment: str) -> None:
    rejection = _reject(topic, _raw(_heartbeat()))
    assert rejection.code is RejectReason.BAD_TOPIC
    assert fragment in rejection.detail


def test_bad_topic_wins_over_a_bad_payload() -> None:
    rejection = _reject("sg/v1/site-1/cam-1/nope", b"{")
    assert rejection.code is RejectReason.BAD_TOPIC


def test_payload_is_validated_against_the_topic_type() -> None:
    # A valid exit payload sent on a smoke topic is a schema error, not silently accepted.
    rejection = _reject(SMOKE_TOPIC, _raw(_exit(state="blocked")))
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith("state: ")


def test_json_on_a_snapshot_topic_is_a_bad_snapshot() -> None:
    rejection = _reject(SNAPSHOT_TOPIC, _raw(_exit()))
    assert rejection.code is RejectReason.BAD_SNAPSHOT


def test_reject_reason_codes_are_stable() -> None:
    assert {r.value for r in RejectReason} == {
        "oversize",
        "bad_topic",
        "malformed_json",
        "invalid_schema",
        "unknown_site",
        "bad_snapshot",
        "future_timestamp",
        "wrong_device_kind",
        "storage_rejected",
    }


# Values only the database used to refuse (issue 15): refused here, at the boundary, by field.
@pytest.mark.parametrize(("topic", "payload", "field"), [
    (SMOKE_TOPIC, _smoke(ts=253_402_300_800.0), "ts"),  # 10000-01-01: past a datetime's range
    (EXIT_TOPIC, _exit(ts=1e20), "ts"),
    (HEARTBEAT_TOPIC, _heartbeat(last_frame_ts=1e300), "last_frame_ts"),
    (EXIT_TOPIC, _exit(blocked_since=1e16), "blocked_since"),
    (STATUS_TOPIC, _status(ts=9e15), "ts"),
    (HEARTBEAT_TOPIC, _heartbeat(boot="b\u0000"), "boot"),
    (STATUS_TOPIC, _status(boot="\u0000"), "boot"),
    (STATUS_TOPIC, _status(agent_version="1.0\u0000"), "agent_version"),
    (STATUS_TOPIC, _status(devices=[{"id": "cam-1", "kind": "camera", "name": "gate\u0000"}]), "devices.0.name"),
    (STATUS_TOPIC, _status(devices=[{"id": "cam-1", "kind": "camera", "location": "\u00001F"}]),
     "devices.0.location"),
])
def test_values_the_database_refuses_are_rejected_at_the_boundary(
    topic: str, payload: dict[str, Any], field: str
) -> None:
    rejection = _reject(topic, _raw(payload))  # json.dumps writes U+0000 as the escape \u0000
    assert rejection.code is RejectReason.INVALID_SCHEMA
    assert rejection.detail.startswith(f"{field}: ")


def test_the_last_second_of_year_9999_is_a_valid_ts() -> None:
    _, reading = decode(SMOKE_TOPIC, _raw(_smoke(ts=MAX_TIMESTAMP)))
    assert isinstance(reading, SmokeReading)
    assert reading.ts == MAX_TIMESTAMP


def test_a_ts_too_far_ahead_of_its_arrival_is_a_future_timestamp() -> None:
    _, reading = decode(EXIT_TOPIC, _raw(_exit(ts=1_000_000.0)))
    check_not_ahead(reading, 1_000_000.0 - 300.0, 300.0)  # exactly the tolerance: accepted
    check_not_ahead(reading, 2_000_000.0, 300.0)  # behind (a backlog): accepted
    with pytest.raises(Rejection) as info:
        check_not_ahead(reading, 1_000_000.0 - 300.5, 300.0)
    assert info.value.code is RejectReason.FUTURE_TIMESTAMP
    assert "300 s ahead" in info.value.detail
    _, will = decode(STATUS_TOPIC, b'{"online": false, "boot": "b1"}')
    check_not_ahead(will, 0.0, 300.0)  # no ts: nothing to check


def test_birth_without_ts_is_rejected_but_the_will_may_omit_it() -> None:
    with pytest.raises(Rejection) as info:
        decode("sg/v1/site-1/agent/status", b'{"online": true, "boot": "b1"}')
    assert info.value.code is RejectReason.INVALID_SCHEMA
    assert "ts is required when online is true" in info.value.detail
    _, will = decode("sg/v1/site-1/agent/status", b'{"online": false, "boot": "b1"}')
    assert isinstance(will, AgentStatus)
    assert will.ts is None


# ----------------------------------------------------------------------------- encode (what agents send)

_DEVICES = (DeclaredDevice(id="cam-1", kind=DeviceKind.CAMERA, name="Hall", location="Hall"),
            DeclaredDevice(id="smoke-1", kind=DeviceKind.SMOKE))


@pytest.mark.parametrize(
    ("topic", "message", "hand_written"),
    [
        # the Last Will: no ts (the gateway uses the arrival time)
        (STATUS_TOPIC, AgentStatus(online=False, boot="b1"), {"online": False, "boot": "b1"}),
        # a clean goodbye
        (STATUS_TOPIC, AgentStatus(online=False, ts=TS, boot="b1"), {"online": False, "ts": TS, "boot": "b1"}),
        # the birth
        (STATUS_TOPIC, AgentStatus(online=True, ts=TS, boot="b1", agent_version="simulator", heartbeat_s=2,
                                   devices=_DEVICES),
         {"online": True, "ts": TS, "boot": "b1", "agent_version": "simulator", "heartbeat_s": 2,
          "devices": [{"id": "cam-1", "kind": "camera", "name": "Hall", "location": "Hall"},
                      {"id": "smoke-1", "kind": "smoke", "name": None, "location": None}]}),
        (HEARTBEAT_TOPIC, Heartbeat(ts=TS, boot="b1", seq=3, stream=StreamState.LOST, fps=0.0),
         {"ts": TS, "boot": "b1", "seq": 3, "stream": "lost", "fps": 0.0, "last_frame_ts": None}),
        (SMOKE_TOPIC, SmokeReading(ts=TS, boot="b1", seq=0, state=SmokeState.ALARM, battery_pct=None,
                                   obscuration_pct=9.5),
         {"ts": TS, "boot": "b1", "seq": 0, "state": "alarm", "battery_pct": None, "obscuration_pct": 9.5}),
        (EXIT_TOPIC, ExitReading(ts=TS, boot="b1", seq=7, state=ExitState.BLOCKED, blocked_ratio=0.65,
                                 blocked_since=TS - 30),
         {"ts": TS, "boot": "b1", "seq": 7, "state": "blocked", "blocked_ratio": 0.65, "blocked_since": TS - 30}),
    ],
)
def test_encode_writes_what_agents_wrote_by_hand_and_decode_reads_it_back(
    topic: str, message: AgentStatus | Heartbeat | SmokeReading | ExitReading, hand_written: dict[str, Any],
) -> None:
    payload = encode(message)
    assert json.loads(payload) == hand_written  # the same fields and values, nulls included (or left out) as before
    assert decode(topic, payload)[1] == message
    assert decode(topic, json.dumps(hand_written).encode())[1] == message
