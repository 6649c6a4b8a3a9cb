"""The gateway's confirmation to each agent of what a batch committed (issue 15, point 1).

The broker's PUBACK to an agent means only "the broker has it": Mosquitto acknowledges before
anything is on disk, so a broker crash loses what it held. After a batch is committed (and
acknowledged to the broker), the lane publishes to each site of the batch, on
``sg/v1/{site}/agent/ack`` (QoS 1, not retained), the ``seq`` ranges it has durably dealt
with, per device and boot: stored, already stored (a duplicate) and dead-lettered ("refused":
storing it will never succeed, so the agent must stop sending it). The agent keeps every
reading in its outbox until such a confirmation covers it and sends it again after a timeout
otherwise; the gateway's idempotent storage absorbs the repeats.

Ranges, not a high-water mark: an agent sends each device's current state ahead of its backlog
(``Outbox.peek_priority``), so what is committed is not a prefix. A payload stays below
``ACK_MAX_BYTES`` (a batch's confirmation is split when needed). Only readings carry
``(boot, seq)``: agent status and snapshots are not confirmed (docs/wire-contract.md).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.ingest.batch import Inbound
from protocol import ACK_MAX_BYTES, MessageType, ack_topic, parse_topic, seq_ranges
from protocol.messages import BootId, Seq
from protocol.topics import TopicError

_READING_TYPES = frozenset({MessageType.HEARTBEAT, MessageType.SMOKE, MessageType.EXIT})
# Ranges in one device entry: an entry is then at most ~43 KB (two 19-digit numbers per range), so
# any entry fits in one payload with room for the envelope.
RANGES_PER_ENTRY = 1_000
_ENVELOPE = len('{"ts":,"acks":[]}') + 32  # the numbers of ts included, generously

_DeviceBoot = tuple[str, str]


class _Key(BaseModel):
    """The two fields a confirmation needs, read leniently about everything else in the payload."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    boot: BootId
    seq: Seq


def confirmations(
    batch: Sequence[Inbound], refused: Iterable[Inbound], *, ts: float, max_bytes: int = ACK_MAX_BYTES
) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of the confirmations for a committed ``batch``; ``refused`` are the ones
    of it that went to the dead-letter store. Messages with no readable site, device, boot and seq
    (malformed, not a reading) cannot be confirmed and are left out."""
    dead = {id(m) for m in refused}
    done: dict[str, dict[_DeviceBoot, tuple[list[int], list[int]]]] = defaultdict(
        lambda: defaultdict(lambda: ([], []))
    )
    for message in batch:
        try:
            topic = parse_topic(message.topic)
        except TopicError:
            continue
        if topic.type not in _READING_TYPES or topic.device is None:
            continue
        try:
            key = _Key.model_validate_json(message.payload)
        except ValidationError:
            continue
        stored, dead_lettered = done[topic.site][(topic.device, key.boot)]
        (dead_lettered if id(message) in dead else stored).append(key.seq)
    out: list[tuple[str, bytes]] = []
    for site, devices in done.items():
        topic_of_site = ack_topic(site)
        out.extend((topic_of_site, payload) for payload in encode(devices, ts=ts, max_bytes=max_bytes))
    return out


def encode(
    devices: dict[_DeviceBoot, tuple[list[int], list[int]]], *, ts: float, max_bytes: int = ACK_MAX_BYTES
) -> list[bytes]:
    """One site's confirmation as payloads of at most ``max_bytes``, each a valid ``AgentAck``."""
    entries: list[str] = []
    for (device, boot), (stored, dead) in devices.items():
        # A seq both stored and dead-lettered in one batch (a forged repeat): it is stored.
        ranges, refused = seq_ranges(stored), seq_ranges(set(dead).difference(stored))
        tagged = [("seq", r) for r in ranges] + [("refused", r) for r in refused]
        for start in range(0, len(tagged), RANGES_PER_ENTRY):
            part = tagged[start : start + RANGES_PER_ENTRY]
            fields = {"device": device, "boot": boot,
                      "seq": [list(r) for tag, r in part if tag == "seq"],
                      "refused": [list(r) for tag, r in part if tag == "refused"]}
            entries.append(json.dumps(fields, separators=(",", ":")))
    head = f'{{"ts":{ts!r},"acks":['
    payloads: list[bytes] = []
    chunk: list[str] = []
    size = _ENVELOPE
    for entry in entries:
        if chunk and size + len(entry) + 1 > max_bytes:
            payloads.append(f"{head}{','.join(chunk)}]}}".encode())
            chunk, size = [], _ENVELOPE
        chunk.append(entry)
        size += len(entry) + 1
    if chunk:
        payloads.append(f"{head}{','.join(chunk)}]}}".encode())
    return payloads

