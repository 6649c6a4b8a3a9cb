"""A generic signed webhook: the alert as the API shows it, POSTed as JSON.

Headers (docs/api.md, "Notification webhooks"): ``X-Safeguard-Event`` (alert, all_clear, digest),
``X-Safeguard-Delivery`` (the same on a retry), ``X-Safeguard-Timestamp`` (Unix seconds) and
``X-Safeguard-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``. A receiver
recomputes the signature and refuses a timestamp far from its clock (a replayed request).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.notify.channels.base import HttpChannel, Message, Outcome, redact_url


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr = Field(min_length=16)
    timeout_s: float | None = Field(None, gt=0, le=120)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def body_of(message: Message) -> bytes:
    payload: dict[str, object] = {"event": message.event, "route": message.route, "step": message.step,
                                  "delivery": message.delivery}
    if message.event == "digest":
        payload["alerts"] = list(message.alerts)
    else:
        payload["alert"] = message.alerts[0]
        payload["site"] = message.sites.get(str(message.alerts[0]["site"]))
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class WebhookChannel(HttpChannel):
    type = "webhook"

    def __init__(self, name: str, config: WebhookConfig, timeout_s: float) -> None:
        super().__init__(name, config.timeout_s or timeout_s)
        self._config = config

    @property
    def target(self) -> str:
        return redact_url(self._config.url)

    def send(self, message: Message) -> Outcome:
        body = body_of(message)
        timestamp = str(int(time.time()))
        headers = {
            "X-Safeguard-Event": message.event,
            "X-Safeguard-Delivery": message.delivery,
            "X-Safeguard-Timestamp": timestamp,
            "X-Safeguard-Signature": signature(self._config.secret.get_secret_value(), timestamp, body),
        }
        return self.post(self._config.url, body, headers)
