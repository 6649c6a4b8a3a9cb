"""Seeded generator of wire-contract v1 messages: valid, near-valid and garbage topics and payloads.

For the contract fuzz tests (tests/unit/test_wire_fuzz.py, tests/integration/test_batch_fuzz.py)
and the soak's malformed traffic (bench/soak.py). One :class:`random.Random` drives everything,
so a seed names a whole run; generating a case costs microseconds (a hypothesis strategy costs
milliseconds per example, too slow for 100,000 cases per test run: docs/testing.md).

Each :class:`Case` says what it is (``valid`` or the mutation applied) so that the test oracle can
tell "must be accepted and round-trip" from "may be refused".
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from protocol.messages import MAX_PAYLOAD_BYTES
from protocol.topics import MessageType

ID_CHARS = string.ascii_letters + string.digits + "_-"
# Arrival times the valid cases use: 2023-11..2025-06, in the past, so no "future timestamp" rule applies.
TS_LOW, TS_HIGH = 1_700_000_000.0, 1_750_000_000.0
YEAR_10000 = 253_402_300_800.0  # first second past 9999-12-31T23:59:59Z
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF"

# Values at and past every boundary of the contract, and of the tables behind it.
NUMBERS: tuple[Any, ...] = (
    0, -0.0, -1, -1e-300, 1e-300, 5e-324, 0.5, 1, 100, 100.0001, 101, 86_400, 86_401, 2**31, 2**53 + 1,
    2**63 - 1, 2**63, 2**64, -(2**63), 1e15, 1e300, 1.7976931348623157e308, YEAR_10000 - 0.001, YEAR_10000,
    YEAR_10000 * 10, 1e20, True, False,
)
STRINGS: tuple[str, ...] = (
    "", " ", "\x00", "a\x00b", "\u0000" * 3, "é", "名字", "🔥", "\u202eevil", "\ufeff", "a" * 64, "a" * 65,
    "a" * 10_000, "\n", "ok", "alarm", "clear", "null", "1", "+", "#", "/", "%00", "\u00ff", "\ud800",
)
WRONG_TYPES: tuple[Any, ...] = (None, "1", "1.0", [], {}, [1], {"a": 1}, True, 1, 1.5, "true")
BAD_IDS: tuple[str, ...] = (
    "", "a" * 65, "a b", "a/b", "+", "#", "a\x00", "é", "名字", "alerts", "agent", ".", "..", "a.b", "a\n",
)
RAW_GARBAGE: tuple[bytes, ...] = (
    b"", b"{", b"}", b"[]", b"null", b"1", b'"str"', b"{not json", b'{"ts": NaN}', b'{"ts": Infinity}',
    b"\xff\xfe\x00", b'{"a":"\\ud800"}', b'{"a":"\\u0000"}', b"\x00" * 10, JPEG, b'{"ts":1e999}',
)


@dataclass(frozen=True, slots=True)
class Case:
    topic: str
    payload: bytes
    kind: str  # "valid", or what was done to a valid message: "mutate:<field>:<how>", "garbage:<what>"
    message_type: MessageType | None = None  # the valid message's type, before any mutation

    @property
    def valid(self) -> bool:
        return self.kind == "valid"


def _id(rng: random.Random, length: int | None = None) -> str:
    n = length or rng.choice((1, 2, 5, 8, 12, 64))
    return "".join(rng.choice(ID_CHARS) for _ in range(n))


def _device_id(rng: random.Random) -> str:
    while (device := _id(rng)) == "agent":
        pass
    return device


def _site_id(rng: random.Random) -> str:
    while (site := _id(rng)) == "alerts":
        pass
    return site


def _text(rng: random.Random) -> str:
    """Storable free text: printable, unicode, no NUL."""
    return rng.choice(("hall", "东门", "1F east", "Ünïcødé", "🔥 exit", "a" * 200, "x"))


def _ts(rng: random.Random) -> float:
    return rng.uniform(TS_LOW, TS_HIGH)


def _boot(rng: random.Random) -> str:
    return rng.choice((_id(rng, 12), "b1", "boot-" + _id(rng, 4), "é" * 64))


def _reading_base(rng: random.Random) -> dict[str, Any]:
    return {"ts": _ts(rng), "boot": _boot(rng), "seq": rng.choice((0, 1, rng.randrange(10**6), 2**63 - 1))}


def _percent(rng: random.Random) -> float | None:
    return rng.choice((None, 0.0, 100.0, rng.uniform(0, 100), 20.0))


def _heartbeat(rng: random.Random) -> dict[str, Any]:
    body = _reading_base(rng) | {"stream": rng.choice(("ok", "frozen", "dark", "lost")),
                                 "fps": rng.choice((0.0, 10.0, rng.uniform(0, 120), 1e6))}
    if rng.random() < 0.7:
        body["last_frame_ts"] = rng.choice((None, body["ts"], 0.0))
    return body


def _smoke(rng: random.Random) -> dict[str, Any]:
    body = _reading_base(rng) | {"state": rng.choice(("normal", "alarm", "fault", "test", "tamper"))}
    for name in ("battery_pct", "obscuration_pct"):
        if rng.random() < 0.7:
            body[name] = _percent(rng)
    return body


def _exit(rng: random.Random) -> dict[str, Any]:
    body = _reading_base(rng) | {"state": rng.choice(("clear", "blocked", "unknown")),
                                 "blocked_ratio": rng.choice((0.0, 1.0, rng.random()))}
    if rng.random() < 0.7:
        body["blocked_since"] = rng.choice((None, body["ts"]))
    return body


def _status(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.15:  # a Last Will: online false, ts optional
        will: dict[str, Any] = {"online": False, "boot": _boot(rng)}
        if rng.random() < 0.5:
            will["ts"] = _ts(rng)
        return will
    kinds = ("camera", "smoke", "exit")
    ids = {_device_id(rng) for _ in range(rng.choice((0, 1, 3, 20)))}
    devices = [{"id": d, "kind": rng.choice(kinds)} | ({"name": _text(rng), "location": _text(rng)}
                                                         if rng.random() < 0.5 else {}) for d in sorted(ids)]
    body = {"online": True, "ts": _ts(rng), "boot": _boot(rng), "devices": devices}
    if rng.random() < 0.7:
        body |= {"agent_version": rng.choice(("1.0.0", "test", None)), "heartbeat_s": rng.choice((1, 60, 86_400))}
    return body


BODIES: dict[MessageType, Callable[[random.Random], dict[str, Any]]] = {
    MessageType.STATUS: _status, MessageType.HEARTBEAT: _heartbeat, MessageType.SMOKE: _smoke,
    MessageType.EXIT: _exit,
}


def valid_topic(rng: random.Random, message_type: MessageType, site: str | None = None,
                device: str | None = None) -> str:
    site = site or _site_id(rng)
    if message_type is MessageType.STATUS:
        return f"sg/v1/{site}/agent/status"
    return f"sg/v1/{site}/{device or _device_id(rng)}/{message_type}"


def valid(rng: random.Random, message_type: MessageType | None = None, *, site: str | None = None,
          device: str | None = None) -> tuple[str, dict[str, Any], MessageType]:
    """A valid message that the tables can store: topic, payload as a dict, its type."""
    message_type = message_type or rng.choice(tuple(BODIES))
    return valid_topic(rng, message_type, site, device), BODIES[message_type](rng), message_type


def _mutate_body(rng: random.Random, body: dict[str, Any], message_type: MessageType) -> tuple[dict[str, Any], str]:
    body = dict(body)
    how = rng.random()
    devices_ok = isinstance(body.get("devices"), list) and all(isinstance(d, dict) for d in body["devices"])
    if message_type is MessageType.STATUS and devices_ok and body["devices"] and how < 0.15:
        devices = list(body["devices"])
        choice = rng.randrange(4)
        if choice == 0:
            devices.append(dict(devices[0]))  # the same device id twice
            body["devices"] = devices
            return body, "mutate:devices:duplicate_id"
        target = dict(rng.choice(devices))
        field, value = rng.choice((("id", rng.choice(BAD_IDS)), ("kind", rng.choice(("video", "", 1, None)))
                                   , ("name", rng.choice(STRINGS)), ("location", rng.choice(WRONG_TYPES))))
        target[field] = value
        body["devices"] = [*devices, target]
        return body, f"mutate:devices.{field}"
    fields = [*body, "extra_field", "ts", "boot", "seq"]
    field = rng.choice(fields)
    if how < 0.2 and field in body:
        del body[field]
        return body, f"mutate:{field}:missing"
    if field == "extra_field":
        body[rng.choice(("extra", "future_field", "ts2", "\x00"))] = rng.choice((*WRONG_TYPES, *STRINGS[:6]))
        return body, "mutate:extra:added"
    source = rng.choice((NUMBERS, STRINGS, WRONG_TYPES))
    body[field] = rng.choice(source)
    return body, f"mutate:{field}:{'number' if source is NUMBERS else 'string' if source is STRINGS else 'type'}"


def _garbage_topic(rng: random.Random) -> str:
    choice = rng.randrange(9)
    site, device = _site_id(rng), _device_id(rng)
    kind = rng.choice(tuple(MessageType))
    if choice == 0:
        return rng.choice(("", "sg", "sg/v1", "sg/v2/s/d/smoke", "SG/V1/s/d/smoke", "/sg/v1/s/d/smoke", "sg/v1/"))
    if choice == 1:
        return f"sg/v1/{rng.choice(BAD_IDS)}/{device}/{kind}"
    if choice == 2:
        return f"sg/v1/{site}/{rng.choice(BAD_IDS)}/{kind}"
    if choice == 3:
        return f"sg/v1/{site}/{device}/{rng.choice(('video', 'Smoke', '', 'status', 'smoke ', 'alerts'))}"
    if choice == 4:
        return f"sg/v1/{site}/{device}/{kind}/{rng.choice(('x', '', '#'))}"
    if choice == 5:
        return f"sg/v1/{site}/{kind}"
    if choice == 6:
        return f"sg/v1/alerts/{site}"
    if choice == 7:
        return "/".join(rng.choice(("sg", "v1", site, device, "agent", "status", "", "+")) for _ in range(5))
    return "sg/v1/" + "".join(rng.choice(string.printable + "\x00é") for _ in range(rng.randrange(30)))


def dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=True).encode("utf-8", errors="surrogatepass")


def case(rng: random.Random) -> Case:
    """One case: about a quarter valid, half near-valid (one mutation), a quarter garbage."""
    roll = rng.random()
    topic, body, message_type = valid(rng)
    if roll < 0.25:
        return Case(topic, dumps(body), "valid", message_type)
    if roll < 0.75:
        mutated, kind = _mutate_body(rng, body, message_type)
        if rng.random() < 0.3:  # a second mutation now and then
            mutated, second = _mutate_body(rng, mutated, message_type)
            kind = f"{kind}+{second}"
        return Case(topic, dumps(mutated), kind, message_type)
    what = rng.randrange(6)
    if what == 0:
        return Case(_garbage_topic(rng), dumps(body), "garbage:topic", message_type)
    if what == 1:
        return Case(topic, rng.choice(RAW_GARBAGE), "garbage:raw", message_type)
    if what == 2:
        return Case(topic, rng.randbytes(rng.randrange(64)), "garbage:bytes", message_type)
    if what == 3:
        text = dumps(body)
        return Case(topic, text[: rng.randrange(len(text))], "garbage:truncated", message_type)
    if what == 4:
        snapshot = f"sg/v1/{_site_id(rng)}/{_device_id(rng)}/snapshot"
        jpeg = rng.random() < 0.5
        payload = JPEG + rng.randbytes(rng.randrange(256)) if jpeg else dumps(body)
        return Case(snapshot, payload, "valid" if jpeg else "garbage:snapshot", MessageType.SNAPSHOT)
    if rng.random() < 0.02:  # oversize: rare, each one is 256 KiB
        return Case(topic, b" " * (MAX_PAYLOAD_BYTES + 1), "garbage:oversize", message_type)
    return Case(topic, dumps(rng.choice(([body], body.get("ts"), str(body), {"payload": body}))),
                "garbage:shape", message_type)


def cases(seed: int, n: int) -> Iterator[Case]:
    rng = random.Random(seed)
    for _ in range(n):
        yield case(rng)
