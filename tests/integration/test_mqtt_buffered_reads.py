"""The buffered paho client against a real Mosquitto: a burst parsed across chunk boundaries."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from protocol.mqtt import MqttEndpoint, MqttVersion, connect_properties, new_client
from protocol.mqtt_socket import BufferedSocket
from safeguard.devservers import MosquittoServer

_COUNT = 3_000


def test_a_queued_burst_arrives_whole_and_in_order(mosquitto: MosquittoServer) -> None:
    endpoint = MqttEndpoint.parse(mosquitto.url)
    received: list[bytes] = []
    done, subscribed = threading.Event(), threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        received.append(bytes(message.payload))
        if len(received) >= _COUNT:
            done.set()

    def session() -> mqtt.Client:
        client = new_client(endpoint, "buffered-reader", MqttVersion.V5, persistent=True)
        client.on_message = on_message
        client.on_connect = lambda c, *_a: c.subscribe("burst/#", qos=1)
        client.on_subscribe = lambda *_a: subscribed.set()
        client.connect(endpoint.host, endpoint.port, clean_start=False,
                       properties=connect_properties(session_expiry_s=60, receive_maximum=65_535))
        client.loop_start()
        assert subscribed.wait(10)
        return client

    away = session()
    away.disconnect()
    away.loop_stop()
    publisher = new_client(endpoint, "burst-publisher", MqttVersion.V5)
    publisher.connect(endpoint.host, endpoint.port)
    publisher.loop_start()
    # Sizes from 1 byte to past a 256 KiB chunk, so packets and lengths straddle the chunks.
    payloads = [i.to_bytes(4, "big") * (1 + (i * 37) % 400) for i in range(_COUNT - 1)] + [b"z" * 300_000]
    for payload in payloads:
        publisher.publish("burst/x", payload, qos=1).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()

    reader = session()  # the broker now sends its queue as fast as it can
    try:
        assert done.wait(60), f"{len(received)} of {_COUNT} received"
        assert isinstance(reader.socket(), BufferedSocket)
    finally:
        reader.disconnect()
        reader.loop_stop()
    assert received == payloads
