"""A virtual edge agent: speaks wire contract v1 for one site, like a real agent would.

Birth (retained) on every connect with the device list, a retained Last Will, QoS 1
readings with ``boot`` and ``seq``; heartbeats every ``heartbeat_s`` with jitter. Faults
are switches the scenarios flip: a silent camera, a stream state, a smoke state, a
blocked exit, a crash (the TCP connection dropped, so the broker fires the Will), a
partition (messages held back, then delivered late in order), a skewed clock.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from protocol import (
    AgentStatus,
    DeclaredDevice,
    DeviceKind,
    ExitReading,
    ExitState,
    Heartbeat,
    MessageType,
    Reading,
    SmokeReading,
    SmokeState,
    StreamState,
    device_topic,
    encode,
    status_topic,
)
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client

log = logging.getLogger(__name__)

_READING_TYPE = {DeviceKind.CAMERA: MessageType.HEARTBEAT, DeviceKind.SMOKE: MessageType.SMOKE,
                 DeviceKind.EXIT: MessageType.EXIT}


@dataclass
class VirtualDevice:
    id: str
    kind: DeviceKind
    name: str = ""
    silent: bool = False
    stream: str = "ok"
    smoke_state: str = "normal"
    battery_pct: float | None = 90.0
    exit_state: str = "clear"
    blocked_since: float | None = None
    next_due: float = 0.0

    def reading(self, now: float, boot: str, seq: int) -> Reading:
        """What the device says at ``now`` (ValueError if a switch holds a state the contract has not)."""
        if self.kind is DeviceKind.CAMERA:
            ok = self.stream == "ok"
            return Heartbeat(ts=now, boot=boot, seq=seq, stream=StreamState(self.stream), fps=12.5 if ok else 0.0,
                             last_frame_ts=now if ok else None)
        if self.kind is DeviceKind.SMOKE:
            obscuration = 9.5 if self.smoke_state == "alarm" else 0.0
            return SmokeReading(ts=now, boot=boot, seq=seq, state=SmokeState(self.smoke_state),
                                battery_pct=self.battery_pct, obscuration_pct=obscuration)
        blocked = self.exit_state == "blocked"
        ratio, since = (0.65, self.blocked_since) if blocked else (0.0, None)
        return ExitReading(ts=now, boot=boot, seq=seq, state=ExitState(self.exit_state), blocked_ratio=ratio,
                           blocked_since=since)


@dataclass
class VirtualAgent:
    """One site. ``tick(now)`` sends what is due; the switches change what is sent."""

    endpoint: MqttEndpoint
    version: MqttVersion
    site: str
    devices: list[VirtualDevice]
    heartbeat_s: float = 60.0
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random)
    clock_offset_s: float = 0.0
    # Occasional network delay: this share of readings arrives up to max_delay_s late.
    delay_probability: float = 0.0
    max_delay_s: float = 0.0
    boot: str = ""
    partitioned: bool = False
    sent: int = 0  # handed to paho
    published: int = 0  # acknowledged by the broker (PUBACK): only these count as delivered
    refused: int = 0  # refused by paho (in-flight limit, no connection)
    connected: threading.Event = field(default_factory=threading.Event)
    connect_error: str | None = None  # why the last connection attempt failed, if it failed
    unreachable: bool = False  # that attempt found no broker at all (TCP refused)
    answered: threading.Event = field(default_factory=threading.Event)  # connected, or failed
    _held: list[tuple[str, bytes, bool]] = field(default_factory=list)
    _delayed: list[tuple[float, str, bytes]] = field(default_factory=list)
    _last: mqtt.MQTTMessageInfo | None = None
    _seq: dict[str, int] = field(default_factory=dict)
    _client: mqtt.Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.boot = uuid.uuid4().hex[:12]
        self._seq.clear()
        client = new_client(self.endpoint, f"sim-{self.site}-{self.boot}", self.version)
        client.will_set(status_topic(self.site), encode(AgentStatus(online=False, boot=self.boot)), qos=1,
                        retain=True)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        client.reconnect_delay_set(1, 5)
        client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=5)
        client.loop_start()
        self._client = client
        now = time.time()
        for device in self.devices:  # spread the first messages over one interval
            device.next_due = now + self.rng.uniform(0, min(self.heartbeat_s, 1.0))

    def _on_connect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.connect_error, self.unreachable = f"the broker refused the connection: {reason}", False
            log.warning("%s: the broker refused the connection: %s", self.site, reason)
        else:
            self.connect_error = None
            self.connected.set()
            self._birth()
        self.answered.set()

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self.connect_error, self.unreachable = f"cannot reach the MQTT broker at {self.endpoint}", True
        self.answered.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, _reason: Any, _props: Any) -> None:
        self.published += 1  # paho's network thread is the only writer

    def _birth(self) -> None:
        devices = tuple(DeclaredDevice(id=d.id, kind=d.kind, name=d.name or d.id, location=d.name or d.id)
                        for d in self.devices)
        status = AgentStatus(online=True, ts=self.now(), boot=self.boot, agent_version="simulator",
                             heartbeat_s=max(1, round(self.heartbeat_s)), devices=devices)
        self._send(status_topic(self.site), encode(status), retain=True, hold=False)

    def now(self) -> float:
        """The agent's own clock (possibly skewed)."""
        return time.time() + self.clock_offset_s

    def device(self, device_id: str) -> VirtualDevice:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(f"site {self.site} has no device {device_id!r}")

    def _send(self, topic: str, payload: bytes, *, retain: bool = False, hold: bool = True) -> None:
        with self._lock:
            if hold and self.partitioned:
                self._held.append((topic, payload, retain))
                return
            if hold and self.delay_probability and self.rng.random() < self.delay_probability:
                self._delayed.append((time.time() + self.rng.uniform(0, self.max_delay_s), topic, payload))
                return
            self._publish(topic, payload, retain)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish now (the caller holds the lock)."""
        client = self._client
        if client is None:
            return
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.sent += 1
            self._last = info
        else:  # paho refuses silently past its in-flight limit: count it
            self.refused += 1
            log.warning("%s: publish on %s refused (rc=%s)", self.site, topic, info.rc)

    def send_reading(self, device: VirtualDevice) -> None:
        seq = self._seq[device.id] = self._seq.get(device.id, -1) + 1
        reading = device.reading(self.now(), self.boot, seq)
        self._send(device_topic(self.site, device.id, _READING_TYPE[device.kind]), encode(reading))

    def tick(self, now: float) -> None:
        """Send every reading that is due (heartbeat_s with jitter), and delayed ones whose time came."""
        if self._client is None:
            return
        with self._lock:
            due = [d for d in self._delayed if d[0] <= now]
            if due:
                self._delayed = [d for d in self._delayed if d[0] > now]
                for _, topic, payload in due:
                    self._publish(topic, payload, False)
        for device in self.devices:
            if device.silent or now < device.next_due:
                continue
            self.send_reading(device)
            spread = self.heartbeat_s * self.jitter
            device.next_due = now + self.heartbeat_s + self.rng.uniform(-spread, spread)

    def changed(self, device: VirtualDevice) -> None:
        """A state change is sent at once (and the periodic schedule restarts)."""
        if not device.silent and self._client is not None:
            self.send_reading(device)
            device.next_due = time.time() + self.heartbeat_s

    def end_partition(self) -> None:
        with self._lock:
            self.partitioned = False
            held, self._held = self._held, []
        for topic, payload, retain in held:  # the backlog, in order
            self._send(topic, payload, retain=retain)

    def crash(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the Last Will."""
        client, self._client = self._client, None
        if client is not None:
            sock = client.socket()
            client.loop_stop()
            if sock is not None:
                sock.close()

    def leave(self, deadline: float | None = None) -> None:
        """Deliver what the network still holds, then disconnect cleanly without a status
        (the gateway sees the devices fall silent, nothing else). Waits for the broker's
        acknowledgements until ``deadline`` (``time.monotonic()``; default 10 s from now)."""
        if self._client is None:
            return
        self.end_partition()
        with self._lock:
            delayed, self._delayed = sorted(self._delayed), []
            for _, topic, payload in delayed:
                self._publish(topic, payload, False)
            last, client, self._client = self._last, self._client, None
        if last is not None and self.connected.is_set():
            remaining = (deadline if deadline is not None else time.monotonic() + 10) - time.monotonic()
            if remaining > 0:
                with contextlib.suppress(RuntimeError):  # paho: "message not queued" on a lost link
                    last.wait_for_publish(timeout=remaining)
        client.disconnect()
        client.loop_stop()

    def stop(self) -> None:
        """A clean shutdown: say offline (a clean DISCONNECT does not fire the Will)."""
        client = self._client
        if client is None:
            return
        goodbye = AgentStatus(online=False, ts=self.now(), boot=self.boot)
        info = client.publish(status_topic(self.site), encode(goodbye), qos=1, retain=True)
        info.wait_for_publish(5)
        self._client = None
        client.disconnect()
        client.loop_stop()
