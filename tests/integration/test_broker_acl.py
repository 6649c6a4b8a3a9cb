"""The shipped broker ACL (deploy/mosquitto/acl) against a real Mosquitto.

It is what makes ``ingest_catch_all: false`` safe: a site may publish only the contract's
message types under its own prefix, so no off-contract topic reaches the gateway unseen.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.devservers import MosquittoServer
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client

pytestmark = pytest.mark.integration

ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"
PASSWORDS = {"site-a": "pw-a", "site-b": "pw-b", "safeguard-gateway": "pw-gw"}


@pytest.fixture
def broker() -> Iterator[MosquittoServer]:
    # Mosquitto drops root for its own user before it reads these: a world-readable folder.
    root = Path(tempfile.mkdtemp(prefix="safeguard-acl-"))
    root.chmod(0o755)
    passwords = root / "passwords"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwords), user, password],
                       check=True, capture_output=True)
    acl = root / "acl"
    shutil.copy(ACL, acl)
    for path in (passwords, acl):
        path.chmod(0o644)
    server = MosquittoServer(root / "mqtt", auth=(passwords, acl))
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _client(broker: MosquittoServer, user: str, received: queue.Queue[str] | None = None,
            subscription: str = "sg/v1/#") -> mqtt.Client:
    endpoint = MqttEndpoint.parse(f"mqtt://{user}:{PASSWORDS[user]}@127.0.0.1:{broker.port}")
    client = new_client(endpoint, f"{user}-acl-test", MqttVersion.V5)
    ready = threading.Event()

    def on_connect(c: mqtt.Client, *_a: Any) -> None:
        if received is None:
            ready.set()
        else:
            c.subscribe(subscription, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: ready.set()
    if received is not None:
        client.on_message = lambda _c, _u, m: received.put(m.topic)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    assert ready.wait(10), f"{user} did not connect"
    return client


def test_a_site_publishes_only_contract_topics_under_its_own_prefix(broker: MosquittoServer) -> None:
    received: queue.Queue[str] = queue.Queue()
    gateway = _client(broker, "safeguard-gateway", received)
    site = _client(broker, "site-a")
    try:
        allowed = ["sg/v1/site-a/cam-1/heartbeat", "sg/v1/site-a/smoke-1/smoke", "sg/v1/site-a/exit-1/exit",
                   "sg/v1/site-a/exit-1/snapshot", "sg/v1/site-a/agent/status"]
        refused = ["sg/v1/site-a/cam-1/video", "sg/v1/site-a/cam-1/heartbeat/extra", "sg/v1/site-a/heartbeat",
                   "sg/v1/site-b/cam-1/heartbeat", "sg/v1/alerts/site-a"]
        for topic in refused + allowed:
            site.publish(topic, b"{}", qos=1).wait_for_publish(10)
        got = [received.get(timeout=10) for _ in allowed]
        site.publish("sg/v1/site-a/cam-1/heartbeat", b"last", qos=1).wait_for_publish(10)
        got.append(received.get(timeout=10))  # the last one: everything before it has arrived
        assert sorted(got) == sorted([*allowed, "sg/v1/site-a/cam-1/heartbeat"])
        assert received.empty()
    finally:
        site.loop_stop()
        gateway.loop_stop()


def test_the_gateway_confirms_to_each_site_alone_and_no_site_forges_a_confirmation(broker: MosquittoServer) -> None:
    """sg/v1/{site}/agent/ack (issue 15): the gateway writes it, a site reads only its own and writes none."""
    at_a: queue.Queue[str] = queue.Queue()
    at_gateway: queue.Queue[str] = queue.Queue()
    site_a = _client(broker, "site-a", at_a, subscription="sg/v1/+/agent/ack")  # asks for every site's
    gateway = _client(broker, "safeguard-gateway", at_gateway, subscription="sg/v1/+/agent/ack")
    site_b = _client(broker, "site-b")
    try:
        for topic in ("sg/v1/site-b/agent/ack", "sg/v1/site-a/agent/ack"):
            gateway.publish(topic, b'{"ts":1.0,"acks":[]}', qos=1).wait_for_publish(10)
        assert at_a.get(timeout=10) == "sg/v1/site-a/agent/ack"
        assert sorted(at_gateway.get(timeout=10) for _ in range(2)) == ["sg/v1/site-a/agent/ack",
                                                                       "sg/v1/site-b/agent/ack"]
        for topic in ("sg/v1/site-a/agent/ack", "sg/v1/site-b/agent/ack"):  # forged by site B: refused
            site_b.publish(topic, b'{"ts":1.0,"acks":[]}', qos=1).wait_for_publish(10)
        gateway.publish("sg/v1/site-a/agent/ack", b"last", qos=1).wait_for_publish(10)
        assert at_a.get(timeout=10) == "sg/v1/site-a/agent/ack"  # the gateway's last one, nothing forged before
        assert at_gateway.get(timeout=10) == "sg/v1/site-a/agent/ack"
        assert at_a.empty()
        assert at_gateway.empty()
    finally:
        for client in (site_a, gateway, site_b):
            client.loop_stop()
