"""Test helpers: an MQTT agent that speaks the contract, an API client, and bounded waits."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt

from protocol import MessageType, device_topic, status_topic
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client

ADMIN_TOKEN = "test-admin-token-0123456789"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``.

    A bounded wait for an eventual state, not a speed check: the timeout is generous on purpose.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Agent:
    """A minimal edge agent for tests: birth with Last Will, readings with boot and seq."""

    def __init__(self, url: str, site: str, *, heartbeat_s: int = 60, version: MqttVersion = MqttVersion.V5) -> None:
        self.site = site
        self.boot = uuid.uuid4().hex[:12]
        self.heartbeat_s = heartbeat_s
        self.seq: dict[str, int] = {}
        endpoint = MqttEndpoint.parse(url)
        self.client = new_client(endpoint, f"agent-{site}-{self.boot}", version)
        will = {"online": False, "boot": self.boot}
        self.client.will_set(status_topic(site), json.dumps(will), qos=1, retain=True)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.connect(endpoint.host, endpoint.port, keepalive=2)
        self.client.loop_start()
        assert self._connected.wait(10), "agent could not connect"

    def publish_raw(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish refused: rc={info.rc}"
        info.wait_for_publish(10)

    def birth(self, devices: list[dict[str, Any]] | None = None) -> None:
        status = {"online": True, "ts": time.time(), "boot": self.boot, "agent_version": "test",
                  "heartbeat_s": self.heartbeat_s, "devices": devices or []}
        self.publish_raw(status_topic(self.site), json.dumps(status), retain=True)

    def send(self, device: str, message_type: MessageType, ts: float | None = None, **fields: Any) -> int:
        seq = self.seq.get(device, -1) + 1
        self.seq[device] = seq
        payload = {"ts": time.time() if ts is None else ts, "boot": self.boot, "seq": seq, **fields}
        self.publish_raw(device_topic(self.site, device, message_type), json.dumps(payload))
        return seq

    def heartbeat(self, device: str, stream: str = "ok", **fields: Any) -> int:
        return self.send(device, MessageType.HEARTBEAT, stream=stream, fps=10.0, last_frame_ts=time.time(), **fields)

    def smoke(self, device: str, state: str = "normal", battery_pct: float | None = 90.0, **fields: Any) -> int:
        return self.send(
            device, MessageType.SMOKE, state=state, battery_pct=battery_pct, obscuration_pct=None, **fields
        )

    def exit(self, device: str, state: str = "clear", ratio: float = 0.0, **fields: Any) -> int:
        since = time.time() if state == "blocked" else None
        return self.send(device, MessageType.EXIT, state=state, blocked_ratio=ratio, blocked_since=since, **fields)

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT, so the broker fires the Last Will."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Api:
    def __init__(self, base_url: str, token: str = ADMIN_TOKEN) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def put_site(self, site: str, **fields: Any) -> dict[str, Any]:
        response = self.http.put(f"/api/v1/sites/{site}", json=fields)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/alerts", params=params)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def alert(self, **match: Any) -> dict[str, Any] | None:
        """The newest alert whose fields equal ``match``, or None."""
        for alert in self.alerts(limit=1000):
            if all(alert.get(k) == v for k, v in match.items()):
                return alert
        return None

    def dead_letters(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/dead-letters", params={"limit": 1000})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items
