"""MQTT connection settings shared by every client of the contract (gateway, agent, simulators).

Brokers differ: Mosquitto wants MQTT 5 with a large Receive Maximum for batched
acknowledgement (DESIGN section 2), while the demo's amqtt broker speaks MQTT 3.1.1
only. The protocol version is therefore a setting of every client.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class MqttVersion(StrEnum):
    V5 = "5"
    V311 = "3.1.1"


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # mqtts: a private CA's certificate (default: the system's trust store)

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        """``mqtt://user:pass@host:port`` or ``mqtts://...`` (TLS); raises ValueError saying why."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme or 'no scheme'!r}")
        if not parts.hostname:
            raise ValueError("MQTT URL has no host")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        # Never print the password (DESIGN section 6: secrets never appear in logs).
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def new_client(
    endpoint: MqttEndpoint,
    client_id: str,
    version: MqttVersion,
    *,
    persistent: bool = False,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho 2.x client configured for ``endpoint`` (not yet connected)."""
    protocol = mqtt.MQTTv5 if version is MqttVersion.V5 else mqtt.MQTTv311
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        manual_ack=manual_ack,
        # MQTT 5 sets clean start at connect time; paho requires None here for it.
        clean_session=None if version is MqttVersion.V5 else not persistent,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set_context(ssl.create_default_context(cafile=endpoint.ca_file))
    return client


def connect_properties(*, session_expiry_s: int, receive_maximum: int) -> Properties:
    """MQTT 5 CONNECT properties: keep the session while we are away, allow more in flight."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    props.ReceiveMaximum = receive_maximum
    return props


_PUBACK = 0x40  # MQTT control packet type 4, flags 0: the same in 3.1.1 and 5


def ack_all(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge QoS 1 messages (``manual_ack`` clients) in one packet write.

    paho's ``ack()`` queues every PUBACK as its own packet: a wake-up of its network thread and a
    ``send()`` each, which a profile of the ingest worker put at ~15 % of its samples. A PUBACK is
    four bytes (type, length 2, packet id; in MQTT 5 reason "success" may be left out), so the
    acknowledgements of a batch go as one concatenated write through paho's own outgoing queue
    (an internal of paho 2.x, pinned below 3; the integration tests acknowledge through it).
    """
    if mids:
        blob = struct.pack(f"!{len(mids)}I", *((_PUBACK << 24) | (2 << 16) | mid for mid in mids))
        client._packet_queue(_PUBACK, blob, 0, 0)  # paho internal: see above
