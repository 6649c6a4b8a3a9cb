"""Virtual sites against a real Mosquitto: reproducible, jittered, occasionally delayed, nothing lost."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.runtime import Gateway
from protocol import SUBSCRIPTION
from protocol.mqtt import MqttEndpoint, MqttVersion, connect_properties, new_client
from safeguard.devservers import MosquittoServer
from simulators.scenario import ScenarioRunner, fleet
from tests.support import Api, wait_for

pytestmark = pytest.mark.integration


class Collector:
    def __init__(self, url: str) -> None:
        endpoint = MqttEndpoint.parse(url)
        self.messages: list[tuple[str, dict[str, Any]]] = []
        subscribed = threading.Event()
        self.client = new_client(endpoint, "collector", MqttVersion.V5)
        self.client.on_connect = lambda c, *_a: c.subscribe(SUBSCRIPTION, qos=1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(endpoint.host, endpoint.port, properties=connect_properties(session_expiry_s=0,
                                                                                       receive_maximum=1000))
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, json.loads(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_delayed_readings_all_arrive_some_out_of_order(mosquitto: MosquittoServer) -> None:
    collector = Collector(mosquitto.url)
    scenario = fleet(2, cameras=2, smoke=1, exits=1, heartbeat_s=0.25, duration=3, delay_probability=0.3,
                     max_delay_s=1.0)
    runner = ScenarioRunner(scenario, mosquitto.url, MqttVersion.V5, seed=3)
    runner.run()
    published = sum(a.published for a in runner.agents.values())
    assert sum(a.refused for a in runner.agents.values()) == 0
    wait_for(lambda: len(collector.messages) >= published, what=f"all {published} messages")
    collector.close()
    readings = [(t, m) for t, m in collector.messages if not t.endswith("/agent/status")]
    by_device: dict[str, list[int]] = {}
    for topic, message in readings:
        by_device.setdefault(topic, []).append(message["seq"])
    assert all(sorted(seqs) == list(range(len(seqs))) for seqs in by_device.values()), "a reading was lost"
    assert any(seqs != sorted(seqs) for seqs in by_device.values()), "no delay reordered anything"


def test_virtual_sites_are_healthy_for_the_gateway(gateway: Gateway) -> None:
    scenario = fleet(3, heartbeat_s=0.5, duration=4, prefix="vs").scaled(1)
    api = Api(gateway.api_url)
    for site in scenario.sites:
        api.put_site(site.id)
    ScenarioRunner(scenario, gateway.settings.mqtt.url, MqttVersion.V5, seed=1).run()

    def devices_seen() -> bool:
        return all(len(api.http.get(f"/api/v1/sites/{s.id}/devices").json()["items"]) == 5 for s in scenario.sites)

    wait_for(devices_seen, what="every virtual device registered")
    assert api.alerts(limit=1000) == [], "healthy virtual sites raised an alert while running"
