"""Smoke detectors behind one adapter interface (issue 3 point 4).

An adapter watches one detector and calls ``on_change(status)`` whenever the state
changes; ``current()`` answers the latest state for the periodic resend. Adapters:
Zigbee2MQTT (a local broker's ``zigbee2mqtt/<name>`` topic), a dry contact (a fire
panel's relay read from a GPIO value file), and a simulated detector for tests and demos.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from protocol import SmokeState
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmokeStatus:
    state: SmokeState
    battery_pct: float | None = None
    obscuration_pct: float | None = None

    def fields(self) -> dict[str, Any]:
        """The contract's smoke fields (without ts, boot, seq, which the publisher adds)."""
        return {"state": self.state.value, "battery_pct": self.battery_pct, "obscuration_pct": self.obscuration_pct}


OnChange = Callable[[SmokeStatus], None]


class SmokeAdapter(ABC):
    def __init__(self) -> None:
        self._status: SmokeStatus | None = None
        self._lock = threading.Lock()
        self._on_change: OnChange | None = None

    def start(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._start()

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def current(self) -> SmokeStatus | None:
        with self._lock:
            return self._status

    def _report(self, status: SmokeStatus) -> None:
        with self._lock:
            changed, self._status = status != self._status, status
        if changed and self._on_change is not None:
            self._on_change(status)


def map_zigbee2mqtt(payload: dict[str, Any]) -> SmokeStatus:
    """Zigbee2MQTT's exposes of a smoke detector → the contract's states.

    ``tamper`` wins (someone opened the detector), then ``smoke`` (alarm), then ``test``
    (the test button), then a reported fault (``battery_defect`` / ``fault``), else normal.
    """
    if payload.get("tamper") is True:
        state = SmokeState.TAMPER
    elif payload.get("smoke") is True:
        state = SmokeState.ALARM
    elif payload.get("test") is True:
        state = SmokeState.TEST
    elif payload.get("battery_defect") is True or payload.get("fault") is True:
        state = SmokeState.FAULT
    else:
        state = SmokeState.NORMAL
    battery = payload.get("battery")
    density = payload.get("smoke_density")
    return SmokeStatus(
        state,
        float(battery) if isinstance(battery, int | float) and 0 <= battery <= 100 else None,
        float(density) if isinstance(density, int | float) and 0 <= density <= 100 else None,
    )


class Zigbee2MqttDetector(SmokeAdapter):
    """Subscribes to ``zigbee2mqtt/<name>`` on the site's local broker."""

    def __init__(self, name: str, broker_url: str = "mqtt://127.0.0.1:1883",
                 version: MqttVersion = MqttVersion.V311) -> None:
        super().__init__()
        self.topic = f"zigbee2mqtt/{name}"
        self._endpoint = MqttEndpoint.parse(broker_url)
        self._client = new_client(self._endpoint, f"safeguard-z2m-{name}", version)
        self._client.on_connect = lambda c, *_a: c.subscribe(self.topic, qos=1)
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 30)
        self.subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: self.subscribed.set()

    def _start(self) -> None:
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: not JSON, ignored", self.topic)
            return
        if isinstance(payload, dict):
            self._report(map_zigbee2mqtt(payload))


class DryContactDetector(SmokeAdapter):
    """A fire panel's relay output, read from a GPIO value file (e.g. /sys/class/gpio/gpio17/value).

    The content equal to ``active`` means alarm; any other value normal; an unreadable
    file means the wiring or the panel is at fault.
    """

    def __init__(self, path: Path, active: str = "1", poll_s: float = 0.5) -> None:
        super().__init__()
        self.path = path
        self.active = active
        self.poll_s = poll_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dry-contact-{path.name}", daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def read(self) -> SmokeStatus:
        try:
            value = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return SmokeStatus(SmokeState.FAULT)
        return SmokeStatus(SmokeState.ALARM if value == self.active else SmokeState.NORMAL)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._report(self.read())
            self._stopping.wait(self.poll_s)


class SimulatedDetector(SmokeAdapter):
    """A detector whose state tests and demos set by hand."""

    def __init__(self, battery_pct: float = 95.0) -> None:
        super().__init__()
        self._initial = SmokeStatus(SmokeState.NORMAL, battery_pct, 0.0)

    def _start(self) -> None:
        self._report(self._initial)

    def stop(self) -> None:
        return None

    def set(self, state: SmokeState, battery_pct: float | None = None) -> None:
        current = self.current() or self._initial
        self._report(SmokeStatus(state, current.battery_pct if battery_pct is None else battery_pct, 0.0))
