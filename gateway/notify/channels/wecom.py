"""WeCom (企业微信) group robot: ``POST <webhook URL>`` with ``{"msgtype": "markdown", "markdown":
{"content": ...}}``; the answer is HTTP 200 with ``errcode`` 0 on success.

The URL (``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...``) is shown when a robot is
added to a group; its ``key`` is the secret. Markdown content is at most 4096 bytes.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.notify.channels.base import HttpChannel, Message, Outcome, redact_url

MAX_BYTES = 4096


class WeComConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["wecom"]
    url: SecretStr  # the key is part of it
    mentioned: tuple[str, ...] = ()  # WeCom user ids to @ in the message (<@userid>)
    timeout_s: float | None = Field(None, gt=0, le=120)


def truncate_utf8(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "..."


def body_of(message: Message, mentioned: tuple[str, ...] = ()) -> bytes:
    content = message.markdown
    if mentioned:
        content += "\n" + " ".join(f"<@{user}>" for user in mentioned)
    payload = {"msgtype": "markdown", "markdown": {"content": truncate_utf8(content, MAX_BYTES)}}
    return json.dumps(payload, ensure_ascii=False).encode()


class WeComChannel(HttpChannel):
    type = "wecom"

    def __init__(self, name: str, config: WeComConfig, timeout_s: float) -> None:
        super().__init__(name, config.timeout_s or timeout_s)
        self._config = config

    @property
    def target(self) -> str:
        return redact_url(self._config.url.get_secret_value())

    def send(self, message: Message) -> Outcome:
        return self.post(self._config.url.get_secret_value(), body_of(message, self._config.mentioned), {},
                         errcode=True)
