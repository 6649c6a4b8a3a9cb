"""MQTT connection settings shared by every client of the contract (gateway, agent, simulators).

Brokers differ: Mosquitto wants MQTT 5 with a large Receive Maximum for batched
acknowledgement (DESIGN section 2), while the demo's amqtt broker speaks MQTT 3.1.1
only. The protocol version is therefore a setting of every client.
"""

from __future__ import annotations

import ssl
import struct
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.mqtt_socket import BufferedClient


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
    cert_file: str | None = None  # mqtts: a client certificate (PEM), for a broker that requires one
    key_file: str | None = None  # its private key (default: in cert_file)

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
    buffered: bool = True,
) -> mqtt.Client:
    """A paho 2.x client configured for ``endpoint`` (not yet connected).

    ``buffered``: read the broker's stream in large chunks (``protocol.mqtt_socket``); off only
    where bare paho is the point (the benches' peer).
    """
    protocol = mqtt.MQTTv5 if version is MqttVersion.V5 else mqtt.MQTTv311
    client = (BufferedClient if buffered else mqtt.Client)(
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
        context = ssl.create_default_context(cafile=endpoint.ca_file)
        if endpoint.cert_file:
            context.load_cert_chain(endpoint.cert_file, endpoint.key_file)
        client.tls_set_context(context)
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


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached, or refused us (the message says which, and why)."""


class BrokerUnreachable(BrokerUnavailable):
    """No TCP connection (nothing listens there, a wrong host, a firewall)."""


class BrokerRefused(BrokerUnavailable):
    """The broker answered the CONNECT with a failure (``reason``: its reason code's name)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_PROBE_ORDER = (MqttVersion.V5, MqttVersion.V311)


def connect_and_wait(client: mqtt.Client, endpoint: MqttEndpoint, *, timeout: float = 10.0,
                     keepalive: int = 30) -> None:
    """Connect ``client``, start its network thread and wait for the broker's answer.

    paho's ``connect()`` returns once TCP is up and queues everything published meanwhile, so a
    tool that does not wait would report messages "published" to a broker that then refuses
    the session. Raises :class:`BrokerUnavailable` with the reason; the client is stopped then.
    The client's own ``on_connect`` / ``on_disconnect`` still run (they are chained, then put back).
    """
    answered = threading.Event()
    outcome: list[BrokerUnavailable | None] = []
    own_connect: Any = client.on_connect  # paho types them as a union of every callback version
    own_disconnect: Any = client.on_disconnect

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        failed = getattr(reason, "is_failure", False)
        outcome.append(BrokerRefused(f"MQTT broker at {endpoint} refused the connection: {reason}", str(reason))
                       if failed else None)
        answered.set()
        if own_connect is not None:
            own_connect(c, userdata, flags, reason, props)

    def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not answered.is_set():
            outcome.append(BrokerUnavailable(
                f"MQTT broker at {endpoint} closed the connection before answering ({reason})"))
            answered.set()
        if own_disconnect is not None:
            own_disconnect(c, userdata, flags, reason, props)

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=keepalive)
    except (OSError, ValueError) as exc:
        raise BrokerUnreachable(f"cannot reach the MQTT broker at {endpoint}: {exc}") from None
    client.loop_start()
    error = outcome[0] if answered.wait(timeout) else BrokerUnavailable(
        f"MQTT broker at {endpoint}: no answer within {timeout:g} s")
    client.on_connect, client.on_disconnect = own_connect, own_disconnect
    if error is not None:
        client.loop_stop()
        client.disconnect()
        raise error


def negotiate_version(endpoint: MqttEndpoint, *, timeout: float = 5.0) -> MqttVersion:
    """The protocol version the broker speaks: MQTT 5 if it accepts it, else 3.1.1.

    A 3.1.1-only broker answers a version-5 CONNECT with "unacceptable protocol version" or
    (amqtt) by closing the connection; both are taken as "try 3.1.1". Any other refusal (bad
    credentials, not authorised) is the answer, raised as :class:`BrokerRefused`; no broker at
    all as :class:`BrokerUnreachable`.
    """
    last: BrokerUnavailable | None = None
    for version in _PROBE_ORDER:
        probe = new_client(endpoint, f"safeguard-probe-{uuid.uuid4().hex[:12]}", version)
        try:
            connect_and_wait(probe, endpoint, timeout=timeout)
        except BrokerUnreachable:
            raise
        except BrokerRefused as exc:
            if "protocol version" not in exc.reason.lower():
                raise
            last = exc
            continue
        except BrokerUnavailable as exc:
            last = exc
            continue
        probe.disconnect()
        probe.loop_stop()
        return version
    assert last is not None
    raise last
