"""The alarm lane's hand-off: what may raise an alert is taken before routine readings."""

from __future__ import annotations

import json
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest

from gateway.config import Settings
from gateway.ingest.service import Lane, _LaneWorker, lane_plans


class _NoAck:
    def ack(self, _mid: int, _qos: int) -> None:
        raise AssertionError("the alarm lane acknowledges only after a commit")


def _message(mid: int, topic: str, **payload: Any) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(mid, topic.encode())
    message.payload = json.dumps({"ts": 1.0, "boot": "b", "seq": mid, **payload}).encode()
    message.qos = 1
    return message


@pytest.fixture
def alarm_lane() -> _LaneWorker:
    settings = Settings(alarm_batch_size=100, alarm_batch_interval_s=0.01)
    plan = next(p for p in lane_plans(settings) if p.lane is Lane.ALARM)
    return _LaneWorker(settings, cast(Any, None), plan)


def test_an_alarm_behind_normal_readings_is_taken_first_and_alone(alarm_lane: _LaneWorker) -> None:
    for mid in range(1, 6):
        alarm_lane._on_message(cast(Any, _NoAck()), None, _message(mid, f"sg/v1/s/smoke-{mid}/smoke", state="normal"))
    alarm_lane._on_message(cast(Any, _NoAck()), None, _message(9, "sg/v1/s/smoke-9/smoke", state="alarm"))
    alarm_lane._on_message(cast(Any, _NoAck()), None, _message(10, "sg/v1/s/exit-1/exit", state="clear"))
    first = alarm_lane._next_batch()
    assert [m.mid for m in first] == [9]
    rest = alarm_lane._next_batch()
    assert [m.mid for m in rest] == [1, 2, 3, 4, 5, 10]


@pytest.mark.parametrize(("topic", "payload", "urgent"), [
    ("sg/v1/s/d/smoke", {"state": "alarm"}, True),
    ("sg/v1/s/d/smoke", {"state": "fault"}, True),
    ("sg/v1/s/d/exit", {"state": "blocked"}, True),
    ("sg/v1/s/agent/status", {"online": False}, True),
    ("sg/v1/s/d/smoke", {"state": "normal"}, False),
    ("sg/v1/s/d/exit", {"state": "clear"}, False),
])
def test_urgent_or_routine(alarm_lane: _LaneWorker, topic: str, payload: dict[str, Any], urgent: bool) -> None:
    alarm_lane._on_message(cast(Any, _NoAck()), None, _message(1, topic, **payload))
    assert bool(alarm_lane._urgent) is urgent


def test_every_worker_and_lane_has_its_own_stable_session() -> None:
    settings = Settings(mqtt_shared_group="gateway")
    ids = [p.client_id for w in ("h-0", "h-1") for p in lane_plans(settings, w)]
    assert len(set(ids)) == 4
    assert ids == [p.client_id for w in ("h-0", "h-1") for p in lane_plans(settings, w)]  # same again


def test_a_process_may_run_one_lane() -> None:
    assert [p.lane for p in lane_plans(Settings(ingest_lanes=frozenset({"alarm"})))] == [Lane.ALARM]
    assert [p.lane for p in lane_plans(Settings(ingest_lanes=frozenset({"routine"})))] == [Lane.ROUTINE]
    with pytest.raises(ValueError, match="at least one"):
        Settings(ingest_lanes=frozenset())
