"""A paho client that reads the broker's stream in large chunks.

paho 2.x reads every packet with three or more ``recv`` calls (the command byte, each byte
of the remaining length, then the body), and each call releases the GIL. In a process whose
other threads are busy (the ingest's workers), each release costs the network thread a wait
of up to ``sys.getswitchinterval()`` (5 ms) to get the GIL back: a convoy that made an ingest
lane's paho thread, not its worker, the bottleneck under load (py-spy: ``Client._sock_recv``
the largest self-time). :class:`BufferedSocket` serves those small reads from one ``recv`` of
up to 256 KiB, and :class:`BufferedClient` parses every whole packet already buffered before it
returns to ``select``: one system call per chunk instead of several per message.

Only the read side changes; the buffer is reported through ``pending()``, which paho already
asks of TLS sockets so that it never waits in ``select`` with data in hand.
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

CHUNK_BYTES = 256 * 1024
_PACKETS_PER_READ = 5_000  # then back to paho's loop: keepalive, writes, a stop request


class BufferedSocket:
    """Wraps a connected (TCP or TLS) socket; everything but ``recv`` and ``pending`` passes through."""

    __slots__ = ("_at", "_buffer", "_sock", "backlogged")

    def __init__(self, sock: socket.socket | Any) -> None:  # paho's SocketLike: a socket or TLS socket
        self._sock = sock
        self._buffer = b""
        self._at = 0
        # The last read filled a whole chunk: more was waiting, so the broker is ahead of us (it
        # holds a backlog for this session). Caught up, a read returns what arrived since the last.
        self.backlogged = False

    def recv(self, bufsize: int) -> bytes:
        if self._at >= len(self._buffer):
            data = self._sock.recv(max(bufsize, CHUNK_BYTES))  # BlockingIOError, TLS wants: as paho expects
            self.backlogged = len(data) >= CHUNK_BYTES
            if len(data) <= bufsize:
                return data  # all of it was asked for (or b"": the broker closed)
            self._buffer, self._at = data, 0
        start = self._at
        self._at = min(start + bufsize, len(self._buffer))
        return self._buffer[start:self._at]

    def buffered(self) -> int:
        """Bytes received and not yet handed to paho (ours, then the TLS layer's)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buffer) - self._at + (inner() if inner is not None else 0)

    pending = buffered  # the name paho's loop looks for

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """paho's client on a :class:`BufferedSocket` (TCP and TLS; websockets keep paho's own)."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else BufferedSocket(sock)

    @property
    def backlogged(self) -> bool:
        """The broker holds more for us than we have read (see ``BufferedSocket.backlogged``)."""
        sock = self._sock
        return isinstance(sock, BufferedSocket) and sock.backlogged

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(_PACKETS_PER_READ):
            sock = self._sock
            if rc != mqtt.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket) or not sock.buffered():
                break
            rc = super().loop_read(1)
        return rc
