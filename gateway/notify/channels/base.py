"""What every channel adapter shares: the message it is given, the outcome it returns, its interface."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx

Event = Literal["alert", "all_clear", "digest"]
Result = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery's content, rendered once (gateway/notify/render.py) for every kind of channel."""

    event: Event
    route: str
    step: int
    delivery: str  # the delivery's id(s): an idempotency key for receivers (a retry carries the same)
    alerts: tuple[dict[str, Any], ...]  # as the API shows them (gateway.store.alerts.alert_json)
    sites: dict[str, dict[str, Any]]  # id -> name, city, county, address
    title: str
    markdown: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    code: int | None = None  # HTTP status, or the SMTP reply code
    error: str | None = None
    latency_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result == "ok"


@dataclass(slots=True)
class Timer:
    started: float = field(default_factory=time.perf_counter)

    def ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


def redact_url(url: str) -> str:
    """A webhook URL's key or token is its secret: records and logs show scheme, host and path only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Channel(ABC):
    """One configured destination. ``send`` must return within the configured timeout and never raise
    for a receiver's failure (an Outcome says it); the notifier runs many sends at once, in threads."""

    type: ClassVar[str]

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s

    @property
    @abstractmethod
    def target(self) -> str:
        """Where it goes, without secrets (stored with every attempt)."""

    @abstractmethod
    def send(self, message: Message) -> Outcome: ...

    def close(self) -> None:  # noqa: B027 - optional
        pass


class HttpChannel(Channel):
    """A JSON POST with httpx: a timeout on every phase, one connection pool per channel."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(name, timeout_s)
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def post(self, url: str, body: bytes, headers: dict[str, str], *, errcode: bool = False) -> Outcome:
        """POST; with ``errcode`` the robot APIs' convention: HTTP 200 with ``errcode`` 0 is success."""
        timer = Timer()
        try:
            response = self._client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
        except httpx.TimeoutException as exc:
            return Outcome("timeout", None, f"timed out after {self.timeout_s:g} s ({type(exc).__name__})", timer.ms())
        except httpx.HTTPError as exc:
            return Outcome("error", None, f"{type(exc).__name__}: {exc}"[:500], timer.ms())
        latency = timer.ms()
        if not response.is_success:
            error = f"HTTP {response.status_code}: {response.text[:300]}"
            return Outcome("error", response.status_code, error, latency)
        if errcode:
            try:
                answer = response.json()
                code = answer.get("errcode", 0) if isinstance(answer, dict) else -1
            except ValueError:
                return Outcome("error", response.status_code, f"not JSON: {response.text[:300]}", latency)
            if code != 0:
                error = f"errcode {code}: {answer.get('errmsg', '')}"[:500]
                return Outcome("error", response.status_code, error, latency)
        return Outcome("ok", response.status_code, None, latency)
