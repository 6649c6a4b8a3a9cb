"""Each channel's wire format, against a local receiver: the webhook's signature, WeCom's and
DingTalk's documented markdown bodies and DingTalk's signed URL, SMTP plain + HTML; errcode and
HTTP failures and a timeout come back as outcomes, never as exceptions."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from email.message import Message as EmailMessage
from typing import Any

import pytest

from gateway.notify.channels.dingtalk import DingTalkChannel, DingTalkConfig
from gateway.notify.channels.email import EmailChannel, EmailConfig
from gateway.notify.channels.webhook import WebhookChannel, WebhookConfig, signature
from gateway.notify.channels.wecom import MAX_BYTES, WeComChannel, WeComConfig
from gateway.notify.render import render
from safeguard.receivers import LocalReceiver, SmtpSink

ALERT: dict[str, Any] = {
    "id": 42, "site": "inst-001", "device": "smoke-1", "kind": "fire_alarm", "severity": "critical", "state": "open",
    "opened_at": "2026-12-01T12:00:00Z", "updated_at": "2026-12-01T12:00:00Z", "acknowledged_at": None,
    "acknowledged_by": None, "resolved_at": None, "resolved_by": None, "count": 1, "detail": {"battery_pct": 90},
}
SITES = {"inst-001": {"id": "inst-001", "name": "阳光培训学校", "city": "杭州", "county": "西湖区",
                      "address": "文三路 1 号"}}


def message(event: str = "alert", step: int = 0, language: str = "zh-CN") -> Any:
    return render(event, route="xihu", step=step, delivery="17", alerts=[ALERT], sites=SITES,  # type: ignore[arg-type]
                  language=language, after_s=60.0 if step else 0.0, console_url="https://sg.example.org")


@pytest.fixture
def receiver() -> Iterator[LocalReceiver]:
    server = LocalReceiver().start()
    yield server
    server.stop()


def test_webhook_posts_the_alert_json_signed_over_timestamp_and_body(receiver: LocalReceiver) -> None:
    secret = "0123456789abcdef-secret"
    channel = WebhookChannel("hook", WebhookConfig(type="webhook", url=receiver.url("/hook"), secret=secret), 5)
    outcome = channel.send(message())
    assert outcome.ok, outcome
    assert outcome.code == 200
    [got] = receiver.received("/hook")
    body = got.json()
    assert body["event"] == "alert"
    assert body["step"] == 0
    assert body["delivery"] == "17"
    assert body["alert"] == ALERT  # exactly the API's alert JSON
    assert body["site"]["name"] == "阳光培训学校"
    timestamp = got.headers["x-safeguard-timestamp"]
    assert abs(int(timestamp) - time.time()) < 3600
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-safeguard-signature"] == expected == signature(secret, timestamp, got.body)
    assert got.headers["x-safeguard-delivery"] == "17"
    assert channel.target == receiver.url("/hook")


def test_wecom_gets_markdown_in_its_documented_shape_and_errcode_counts(receiver: LocalReceiver) -> None:
    url = receiver.url("/cgi-bin/webhook/send") + "?key=the-robot-key"
    channel = WeComChannel("wecom", WeComConfig(type="wecom", url=url, mentioned=("zhangsan",)), 5)
    assert channel.send(message()).ok
    [got] = receiver.received("/cgi-bin/webhook/send")
    assert got.query == {"key": "the-robot-key"}
    body = got.json()
    assert set(body) == {"msgtype", "markdown"}
    assert body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert "火警" in content
    assert "阳光培训学校" in content
    assert "<@zhangsan>" in content
    assert len(content.encode()) <= MAX_BYTES
    assert "the-robot-key" not in channel.target  # the key is a secret: never recorded
    receiver.behave("/cgi-bin/webhook/send", reply={"errcode": 93000, "errmsg": "invalid webhook url"})
    refused = channel.send(message())
    assert refused.result == "error"
    assert refused.code == 200
    assert "93000" in (refused.error or "")


def test_dingtalk_signs_its_url_and_posts_markdown_with_a_title(receiver: LocalReceiver) -> None:
    secret = "SEC0123456789abcdef"
    url = receiver.url("/robot/send") + "?access_token=tok"
    channel = DingTalkChannel("ding", DingTalkConfig(type="dingtalk", url=url, secret=secret,
                                                     at_mobiles=("13800000000",)), 5)
    assert channel.send(message(step=1)).ok
    [got] = receiver.received("/robot/send")
    assert got.query["access_token"] == "tok"
    timestamp = got.query["timestamp"]
    assert abs(int(timestamp) / 1000 - time.time()) < 3600  # milliseconds
    # DingTalk's documented signature: base64(HMAC-SHA256(secret, "<timestamp>\n<secret>")), URL-encoded
    # (parse_qs decoded it again).
    mac = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    assert got.query["sign"] == base64.b64encode(mac).decode()
    body = got.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"].startswith("【紧急】火警")
    assert "第 2 级通知" in body["markdown"]["text"]
    assert "@13800000000" in body["markdown"]["text"]
    assert body["at"] == {"atMobiles": ["13800000000"], "isAtAll": False}


def test_http_failures_and_timeouts_are_outcomes(receiver: LocalReceiver) -> None:
    hook = WebhookConfig(type="webhook", url=receiver.url("/hook"), secret="0123456789abcdef")
    receiver.behave("/hook", statuses=[500])
    failed = WebhookChannel("hook", hook, 5).send(message())
    assert failed.result == "error"
    assert failed.code == 500
    release = threading.Event()
    receiver.behave("/hook", hang=release)
    try:
        slow = WebhookChannel("hook", hook, 0.3).send(message())
    finally:
        release.set()
    assert slow.result == "timeout", slow
    assert slow.code is None
    closed = WebhookChannel("hook", WebhookConfig(type="webhook", url="http://127.0.0.1:9/x",
                                                  secret="0123456789abcdef"), 2).send(message())
    assert closed.result == "error"
    assert closed.error


def test_email_sends_plain_and_html_to_the_configured_addresses() -> None:
    sink = SmtpSink().start()
    try:
        config = EmailConfig(type="email", host="127.0.0.1", port=sink.port, security="none",
                             sender="safeguard@example.org", to=("duty@example.org", "chief@example.org"))
        outcome = EmailChannel("mail", config, 5).send(message("all_clear", language="en"))
        assert outcome.ok
        assert outcome.code == 250
        [mail] = sink.wait(1)
    finally:
        sink.stop()
    assert mail.recipients == ("duty@example.org", "chief@example.org")
    parsed: EmailMessage = email.message_from_bytes(mail.content)
    assert parsed["Subject"].startswith("[ALL CLEAR] Fire alarm")
    assert parsed["X-Safeguard-Delivery"] == "17"
    types = [part.get_content_type() for part in parsed.walk()]
    assert "text/plain" in types
    assert "text/html" in types
