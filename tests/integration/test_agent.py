"""The edge agent end to end: its detectors' states become alerts at the real gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.sources.smoke import Zigbee2MqttDetector
from gateway.runtime import Gateway
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client
from safeguard.devservers import MosquittoServer
from tests.support import Api, wait_for

pytestmark = pytest.mark.integration

SITE = "agent-site"


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    """The site's own broker, where Zigbee2MQTT publishes."""
    with MosquittoServer(tmp_path / "z2m-broker") as broker:
        yield broker


def make_agent(gateway: Gateway, tmp_path: Path, smoke: list[dict[str, Any]], heartbeat_s: int = 1) -> Agent:
    Api(gateway.api_url).put_site(SITE, name="Agent site")
    config = AgentConfig.model_validate({
        "site": SITE,
        "broker": {"url": gateway.settings.mqtt.url, "version": "5"},
        "heartbeat_s": heartbeat_s,
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "smoke": smoke,
    })
    agent = Agent(config)
    agent.start()
    assert agent.publisher.wait_connected(10)
    return agent


def test_zigbee2mqtt_smoke_payload_becomes_a_fire_alarm(gateway: Gateway, local_broker: MosquittoServer,
                                                        tmp_path: Path) -> None:
    agent = make_agent(gateway, tmp_path, [{"id": "smoke-1", "adapter": "zigbee2mqtt", "address": "hall-smoke",
                                            "broker": local_broker.url}])
    try:
        zigbee = new_client(MqttEndpoint.parse(local_broker.url), "zigbee2mqtt-bridge", MqttVersion.V311)
        assert local_broker.port is not None
        zigbee.connect(local_broker.host, local_broker.port)
        zigbee.loop_start()
        adapter = agent.smoke["smoke-1"]
        assert isinstance(adapter, Zigbee2MqttDetector)
        assert adapter.subscribed.wait(10), "the adapter did not subscribe on the local broker"

        def publish(payload: dict[str, Any]) -> None:
            zigbee.publish("zigbee2mqtt/hall-smoke", json.dumps(payload), qos=1).wait_for_publish(5)

        publish({"smoke": False, "battery": 91, "tamper": False, "linkquality": 120})
        api = Api(gateway.api_url)
        wait_for(lambda: any(d["status"] == "normal" for d in api.http.get(f"/api/v1/sites/{SITE}/devices")
                             .json()["items"]), what="the detector's normal state at the gateway")
        publish({"smoke": True, "battery": 91, "tamper": False})
        alert = wait_for(lambda: api.alert(kind="fire_alarm", site=SITE), what="fire_alarm at the gateway")
        assert alert["device"] == "smoke-1"
        assert alert["detail"]["state"] == "alarm"
        publish({"smoke": False, "battery": 15, "tamper": True})
        wait_for(lambda: api.alert(kind="detector_fault", site=SITE), what="detector_fault (tamper)")
        zigbee.disconnect()
        zigbee.loop_stop()
    finally:
        agent.stop()


def test_dry_contact_relay_and_periodic_resend(gateway: Gateway, tmp_path: Path) -> None:
    relay = tmp_path / "gpio17"
    relay.write_text("0\n", encoding="ascii")
    agent = make_agent(gateway, tmp_path, [{"id": "panel", "adapter": "dry_contact", "address": str(relay)}])
    api = Api(gateway.api_url)
    try:
        def readings() -> int:
            items = api.http.get(f"/api/v1/sites/{SITE}/devices").json()["items"]
            return sum(1 for d in items if d["id"] == "panel" and d["state"] is not None and
                       d["state"]["seq"] >= 2)

        wait_for(readings, what="the unchanged state resent every heartbeat_s")
        relay.write_text("1\n", encoding="ascii")
        wait_for(lambda: api.alert(kind="fire_alarm", site=SITE, device="panel"), what="the panel's alarm")
        relay.unlink()  # the wiring is cut: a fault, not silence
        wait_for(lambda: api.alert(kind="detector_fault", site=SITE, device="panel"), what="a fault")
    finally:
        agent.stop()
    # A clean stop says goodbye: the gateway marks the agent offline.
    wait_for(lambda: api.alert(kind="agent_offline", site=SITE), what="agent_offline after a clean stop")
