"""DingTalk (钉钉) custom robot: ``POST <webhook URL>&timestamp=<ms>&sign=<sign>`` with
``{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}, "at": {...}}``.

With the robot's 加签 (signing) security setting, ``sign`` is
``urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")))``, ``timestamp`` in
milliseconds, within an hour of DingTalk's clock. Success: HTTP 200 with ``errcode`` 0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Literal
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.notify.channels.base import HttpChannel, Message, Outcome, redact_url

MAX_CHARS = 5000


class DingTalkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["dingtalk"]
    url: SecretStr  # https://oapi.dingtalk.com/robot/send?access_token=...
    secret: SecretStr | None = None  # the SEC... string of the 加签 setting (recommended)
    at_mobiles: tuple[str, ...] = ()
    at_all: bool = False
    timeout_s: float | None = Field(None, gt=0, le=120)


def sign(secret: str, timestamp_ms: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return quote_plus(base64.b64encode(mac.digest()))


def signed_url(url: str, secret: str | None, timestamp_ms: int) -> str:
    if secret is None:
        return url
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}timestamp={timestamp_ms}&sign={sign(secret, timestamp_ms)}"


def body_of(message: Message, at_mobiles: tuple[str, ...] = (), at_all: bool = False) -> bytes:
    text = message.markdown[:MAX_CHARS]
    if at_mobiles:  # DingTalk @-mentions only those whose number also appears in the text
        text += "\n\n" + " ".join(f"@{m}" for m in at_mobiles)
    payload = {"msgtype": "markdown", "markdown": {"title": message.title, "text": text},
               "at": {"atMobiles": list(at_mobiles), "isAtAll": at_all}}
    return json.dumps(payload, ensure_ascii=False).encode()


class DingTalkChannel(HttpChannel):
    type = "dingtalk"

    def __init__(self, name: str, config: DingTalkConfig, timeout_s: float) -> None:
        super().__init__(name, config.timeout_s or timeout_s)
        self._config = config

    @property
    def target(self) -> str:
        return redact_url(self._config.url.get_secret_value())

    def send(self, message: Message) -> Outcome:
        secret = self._config.secret.get_secret_value() if self._config.secret else None
        url = signed_url(self._config.url.get_secret_value(), secret, int(time.time() * 1000))
        return self.post(url, body_of(message, self._config.at_mobiles, self._config.at_all), {}, errcode=True)
