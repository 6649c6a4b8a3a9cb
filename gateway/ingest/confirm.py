"""The gateway's confirmation to each agent of what its batches committed (issue 15, point 1).

The broker's PUBACK to an agent means only "the broker has it": Mosquitto acknowledges before
anything is on disk, so a broker crash loses what it held. After a batch is committed (and
acknowledged to the broker), the lane publishes to each site of the batch, on
``sg/v1/{site}/agent/ack`` (QoS 1, not retained), the ``seq`` ranges it has durably dealt
with, per device and boot: stored, already stored (a duplicate) and dead-lettered ("refused":
storing it will never succeed, so the agent must stop sending it). The agent keeps every
reading in its outbox until such a confirmation covers it and sends it again after a timeout
otherwise; the gateway's idempotent storage absorbs the repeats. A lane's :class:`Confirmer`
gathers its commits for up to ``FLUSH_S`` and publishes one message per site.

Ranges, not a high-water mark: an agent sends each device's current state ahead of its backlog
(``Outbox.peek_priority``), so what is committed is not a prefix. A payload stays below
``ACK_MAX_BYTES`` (a batch's confirmation is split when needed). Only readings carry
``(boot, seq)``: agent status and snapshots are not confirmed (docs/wire-contract.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.ingest.batch import Inbound
from gateway.store.ingest import ReadingKey
from protocol import ACK_MAX_BYTES, MessageType, ack_topic, parse_topic, seq_ranges
from protocol.messages import BootId, Seq
from protocol.topics import TopicError

log = logging.getLogger(__name__)

_READING_TYPES = frozenset({MessageType.HEARTBEAT, MessageType.SMOKE, MessageType.EXIT})
# Ranges in one device entry: an entry is then at most ~43 KB (two 19-digit numbers per range), so
# any entry fits in one payload with room for the envelope.
RANGES_PER_ENTRY = 1_000
_ENVELOPE = len('{"ts":,"acks":[]}') + 32  # the numbers of ts included, generously

_DeviceBoot = tuple[str, str]


class _Readable(BaseModel):
    """The two fields a confirmation needs, read leniently about everything else in the payload."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    boot: BootId
    seq: Seq


_Done = dict[str, dict[_DeviceBoot, tuple[list[int], list[int]]]]  # site -> (device, boot) -> stored, refused


def _new_done() -> _Done:
    return defaultdict(lambda: defaultdict(lambda: ([], [])))


def confirmations(
    stored: Iterable[ReadingKey], refused: Iterable[Inbound], *, ts: float, max_bytes: int = ACK_MAX_BYTES
) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of the confirmations for a committed batch: ``stored`` are the
    ``(site, device, boot, seq)`` of its readings (``BatchResult.stored_keys``), ``refused`` the
    messages of it that went to the dead-letter store. A refused message with no readable site,
    device, boot and seq (malformed, not a reading) cannot be confirmed and is left out."""
    done = _new_done()
    collect(stored, refused, done)
    return _payloads(done, ts=ts, max_bytes=max_bytes)


def collect(stored: Iterable[ReadingKey], refused: Iterable[Inbound], done: _Done) -> None:
    """Add a committed batch to ``done`` (see :func:`confirmations`).

    The stored keys come from the batch processor, which has decoded them already; only the
    refused (rare) are read again here, leniently: they failed the contract somewhere."""
    for site, device, boot, seq in stored:
        done[site][(device, boot)][0].append(seq)
    for message in refused:
        try:
            topic = parse_topic(message.topic)
        except TopicError:
            continue
        if topic.type not in _READING_TYPES or topic.device is None:
            continue
        try:
            key = _Readable.model_validate_json(message.payload)
        except ValidationError:
            continue
        done[topic.site][(topic.device, key.boot)][1].append(key.seq)


def _payloads(done: _Done, *, ts: float, max_bytes: int) -> list[tuple[str, bytes]]:
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
        ranges = seq_ranges(stored)
        refused = seq_ranges(set(dead).difference(stored)) if dead else []
        names = f'"device":{json.dumps(device)},"boot":{json.dumps(boot)}'  # ids are text: escaped
        # Written out, not json.dumps of a dict of lists: this runs once per device per flush.
        if len(ranges) + len(refused) <= RANGES_PER_ENTRY:  # nearly always: one entry
            entries.append(f'{{{names},"seq":{_ranges(ranges)},"refused":{_ranges(refused)}}}')
            continue
        tagged = [("seq", r) for r in ranges] + [("refused", r) for r in refused]
        for start in range(0, len(tagged), RANGES_PER_ENTRY):
            part = tagged[start : start + RANGES_PER_ENTRY]
            entries.append(f'{{{names},"seq":{_ranges([r for tag, r in part if tag == "seq"])},'
                           f'"refused":{_ranges([r for tag, r in part if tag == "refused"])}}}')
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



def _ranges(ranges: list[tuple[int, int]]) -> str:
    return "[" + ",".join(f"[{first},{last}]" for first, last in ranges) + "]"


FLUSH_S = 2.0  # a lane's confirmations wait at most this long: one message per site per flush


class Confirmer:
    """A lane's confirmations, gathered over ``interval_s`` and published together.

    A province's batch of 1,000 messages touches some 500 sites: one confirmation per site per
    batch cost the ingest worker as much CPU again as storing (bench.ingest). Gathered, a site
    gets one message per interval, its ranges merged across batches. The delay is nothing to an
    agent that resends after a minute. ``publish(topic, payload)`` runs on this object's thread.
    """

    def __init__(self, publish: Callable[[str, bytes], None], *, interval_s: float = FLUSH_S,
                 name: str = "confirm") -> None:
        self._publish = publish
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._pending = _new_done()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, stored: Iterable[ReadingKey], refused: Iterable[Inbound]) -> None:
        """A committed batch (called after its commit): see :func:`confirmations`."""
        with self._lock:
            collect(stored, refused, self._pending)

    def flush(self) -> int:
        """Publish what is pending; returns how many messages."""
        with self._lock:
            done, self._pending = self._pending, _new_done()
        if not done:
            return 0
        acks = _payloads(done, ts=time.time(), max_bytes=ACK_MAX_BYTES)
        for topic, payload in acks:
            self._publish(topic, payload)
        return len(acks)

    def stop(self) -> None:
        """Publish what is pending and stop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._flush_logged()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception:  # a confirmation must never stop anything; the agents resend
            log.exception("confirmations to agents not published")
