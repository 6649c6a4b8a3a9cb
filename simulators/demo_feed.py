"""The small built-in feed of ``safeguard demo``: a few virtual sites and scripted incidents.

Within the first minute: a smoke alarm and a blocked exit at the same site (so also
``fire_alarm_exit_blocked``), a camera that goes silent (``camera_offline``), and a
detector with a low battery (``detector_fault``). Everything else stays healthy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from protocol import MessageType, device_topic, status_topic
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoSite:
    id: str
    name: str
    city: str
    county: str
    category: str
    address: str


DEMO_SITES = (
    DemoSite("demo-hz-001", "西湖艺术培训中心", "杭州市", "西湖区", "dance", "文三路 100 号"),
    DemoSite("demo-hz-002", "钱塘英语学校", "杭州市", "上城区", "language", "解放路 20 号"),
    DemoSite("demo-nb-001", "甬江体育训练营", "宁波市", "鄞州区", "sports", "中山东路 8 号"),
    DemoSite("demo-wz-001", "瓯江科学教室", "温州市", "鹿城区", "science", "人民路 66 号"),
)
DEVICES = (("cam-1", "camera", "大门"), ("cam-2", "camera", "走廊"), ("smoke-1", "smoke", "教室 A"),
           ("exit-1", "exit", "安全出口 1"))

# (seconds after start, site, device, what happens)
SCRIPT = (
    (8.0, "demo-hz-001", "smoke-1", "alarm"),
    (12.0, "demo-hz-001", "exit-1", "blocked"),
    (10.0, "demo-nb-001", "cam-2", "silent"),
    (20.0, "demo-wz-001", "smoke-1", "battery_low"),
)


class _SiteAgent:
    def __init__(self, endpoint: MqttEndpoint, version: MqttVersion, site: str, heartbeat_s: int) -> None:
        self.site = site
        self.boot = uuid.uuid4().hex[:12]
        self.heartbeat_s = heartbeat_s
        self.seq: dict[str, int] = {}
        self.client = new_client(endpoint, f"demo-agent-{site}", version)
        self.client.will_set(status_topic(site), json.dumps({"online": False, "boot": self.boot}), qos=1, retain=True)
        self.client.on_connect = lambda *_a: self._birth()
        self.client.reconnect_delay_set(1, 10)
        self.client.connect_async(endpoint.host, endpoint.port, keepalive=15)
        self.client.loop_start()

    def _publish(self, topic: str, payload: dict[str, object], retain: bool = False) -> None:
        info = self.client.publish(topic, json.dumps(payload), qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("demo publish on %s refused (rc=%s)", topic, info.rc)

    def _birth(self) -> None:
        devices = [{"id": d, "kind": k, "name": n, "location": n} for d, k, n in DEVICES]
        self._publish(status_topic(self.site), {"online": True, "ts": time.time(), "boot": self.boot,
                                                "agent_version": "demo", "heartbeat_s": self.heartbeat_s,
                                                "devices": devices}, retain=True)

    def send(self, device: str, message_type: MessageType, **fields: object) -> None:
        seq = self.seq[device] = self.seq.get(device, -1) + 1
        self._publish(device_topic(self.site, device, message_type),
                      {"ts": time.time(), "boot": self.boot, "seq": seq, **fields})

    def stop(self) -> None:
        # A clean DISCONNECT does not fire the Will: say goodbye explicitly.
        self._publish(status_topic(self.site), {"online": False, "ts": time.time(), "boot": self.boot}, retain=True)
        self.client.disconnect()
        self.client.loop_stop()


class DemoFeed:
    def __init__(self, mqtt_url: str, version: MqttVersion, *, heartbeat_s: int = 5) -> None:
        self._endpoint = MqttEndpoint.parse(mqtt_url)
        self._version = version
        self._heartbeat_s = heartbeat_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._agents: list[_SiteAgent] = []

    def start(self) -> None:
        self._agents = [_SiteAgent(self._endpoint, self._version, s.id, self._heartbeat_s) for s in DEMO_SITES]
        self._thread = threading.Thread(target=self._run, name="demo-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for agent in self._agents:
            agent.stop()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stopping.is_set():
            elapsed = time.monotonic() - started
            happened = {(site, device): what for at, site, device, what in SCRIPT if elapsed >= at}
            for agent in self._agents:
                for device, kind, _name in DEVICES:
                    what = happened.get((agent.site, device))
                    if kind == "camera" and what != "silent":
                        agent.send(device, MessageType.HEARTBEAT, stream="ok", fps=12.5, last_frame_ts=time.time())
                    elif kind == "smoke":
                        agent.send(device, MessageType.SMOKE, state="alarm" if what == "alarm" else "normal",
                                   battery_pct=12.0 if what == "battery_low" else 87.0,
                                   obscuration_pct=8.5 if what == "alarm" else 0.0)
                    elif kind == "exit":
                        blocked = what == "blocked"
                        agent.send(device, MessageType.EXIT, state="blocked" if blocked else "clear",
                                   blocked_ratio=0.62 if blocked else 0.0,
                                   blocked_since=started_wall(started) + 12.0 if blocked else None)
            self._stopping.wait(min(self._heartbeat_s, 2.0) if elapsed < 30 else self._heartbeat_s)


def started_wall(started_monotonic: float) -> float:
    """Wall-clock time of a monotonic instant (for ``blocked_since``)."""
    return time.time() - (time.monotonic() - started_monotonic)
