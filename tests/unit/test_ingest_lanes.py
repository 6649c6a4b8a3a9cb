"""The alarm lane's hand-off: what may raise an alert is taken before routine readings."""

from __future__ import annotations

import json
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest

from gateway import metrics
from gateway.config import Settings
from gateway.ingest.service import Lane, ReaderFirst, _LaneWorker, lane_plans


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


def test_an_alarm_behind_normal_readings_goes_to_the_urgent_writer_alone(alarm_lane: _LaneWorker) -> None:
    for mid in range(1, 6):
        alarm_lane._on_message(cast(Any, _NoAck()), None, _message(mid, f"sg/v1/s/smoke-{mid}/smoke", state="normal"))
    alarm_lane._on_message(cast(Any, _NoAck()), None, _message(9, "sg/v1/s/smoke-9/smoke", state="alarm"))
    alarm_lane._on_message(cast(Any, _NoAck()), None, _message(10, "sg/v1/s/exit-1/exit", state="clear"))
    assert alarm_lane._urgent is not None
    assert alarm_lane._urgent.get_nowait().mid == 9
    assert alarm_lane._urgent.empty()
    assert [m.mid for m in alarm_lane._next_batch()] == [1, 2, 3, 4, 5, 10]


def test_an_alarm_takes_a_slot_past_a_full_hand_off(alarm_lane: _LaneWorker) -> None:
    """Routine readings fill every slot; the alarm behind them is still handed off, not waited for."""
    limit = alarm_lane._handoff.limit
    for _ in range(limit):
        assert alarm_lane._handoff.try_take()
    alarm_lane._on_message(cast(Any, _NoAck()), None, _message(9, "sg/v1/s/smoke-9/smoke", state="alarm"))
    assert alarm_lane._urgent is not None
    assert alarm_lane._urgent.get_nowait().mid == 9
    assert alarm_lane._handoff.held == limit + 1
    assert not alarm_lane._handoff.try_take()  # a routine one finds no slot: set aside, or waited for


def test_routine_writers_step_aside_only_while_the_reader_reports_a_backlog() -> None:
    first = ReaderFirst()
    stepped = metrics.READER_FIRST._value.get()
    first.wait_turn()
    assert metrics.READER_FIRST._value.get() == stepped  # nothing reported: no waiting
    first.reader(behind=True)
    first.wait_turn()
    assert metrics.READER_FIRST._value.get() == stepped + 1
    first.reader(behind=False)
    first.wait_turn()
    assert metrics.READER_FIRST._value.get() == stepped + 1
    first.reader(behind=True)
    first._behind_at -= ReaderFirst.MAX_WAIT_S  # a backlog last reported long ago: the socket went quiet
    first.wait_turn()
    assert metrics.READER_FIRST._value.get() == stepped + 1


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
    assert alarm_lane._urgent is not None
    assert alarm_lane._urgent.qsize() == int(urgent)


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
