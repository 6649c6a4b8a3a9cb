"""The load generator against a real Mosquitto: every publish accounted for, the rate respected."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from protocol import SUBSCRIPTION
from protocol.mqtt import MqttEndpoint, MqttVersion, connect_properties, new_client
from safeguard.devservers import MosquittoServer
from simulators.load import LoadPlan, run
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _counter(url: str) -> tuple[mqtt.Client, list[int]]:
    endpoint = MqttEndpoint.parse(url)
    count = [0]
    subscribed = threading.Event()
    client = new_client(endpoint, "load-counter", MqttVersion.V5)
    client.on_connect = lambda c, *_a: c.subscribe(SUBSCRIPTION, qos=1)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = lambda *_a: count.__setitem__(0, count[0] + 1)
    client.connect(endpoint.host, endpoint.port, properties=connect_properties(session_expiry_s=0,
                                                                              receive_maximum=1000))
    client.loop_start()
    assert subscribed.wait(10)
    return client, count


def test_two_processes_deliver_every_message(mosquitto: MosquittoServer) -> None:
    client, count = _counter(mosquitto.url)
    report = run(LoadPlan(mosquitto.url, messages=3001, sites=7, processes=2))
    assert (report.published, report.failed) == (3001, 0)
    wait_for(lambda: count[0] == 3001, what="every message at the subscriber")
    client.disconnect()
    client.loop_stop()


def test_target_rate_is_not_exceeded(mosquitto: MosquittoServer) -> None:
    report = run(LoadPlan(mosquitto.url, messages=200, sites=3, processes=2, rate=400))
    assert report.failed == 0
    # Paced sends: 100 per process at 200/s each cannot finish before ~0.5 s.
    assert report.seconds >= 0.49
