"""protocol.mqtt_socket: paho's small reads served from one large recv (pure socket logic)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from protocol.mqtt_socket import CHUNK_BYTES, BufferedSocket


class _Counting:
    """A socket stand-in that counts recv calls on the real socket under it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, bufsize: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(bufsize)

    def fileno(self) -> int:
        return self.sock.fileno()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_small_reads_come_from_one_recv(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    counting = _Counting(ours)
    buffered = BufferedSocket(counting)
    theirs.sendall(b"\x30\x05hello\x30\x02hi")
    got = [buffered.recv(1), buffered.recv(1), buffered.recv(5), buffered.recv(1), buffered.recv(1), buffered.recv(2)]
    assert got == [b"\x30", b"\x05", b"hello", b"\x30", b"\x02", b"hi"]
    assert counting.recvs == 1
    assert buffered.buffered() == 0


def test_a_read_larger_than_the_buffer_returns_what_is_buffered_first(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    buffered = BufferedSocket(ours)
    theirs.sendall(b"abcdef")
    assert buffered.recv(2) == b"ab"
    assert buffered.pending() == 4  # paho skips select while this is above 0
    assert buffered.recv(100) == b"cdef"  # a short read, as recv may give: paho asks again for the rest
    theirs.sendall(b"gh")
    assert buffered.recv(100) == b"gh"


def test_nothing_to_read_raises_as_a_non_blocking_socket_does(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    with pytest.raises(BlockingIOError):
        BufferedSocket(ours).recv(1)


def test_the_peer_closing_reads_as_empty(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    buffered = BufferedSocket(ours)
    theirs.sendall(b"x")
    theirs.close()
    assert buffered.recv(1) == b"x"
    assert buffered.recv(1) == b""


def test_a_large_body_arrives_whole_across_chunks(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ours.setblocking(True)
    buffered = BufferedSocket(ours)
    body = bytes(range(256)) * (3 * CHUNK_BYTES // 256)
    sender = threading.Thread(target=theirs.sendall, args=(body,))  # the kernel holds less than this
    sender.start()
    received = bytearray()
    while len(received) < len(body):
        received += buffered.recv(len(body) - len(received))
    sender.join()
    assert bytes(received) == body


def test_everything_else_passes_through(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    buffered = BufferedSocket(ours)
    assert buffered.fileno() == ours.fileno()
    assert buffered.send(b"y") == 1



class _Waiting:
    """A socket stand-in with ``waiting`` bytes in its receive buffer (what the broker sent ahead)."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting

    def recv(self, bufsize: int) -> bytes:
        if not self.waiting:
            raise BlockingIOError
        n = min(bufsize, self.waiting)
        self.waiting -= n
        return b"x" * n


def test_a_read_that_fills_a_whole_chunk_reports_a_backlog() -> None:
    """More waiting than one chunk: the broker is ahead of us; a short read: caught up."""
    stream = _Waiting(2 * CHUNK_BYTES + 100)
    buffered = BufferedSocket(stream)
    buffered.recv(1)
    assert buffered.backlogged
    while stream.waiting or buffered.buffered():
        buffered.recv(4096)
    assert not buffered.backlogged  # the last read took the 100 bytes left: caught up
    stream.waiting = 50
    buffered.recv(1)
    assert not buffered.backlogged
