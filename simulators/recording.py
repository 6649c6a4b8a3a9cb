"""Record live ``sg/v1`` traffic to JSON lines, and replay it with the original timing.

A recording is one header line, then one line per message::

    {"format": "safeguard-record/1", "started": 1763900000.0}
    {"t": 0.512, "topic": "sg/v1/hz-0001/cam-1/heartbeat", "qos": 1, "retain": false, "payload": "{...}"}

``t`` is the arrival time in seconds after the start; the payload is kept exactly:
as text when it is UTF-8 (``payload``), as base64 otherwise (``payload_b64``, e.g. snapshots).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt

from protocol import ALERTS_FILTER, SUBSCRIPTION
from protocol.mqtt import BrokerUnavailable, MqttEndpoint, MqttVersion, connect_and_wait, new_client

log = logging.getLogger(__name__)

FORMAT = "safeguard-record/1"
_MAX_IN_FLIGHT = 1000


class RecordingError(ValueError):
    """A file that is not a recording; the message names the line."""


@dataclass(frozen=True, slots=True)
class Recorded:
    t: float
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False

    def to_json(self) -> str:
        line: dict[str, Any] = {"t": round(self.t, 6), "topic": self.topic, "qos": self.qos, "retain": self.retain}
        try:
            line["payload"] = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            line["payload_b64"] = base64.b64encode(self.payload).decode("ascii")
        return json.dumps(line, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recorded:
        if "payload_b64" in data:
            payload = base64.b64decode(data["payload_b64"], validate=True)
        else:
            payload = str(data["payload"]).encode("utf-8")
        return cls(float(data["t"]), str(data["topic"]), payload, int(data.get("qos", 1)), bool(data.get("retain")))


def read_recording(path: Path) -> Iterator[Recorded]:
    with path.open(encoding="utf-8") as handle:
        header = handle.readline()
        try:
            if json.loads(header).get("format") != FORMAT:
                raise RecordingError(f"{path}: line 1 is not a {FORMAT} header")
        except (json.JSONDecodeError, AttributeError):
            raise RecordingError(f"{path}: line 1 is not a {FORMAT} header") from None
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            try:
                yield Recorded.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise RecordingError(f"{path}: line {number}: {exc}") from None


class Recorder:
    """Subscribes to ``sg/v1/#`` (alerts included unless told otherwise) and writes every message."""

    def __init__(self, url: str, version: MqttVersion, out: IO[str], *, include_alerts: bool = False) -> None:
        self._endpoint = MqttEndpoint.parse(url)
        self._out = out
        self._include_alerts = include_alerts
        self._lock = threading.Lock()
        self._started = time.time()
        self.count = 0
        self.subscribed = threading.Event()
        self._client = new_client(self._endpoint, f"safeguard-recorder-{int(self._started)}", version)
        self._client.on_connect = lambda c, *_a: c.subscribe(SUBSCRIPTION, qos=1)
        self._client.on_subscribe = lambda *_a: self.subscribed.set()
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; raises :class:`BrokerUnavailable` (nothing recorded) if it cannot."""
        self._out.write(json.dumps({"format": FORMAT, "started": self._started}) + "\n")
        connect_and_wait(self._client, self._endpoint, timeout=timeout)
        if not self.subscribed.wait(timeout):
            self._client.disconnect()
            self._client.loop_stop()
            raise BrokerUnavailable(f"MQTT broker at {self._endpoint} did not confirm the subscription to "
                                    f"{SUBSCRIPTION}")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self._include_alerts and mqtt.topic_matches_sub(ALERTS_FILTER, message.topic):
            return
        record = Recorded(time.time() - self._started, message.topic, bytes(message.payload), message.qos,
                          bool(message.retain))
        with self._lock:
            self._out.write(record.to_json() + "\n")
            self.count += 1

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._out.flush()


@dataclass
class ReplaySummary:
    published: int = 0  # acknowledged by the broker
    failed: int = 0
    duration_s: float = 0.0


def replay(
    path: Path,
    url: str,
    version: MqttVersion,
    *,
    speed: float = 1.0,
    progress: IO[str] | None = None,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Republish a recording with its timing divided by ``speed``; every publish's result is checked."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    records = list(read_recording(path))
    endpoint = MqttEndpoint.parse(url)
    client = new_client(endpoint, f"safeguard-replay-{int(time.time())}", version)
    client.max_inflight_messages_set(_MAX_IN_FLIGHT)
    connect_and_wait(client, endpoint)
    summary = ReplaySummary()
    pending: list[mqtt.MQTTMessageInfo] = []
    stop = stop or threading.Event()
    started = time.monotonic()
    try:
        for index, record in enumerate(records, start=1):
            delay = started + record.t / speed - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            info = client.publish(record.topic, record.payload, qos=record.qos, retain=record.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:  # paho refuses silently past its in-flight limit
                summary.failed += 1
                log.warning("publish on %s refused (rc=%s)", record.topic, info.rc)
            else:
                pending.append(info)
            if len(pending) >= _MAX_IN_FLIGHT // 2:
                _settle(pending, summary)
            if progress is not None and (index == len(records) or index % 50 == 0):
                _bar(progress, index, len(records))
        _settle(pending, summary)
    finally:
        client.disconnect()
        client.loop_stop()
    summary.duration_s = time.monotonic() - started
    return summary


def _settle(pending: list[mqtt.MQTTMessageInfo], summary: ReplaySummary) -> None:
    """Wait for the broker's acknowledgements and count them."""
    for info in pending:
        info.wait_for_publish(timeout=30)
        if info.is_published():
            summary.published += 1
        else:
            summary.failed += 1
    pending.clear()


def _bar(out: IO[str], done: int, total: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    out.write(f"\rreplay [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        out.write("\n")
    out.flush()
