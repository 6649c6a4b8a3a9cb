"""The notifier (issue 16) against local receivers only: a fire alarm published to the broker reaches
the local WeCom, DingTalk, webhook and e-mail receivers in the configured steps; acknowledging stops
the steps and resolving sends the all clear; a receiver answering 500 is retried and every attempt
recorded; a hanging receiver holds up no other; a notifier killed mid-delivery resumes without
losing or doubling a step; minor alerts go out in one digest; suppressed deliveries are recorded;
a failing channel raises notifier_failing.

No wall-clock thresholds: step delays are short configured values, and the checks are of order
(step 2 arrived at least its delay after the alert opened), never an upper bound.
"""

from __future__ import annotations

import base64
import contextlib
import email
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Settings
from gateway.notify.config import NotifyConfig
from gateway.notify.service import Notifier
from gateway.rules import engine
from gateway.rules.model import AlertKey, AlertKind, Raise
from gateway.runtime import Gateway
from gateway.store import alerts as alert_store
from gateway.store import notify as notify_store
from gateway.store.db import connect, from_epoch, lock_sites
from gateway.store.sites import purge_site
from safeguard.devservers import MosquittoServer
from safeguard.receivers import LocalReceiver, SmtpSink
from tests.support import Agent, Api, scalar, wait_for, wait_state

pytestmark = pytest.mark.integration

HOOK_SECRET = "webhook-secret-0123456789"
DING_SECRET = "SECdingtalk-secret-0123"
SITE = "inst-notify"
FAST = {"poll_interval_s": 0.05, "retry_backoff_s": 0.1, "retry_max_s": 0.5, "lease_margin_s": 0.5,
        "timeout_s": 2.0, "digest_interval_s": 1.0}


@pytest.fixture
def receiver() -> Iterator[LocalReceiver]:
    server = LocalReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def channels(receiver: LocalReceiver, smtp: SmtpSink | None = None) -> dict[str, Any]:
    made: dict[str, Any] = {
        "inst-wecom": {"type": "wecom", "url": receiver.url("/cgi-bin/webhook/send") + "?key=inst-key"},
        "county-ding": {"type": "dingtalk", "url": receiver.url("/robot/send") + "?access_token=county-token",
                        "secret": DING_SECRET},
        "city-hook": {"type": "webhook", "url": receiver.url("/hook"), "secret": HOOK_SECRET},
        "slow-hook": {"type": "webhook", "url": receiver.url("/slow"), "secret": HOOK_SECRET, "timeout_s": 2},
    }
    if smtp is not None:
        made["city-mail"] = {"type": "email", "host": "127.0.0.1", "port": smtp.port, "security": "none",
                             "sender": "safeguard@example.org", "to": ["duty@city.example.org"]}
    return made


def notify_config(receiver: LocalReceiver, smtp: SmtpSink | None = None, *, steps: list[dict[str, Any]],
                  **extra: Any) -> NotifyConfig:
    routes = [{"name": "xihu", "match": {"county": ["Xihu"]}, "steps": steps}]
    return NotifyConfig.model_validate({"channels": channels(receiver, smtp), "routes": routes, **FAST, **extra})


def register(database_url: str, site: str = SITE, county: str = "Xihu") -> None:
    with connect(database_url) as conn:
        conn.execute("INSERT INTO sites (id, name, city, county, address)"
                     " VALUES (%s, %s, 'Hangzhou', %s, 'Wensan Rd 1') ON CONFLICT (id) DO NOTHING",
                     (site, f"School {site}", county))
        conn.commit()


def raise_alerts(database_url: str, kind: AlertKind, devices: list[str], site: str = SITE) -> list[int]:
    """Alerts raised in one transaction: one time for all (one digest interval)."""
    with connect(database_url) as conn, conn.transaction():
        lock_sites(conn, [site])
        recorded = alert_store.persist(conn, [Raise(AlertKey(site, d, kind), {"state": "alarm"}) for d in devices],
                                       from_epoch(time.time()))
        return [int(r.alert["id"]) for r in recorded]


def raise_alert(database_url: str, kind: AlertKind, device: str, site: str = SITE) -> int:
    [alert_id] = raise_alerts(database_url, kind, [device], site)
    return alert_id


def operator(database_url: str, alert_id: int, step: str) -> None:
    decide = engine.acknowledge if step == "ack" else engine.resolve_by_hand
    with connect(database_url) as conn:
        alert_store.operator_step(conn, alert_id, decide, from_epoch(time.time()), "duty-officer", None)


def deliveries(database_url: str, alert_id: int) -> list[dict[str, Any]]:
    with connect(database_url) as conn:
        return notify_store.deliveries(conn, alert_id)


def delivery(database_url: str, alert_id: int, channel: str, event: str = "alert") -> dict[str, Any] | None:
    return next((d for d in deliveries(database_url, alert_id) if d["channel"] == channel and d["event"] == event),
                None)


def wait_delivery(database_url: str, alert_id: int, channel: str, state: str, event: str = "alert",
                  timeout: float = 20.0) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = delivery(database_url, alert_id, channel, event)
        return found if found and found["state"] == state else None

    return wait_for(probe, timeout, what=f"{event} delivery via {channel} {state}")


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Notifier]:
    notifier = Notifier(settings)
    notifier.start()
    try:
        yield notifier
    finally:
        notifier.stop()


def t(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def check_webhook(got: Any, event: str, alert_id: int) -> dict[str, Any]:
    timestamp = got.headers["x-safeguard-timestamp"]
    mac = hmac.new(HOOK_SECRET.encode(), timestamp.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-safeguard-signature"] == f"sha256={mac}"
    assert got.headers["x-safeguard-event"] == event
    body: dict[str, Any] = got.json()
    assert body["event"] == event
    assert body["alert"]["id"] == alert_id
    return body


def check_dingtalk(got: Any) -> dict[str, Any]:
    mac = hmac.new(DING_SECRET.encode(), f"{got.query['timestamp']}\n{DING_SECRET}".encode(), hashlib.sha256)
    assert got.query["sign"] == base64.b64encode(mac.digest()).decode()
    assert got.query["access_token"] == "county-token"
    body: dict[str, Any] = got.json()
    assert body["msgtype"] == "markdown"
    return body


# --------------------------------------------------------------------------- the headline


def test_a_published_fire_alarm_reaches_wecom_dingtalk_webhook_and_email_in_steps(
    database_url: str, mosquitto: MosquittoServer, receiver: LocalReceiver, smtp: SmtpSink, settings: Settings,
) -> None:
    steps = [{"after_s": 0, "channels": ["inst-wecom", "city-hook"]},
             {"after_s": 1.0, "channels": ["county-ding"]},
             {"after_s": 2.0, "channels": ["city-mail"]}]
    config = notify_config(receiver, smtp, steps=steps, language="en")
    with Gateway(settings.updated(notify=config)) as gw:
        assert gw.notifier is not None  # `safeguard serve` runs the notifier when routes are configured
        assert gw.ingest is not None
        assert gw.ingest.wait_connected(10)
        api = Api(gw.api_url)
        api.put_site(SITE, name="Sunshine School", city="Hangzhou", county="Xihu", cameras_required=0)
        agent = Agent(gw.settings.mqtt.url, SITE)
        try:
            agent.birth([{"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"}])
            agent.smoke("smoke-1", "alarm")
            alert = wait_for(lambda: api.alert(kind="fire_alarm", site=SITE), what="fire alarm")
            opened = t(alert["opened_at"])

            [wecom] = receiver.wait("/cgi-bin/webhook/send")
            assert wecom.query == {"key": "inst-key"}
            assert wecom.json()["msgtype"] == "markdown"
            assert "Fire alarm" in wecom.json()["markdown"]["content"]
            assert "Sunshine School" in wecom.json()["markdown"]["content"]
            [hook] = receiver.wait("/hook")
            body = check_webhook(hook, "alert", alert["id"])
            assert body["step"] == 0
            assert body["alert"]["kind"] == "fire_alarm"
            assert body["alert"]["state"] == "open"
            [ding] = receiver.wait("/robot/send")
            assert "Step 2" in check_dingtalk(ding)["markdown"]["text"]
            [mail] = smtp.wait(1)
            assert mail.recipients == ("duty@city.example.org",)
            assert email.message_from_bytes(mail.content)["Subject"].startswith("[CRITICAL] Fire alarm")

            # Each step came after its delay from the opening, in order (no upper bound asserted).
            assert ding.at >= opened + 1.0
            assert mail.at >= opened + 2.0
            assert max(wecom.at, hook.at) <= ding.at <= mail.at
            def all_sent() -> dict[str, Any] | None:  # the receivers may be quicker than the record
                answer = api.http.get(f"/api/v1/alerts/{alert['id']}/notifications")
                assert answer.status_code == 200, answer.text
                found = {d["channel"]: d for d in answer.json()["items"]}
                return found if len(found) == 4 and all(d["state"] == "sent" for d in found.values()) else None

            items = wait_for(all_sent, what="all four deliveries recorded as sent")
            assert {c: d["step"] for c, d in items.items()} == {
                "inst-wecom": 0, "city-hook": 0, "county-ding": 1, "city-mail": 2}
            sent_at = {c: t(d["attempts"][-1]["at"]) for c, d in items.items()}
            assert sent_at["county-ding"] >= opened + 1.0
            assert sent_at["city-mail"] >= opened + 2.0
            assert items["city-hook"]["attempts"][0]["response_code"] == 200
            assert items["city-hook"]["attempts"][0]["latency_ms"] is not None

            # Acknowledged, then the detector back to normal: resolved, and an all clear to all four.
            assert api.http.post(f"/api/v1/alerts/{alert['id']}/ack", json={"note": "on our way"}).status_code == 200
            agent.smoke("smoke-1", "normal")
            wait_state(api, alert["id"], "resolved")
            check_webhook(receiver.wait("/hook", 2)[1], "all_clear", alert["id"])
            assert "ALL CLEAR" in receiver.wait("/cgi-bin/webhook/send", 2)[1].json()["markdown"]["content"]
            check_dingtalk(receiver.wait("/robot/send", 2)[1])
            assert email.message_from_bytes(smtp.wait(2)[1].content)["Subject"].startswith("[ALL CLEAR]")
        finally:
            agent.close()


# --------------------------------------------------------------------------- steps, retries, hangs


def test_an_acknowledgement_stops_the_later_steps(database_url: str, receiver: LocalReceiver) -> None:
    register(database_url)
    config = notify_config(receiver, steps=[{"after_s": 0, "channels": ["city-hook"]},
                                            {"after_s": 30, "channels": ["county-ding"]}])
    with running(Settings(database_url=database_url, notify=config)):
        alert_id = raise_alert(database_url, AlertKind.FIRE_ALARM, "smoke-1")
        receiver.wait("/hook")
        assert delivery(database_url, alert_id, "county-ding")["state"] == "pending"  # type: ignore[index]
        operator(database_url, alert_id, "ack")
        cancelled = wait_delivery(database_url, alert_id, "county-ding", "cancelled")
    assert "acknowledged" in cancelled["note"]
    assert cancelled["attempts"] == []
    assert receiver.received("/robot/send") == []


def test_a_receiver_answering_500_is_retried_with_every_attempt_recorded(
    database_url: str, receiver: LocalReceiver
) -> None:
    register(database_url)
    receiver.behave("/hook", statuses=[500, 500])
    config = notify_config(receiver, steps=[{"after_s": 0, "channels": ["city-hook"]}])
    with running(Settings(database_url=database_url, notify=config)):
        alert_id = raise_alert(database_url, AlertKind.FIRE_ALARM, "smoke-1")
        sent = wait_delivery(database_url, alert_id, "city-hook", "sent")
    got = receiver.received("/hook")
    assert len(got) == 3
    assert {g.headers["x-safeguard-delivery"] for g in got} == {str(sent["id"])}  # one idempotency key
    assert [(a["attempt"], a["result"], a["response_code"]) for a in sent["attempts"]] == [
        (1, "error", 500), (2, "error", 500), (3, "ok", 200)]
    assert "HTTP 500" in sent["attempts"][0]["error"]
    assert sent["attempts"][0]["target"] == receiver.url("/hook")
    # Backoff: each retry after the one before.
    times = [t(a["at"]) for a in sent["attempts"]]
    assert times == sorted(times)


def test_a_hanging_receiver_does_not_hold_up_the_others(database_url: str, receiver: LocalReceiver) -> None:
    register(database_url)
    release = threading.Event()
    receiver.behave("/slow", hang=release)
    config = notify_config(receiver, steps=[{"after_s": 0, "channels": ["slow-hook", "city-hook", "inst-wecom"]}])
    try:
        with running(Settings(database_url=database_url, notify=config)):
            alert_id = raise_alert(database_url, AlertKind.FIRE_ALARM, "smoke-1")
            receiver.wait("/slow")  # held open by the receiver from here on
            wait_delivery(database_url, alert_id, "city-hook", "sent")
            wait_delivery(database_url, alert_id, "inst-wecom", "sent")
            slow = delivery(database_url, alert_id, "slow-hook")
            # Both others were delivered and recorded while the slow one was still being sent.
            assert slow is not None
            assert slow["attempts"][0]["result"] in ("sending", "timeout")
            # Its own timeout ends the slow attempt (recorded), then it is retried.
            wait_for(lambda: (delivery(database_url, alert_id, "slow-hook") or {}).get("attempts", [{}])[0]
                     .get("result") == "timeout", what="the slow attempt timed out")
            release.set()
            done = wait_delivery(database_url, alert_id, "slow-hook", "sent")
    finally:
        release.set()
    assert done["attempts"][0]["result"] == "timeout"
    assert done["attempts"][-1]["result"] == "ok"


def _notify_process(tmp_path: Path, database_url: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"database_url": database_url, "notify": config}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    return subprocess.Popen([sys.executable, "-m", "safeguard.cli", "notify", "--config", str(path)], env=env)


def test_a_notifier_killed_mid_delivery_resumes_without_losing_or_doubling_a_step(
    database_url: str, receiver: LocalReceiver, tmp_path: Path
) -> None:
    register(database_url)
    release = threading.Event()
    receiver.behave("/slow", hang=release)
    steps = [{"after_s": 0, "channels": ["city-hook"]}, {"after_s": 0.5, "channels": ["slow-hook"]}]
    raw = {"channels": channels(receiver), "routes": [{"name": "xihu", "match": {"county": ["Xihu"]}, "steps": steps}],
           **FAST}
    process = _notify_process(tmp_path, database_url, raw)
    try:
        alert_id = raise_alert(database_url, AlertKind.FIRE_ALARM, "smoke-1")
        receiver.wait("/hook")  # step 1 delivered ...
        wait_delivery(database_url, alert_id, "city-hook", "sent")
        receiver.wait("/slow", timeout=30)  # ... and step 2 under way, its receiver holding it
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert delivery(database_url, alert_id, "slow-hook")["state"] == "sending"  # type: ignore[index]
    release.set()
    config = NotifyConfig.model_validate(raw)
    with running(Settings(database_url=database_url, notify=config)):
        resumed = wait_delivery(database_url, alert_id, "slow-hook", "sent", timeout=60)  # once its lease ends
        # Something else planned meanwhile goes out as well: the planner resumed too.
        second = raise_alert(database_url, AlertKind.EXIT_BLOCKED, "exit-1")
        wait_delivery(database_url, second, "city-hook", "sent")
    assert [a["result"] for a in resumed["attempts"]] == ["interrupted", "ok"]
    assert len(receiver.received("/hook")) == 2  # step 1 of the first alert was not sent again; the second's
    assert scalar(database_url, "SELECT count(*) FROM notifications WHERE alert_id = %s", alert_id) == 2
    assert scalar(database_url, "SELECT count(*) FROM alert_history WHERE NOT notified") == 0
    deliveries_seen = [g.headers["x-safeguard-delivery"] for g in receiver.received("/slow")]
    assert deliveries_seen == [str(resumed["id"])] * 2  # the receiver can tell the retry by its key


# --------------------------------------------------------------------------- digest, suppression, health


def test_minor_alerts_go_out_in_one_digest(database_url: str, receiver: LocalReceiver) -> None:
    register(database_url)
    config = notify_config(receiver, steps=[{"after_s": 0, "channels": ["city-hook"]}], digest_interval_s=2.0)
    with contextlib.ExitStack() as stack:
        ids = raise_alerts(database_url, AlertKind.DETECTOR_FAULT, [f"smoke-{i}" for i in range(3)])
        stack.enter_context(running(Settings(database_url=database_url, notify=config)))
        [digest] = receiver.wait("/hook")
        for alert_id in ids:
            wait_delivery(database_url, alert_id, "city-hook", "sent", event="digest")
    body = digest.json()
    assert body["event"] == "digest"
    assert sorted(a["id"] for a in body["alerts"]) == sorted(ids)
    assert len(receiver.received("/hook")) == 1


def test_maintenance_suppresses_the_named_kinds_and_records_it(database_url: str, receiver: LocalReceiver) -> None:
    register(database_url)
    window = {"site": SITE, "kinds": ["detector_offline"], "start": "2020-01-01T00:00:00+08:00",
              "end": "2099-01-01T00:00:00+08:00", "note": "detector replacement"}
    config = notify_config(receiver, steps=[{"after_s": 0, "channels": ["city-hook"]}], maintenance=[window])
    with running(Settings(database_url=database_url, notify=config)):
        quiet = raise_alert(database_url, AlertKind.DETECTOR_OFFLINE, "smoke-1")
        fire = raise_alert(database_url, AlertKind.FIRE_ALARM, "smoke-2")
        wait_delivery(database_url, fire, "city-hook", "sent")
    suppressed = delivery(database_url, quiet, "city-hook")
    assert suppressed is not None
    assert suppressed["state"] == "suppressed"
    assert "detector replacement" in suppressed["note"]
    assert [g.json()["alert"]["id"] for g in receiver.received("/hook")] == [fire]  # planned in order: never sent


def test_a_failing_channel_raises_notifier_failing_until_it_recovers(
    database_url: str, receiver: LocalReceiver
) -> None:
    register(database_url)
    receiver.behave("/hook", statuses=[503] * 4)
    config = notify_config(receiver, steps=[{"after_s": 0, "channels": ["city-hook"]}], failing_after_s=0.2)
    with running(Settings(database_url=database_url, notify=config)):
        alert_id = raise_alert(database_url, AlertKind.FIRE_ALARM, "smoke-1")
        api_alert = wait_for(lambda: _open_failing(database_url), what="notifier_failing raised")
        wait_delivery(database_url, alert_id, "city-hook", "sent")  # the 5th attempt gets through
        wait_for(lambda: _open_failing(database_url) is None or None, what="notifier_failing resolved")
    assert api_alert["device"] == "city-hook"
    assert api_alert["severity"] == "minor"
    assert api_alert["site"] == SITE
    resolved = "SELECT count(*) FROM alerts WHERE kind = 'notifier_failing' AND state = 'resolved'"
    assert scalar(database_url, resolved) == 1


def _open_failing(database_url: str) -> dict[str, Any] | None:
    with connect(database_url) as conn:
        row = conn.execute(f"SELECT {alert_store.COLUMNS} FROM alerts WHERE kind = 'notifier_failing'"
                           " AND state <> 'resolved'").fetchone()
    return alert_store.alert_json(row) if row else None


def test_safeguard_notify_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"notify": {"channels": {}, "routes": [
        {"name": "r", "steps": [{"after_s": 0, "channels": ["brigade"]}]}]}}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    done = subprocess.run([sys.executable, "-m", "safeguard.cli", "notify", "--config", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2
    assert "notify" in done.stderr
    assert "unknown channel(s) ['brigade']" in done.stderr


def test_purging_a_site_takes_its_notifications_with_it(database_url: str, receiver: LocalReceiver) -> None:
    register(database_url)
    config = notify_config(receiver, steps=[{"after_s": 0, "channels": ["city-hook"]}])
    with running(Settings(database_url=database_url, notify=config)):
        alert_id = raise_alert(database_url, AlertKind.FIRE_ALARM, "smoke-1")
        wait_delivery(database_url, alert_id, "city-hook", "sent")
    with connect(database_url) as conn:
        deleted = purge_site(conn, SITE)
        conn.commit()
    assert deleted is not None
    assert deleted["notifications"] == 1
    assert scalar(database_url, "SELECT count(*) FROM notification_attempts") == 0
