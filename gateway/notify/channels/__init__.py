"""Channel adapters, one file each, behind :class:`~gateway.notify.channels.base.Channel`.

Adding one (an SMS gateway, say): a file here with a pydantic config class whose ``type`` is a
``Literal["sms"]`` and a ``Channel`` subclass whose ``send`` returns an ``Outcome``; then the
config class in ``ChannelConfig`` (gateway/notify/config.py) and the pair in ``ADAPTERS`` below.
"""

from __future__ import annotations

from typing import Any

from gateway.notify.channels.base import Channel
from gateway.notify.channels.dingtalk import DingTalkChannel
from gateway.notify.channels.email import EmailChannel
from gateway.notify.channels.webhook import WebhookChannel
from gateway.notify.channels.wecom import WeComChannel

ADAPTERS: dict[str, Any] = {
    "webhook": WebhookChannel,
    "wecom": WeComChannel,
    "dingtalk": DingTalkChannel,
    "email": EmailChannel,
}


def build_channel(name: str, config: Any, timeout_s: float) -> Channel:
    channel: Channel = ADAPTERS[config.type](name, config, timeout_s)
    return channel
