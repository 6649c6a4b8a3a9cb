"""Local stand-ins for the notifier's receivers, for tests and the bench (nothing real is called):
an HTTP server answering like WeCom's and DingTalk's robots and a webhook receiver, per path, and
an SMTP sink (aiosmtpd, a dev extra)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival, before any configured hang

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Behaviour:
    statuses: list[int] = field(default_factory=list)  # answered in turn; then 200
    hang: threading.Event | None = None  # held (at most 60 s) until set
    reply: dict[str, Any] = field(default_factory=lambda: {"errcode": 0, "errmsg": "ok"})


class LocalReceiver:
    """``ThreadingHTTPServer`` on 127.0.0.1, a free port; records every POST by path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: dict[str, list[Received]] = defaultdict(list)
        self._behaviour: dict[str, Behaviour] = defaultdict(Behaviour)
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                got = Received(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                               {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                status, hang, reply = receiver._arrive(got)
                if hang is not None:
                    hang.wait(60)
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (its timeout) while we hung

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)

    def _arrive(self, got: Received) -> tuple[int, threading.Event | None, dict[str, Any]]:
        with self._arrived:
            self._received[got.path].append(got)
            self._arrived.notify_all()
            b = self._behaviour[got.path]
            status = b.statuses.pop(0) if b.statuses else 200
            return status, b.hang, b.reply

    def start(self) -> LocalReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def behave(self, path: str, *, statuses: list[int] | None = None, hang: threading.Event | None = None,
               reply: dict[str, Any] | None = None) -> None:
        with self._lock:
            b = self._behaviour[path]
            b.statuses = list(statuses or [])
            b.hang = hang
            if reply is not None:
                b.reply = reply

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return list(self._received[path])

    def wait(self, path: str, count: int = 1, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._received[path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{path}: {len(self._received[path])} of {count} requests within {timeout} s")
                self._arrived.wait(left)
            return list(self._received[path])


@dataclass(frozen=True, slots=True)
class Mail:
    sender: str
    recipients: tuple[str, ...]
    content: bytes
    at: float


class SmtpSink:
    """aiosmtpd on 127.0.0.1: keeps every message (no TLS, no auth: ``security: none``)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller  # noqa: PLC0415 - a dev extra

        from safeguard.devservers import free_port  # noqa: PLC0415 - devservers loads psycopg; only the SMTP sink needs it

        self.mails: list[Mail] = []
        self._arrived = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's
                with sink._arrived:
                    sink.mails.append(Mail(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content,
                                           time.time()))
                    sink._arrived.notify_all()
                return "250 Message accepted for delivery"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def wait(self, count: int = 1, timeout: float = 20.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.mails) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.mails)} of {count} mails within {timeout} s")
                self._arrived.wait(left)
            return list(self.mails)
