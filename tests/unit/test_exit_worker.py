"""The camera thread hands frames to the exit's own thread (issue 14): it returns at once, a
frame not analysed yet is replaced by the newer one and counted as dropped."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.exit_worker import ExitWorker
from edge_agent.vision import ExitObservation
from protocol import ExitState, MessageType

REGION = [(50, 40), (110, 40), (110, 100), (50, 100)]
FRAME = np.zeros((120, 160, 3), np.uint8)


class SlowDetector:
    """Stands in for ExitBlockageDetector: each update waits until the test lets it go."""

    learnt_frame = None

    def __init__(self) -> None:
        self.seen: list[float] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def update(self, _frame: np.ndarray, ts: float) -> ExitObservation:
        self.seen.append(ts)
        self.entered.set()
        assert self.release.wait(10), "the test never released the detector"
        state = ExitState.BLOCKED if ts >= 1.0 else ExitState.CLEAR
        return ExitObservation(state=state, blocked_ratio=0.5 if ts >= 1.0 else 0.0,
                               blocked_since=ts if ts >= 1.0 else None)


def test_the_newest_frame_wins_and_the_replaced_ones_are_counted() -> None:
    seen: list[float] = []
    busy, release = threading.Event(), threading.Event()

    def slow(_frame: np.ndarray, ts: float) -> None:
        seen.append(ts)
        busy.set()
        assert release.wait(10)

    worker = ExitWorker("exit-1", slow)
    worker.start()
    try:
        worker.offer(FRAME, 0.0)
        assert busy.wait(5)
        started = time.monotonic()
        for ts in (1.0, 2.0, 3.0, 4.0):  # while 0.0 is being analysed
            worker.offer(FRAME, ts)
        assert time.monotonic() - started < 0.5, "offer must not wait for the analysis"
        release.set()
        assert worker.wait_idle(5)
    finally:
        worker.stop(timeout=5)
    assert seen == [0.0, 4.0]
    stats = worker.stats()
    assert (stats.offered, stats.analysed, stats.dropped, stats.errors) == (5, 2, 3, 0)
    assert not worker.running


def test_a_failing_analysis_is_counted_and_the_thread_carries_on() -> None:
    seen: list[float] = []

    def fails_once(_frame: np.ndarray, ts: float) -> None:
        seen.append(ts)
        if ts == 0.0:
            raise RuntimeError("boom")

    worker = ExitWorker("exit-1", fails_once)
    worker.start()
    try:
        worker.offer(FRAME, 0.0)
        assert worker.wait_idle(5)
        worker.offer(FRAME, 1.0)
        assert worker.wait_idle(5)
    finally:
        worker.stop(timeout=5)
    assert seen == [0.0, 1.0]
    assert worker.stats().errors == 1


def test_the_camera_callback_returns_while_a_slow_detector_works(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = AgentConfig.model_validate({
        "site": "s-1",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "cameras": [{"id": "cam-1", "source": 0}],
        "exits": [{"id": "exit-1", "camera": "cam-1", "region": REGION}],
    })
    agent = Agent(config)
    detector = SlowDetector()
    monkeypatch.setattr(agent.exits["exit-1"], "detector", detector)
    sent: list[tuple[str, MessageType, dict[str, Any]]] = []
    snapshots: list[str] = []
    monkeypatch.setattr(agent.publisher, "send",
                        lambda device, message_type, fields, kind=None: sent.append((device, message_type, fields)))
    monkeypatch.setattr(agent.publisher, "send_snapshot", lambda device, _jpeg: snapshots.append(device))
    worker = agent.workers["exit-1"]
    worker.start()  # the exits' threads only: no broker, no camera
    try:
        agent._frame("cam-1", FRAME, 0.0)
        assert detector.entered.wait(5)
        started = time.monotonic()
        for k in range(1, 6):  # 0.2 s apart: each is due at 5 fps
            agent._frame("cam-1", FRAME, k / 5)
        agent._frame("cam-2", FRAME, 1.2)  # another camera's frame is not this exit's
        assert time.monotonic() - started < 0.5, "the camera thread must not wait for the detector"
        detector.release.set()
        assert agent.wait_idle(5)
    finally:
        worker.stop(timeout=5)
    assert detector.seen == [0.0, 1.0], "the newest frame is the one analysed"
    assert agent.exit_stats()["exit-1"].dropped == 4
    assert [(d, t, f["state"]) for d, t, f in sent] == [("exit-1", MessageType.EXIT, "clear"),
                                                        ("exit-1", MessageType.EXIT, "blocked")]
    assert snapshots == ["exit-1"]
