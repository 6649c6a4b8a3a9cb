"""Provisional alerts, decided without the database (gateway/ingest/provisional.py, issue 15)."""

from __future__ import annotations

import json
from typing import Any

from gateway.ingest.batch import Inbound
from gateway.ingest.provisional import ProvisionalAlarms, provisional_alerts
from protocol import MessageType, alert_topic, device_topic

SITE = "site-p"


def smoke(device: str, state: str, seq: int = 1, site: str = SITE) -> Inbound:
    payload = {"ts": 1_700_000_000.0 + seq, "boot": "b1", "seq": seq, "state": state, "battery_pct": 90.0}
    return Inbound(device_topic(site, device, MessageType.SMOKE), json.dumps(payload).encode(), 1_700_000_100.0)


def exit_reading(device: str, state: str, seq: int = 1, site: str = SITE) -> Inbound:
    payload = {"ts": 1_700_000_000.0 + seq, "boot": "b1", "seq": seq, "state": state, "blocked_ratio": 0.5}
    return Inbound(device_topic(site, device, MessageType.EXIT), json.dumps(payload).encode(), 1_700_000_100.0)


def test_a_smoke_alarm_is_a_provisional_fire_alarm_keyed_like_the_stored_one() -> None:
    [alert] = provisional_alerts([smoke("smoke-1", "normal", 1), smoke("smoke-1", "alarm", 2),
                                  smoke("smoke-1", "alarm", 3)])
    assert alert["provisional"] is True
    assert alert["id"] is None
    assert alert["key"] == f"{SITE}/smoke-1/fire_alarm"
    assert (alert["site"], alert["device"], alert["kind"], alert["severity"], alert["state"]) == (
        SITE, "smoke-1", "fire_alarm", "critical", "open")
    assert (alert["detail"]["boot"], alert["detail"]["seq"]) == ("b1", 2)  # the first alarm of the batch
    assert alert["opened_at"] == "2023-11-14T22:13:22Z"


def test_nothing_else_is_provisional() -> None:
    batch = [smoke("smoke-1", "normal"), smoke("smoke-2", "fault"), exit_reading("exit-1", "blocked"),
             Inbound(device_topic(SITE, "smoke-3", MessageType.SMOKE), b"{not json", 0.0),
             Inbound("sg/v1/alerts/x", b"{}", 0.0)]
    assert provisional_alerts(batch) == []


def test_an_exit_blocked_with_an_alarm_in_the_batch_is_the_compound_alert_too() -> None:
    alerts = provisional_alerts([exit_reading("exit-2", "blocked"), smoke("smoke-1", "alarm"),
                                 exit_reading("exit-1", "blocked"), exit_reading("exit-9", "blocked", site="other")])
    keys = [a["key"] for a in alerts]
    assert keys == [f"{SITE}/smoke-1/fire_alarm", f"{SITE}//fire_alarm_exit_blocked"]
    assert alerts[1]["device"] is None
    assert alerts[1]["detail"]["exits"] == ["exit-1", "exit-2"]
    assert alerts[1]["detail"]["detectors"] == ["smoke-1"]


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.up = True

    def publish(self, topic: str, payload: str) -> bool:
        if self.up:
            self.sent.append((topic, json.loads(payload)))
        return self.up


def test_published_once_per_key_however_often_the_batch_is_retried() -> None:
    broker = Broker()
    alarms = ProvisionalAlarms(broker.publish)
    batch = [smoke("smoke-1", "alarm"), smoke("smoke-2", "alarm")]
    assert alarms.announce(batch) == 2
    assert alarms.announce(batch) == 0
    assert alarms.announce(batch) == 0
    topic = alert_topic(SITE)
    assert [(t, a["device"]) for t, a in broker.sent] == [(topic, "smoke-1"), (topic, "smoke-2")]
    # Another batch (the one before was stored, so the database came back in between): new alarms.
    assert alarms.announce([smoke("smoke-1", "alarm", 9)]) == 1


def test_a_broker_away_too_is_tried_again_at_the_next_retry() -> None:
    broker = Broker()
    broker.up = False
    alarms = ProvisionalAlarms(broker.publish)
    batch = [smoke("smoke-1", "alarm")]
    assert alarms.announce(batch) == 0
    broker.up = True
    assert alarms.announce(batch) == 1
    assert alarms.announce(batch) == 0
