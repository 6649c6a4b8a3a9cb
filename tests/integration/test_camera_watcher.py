"""Camera watcher on real video files through cv2.VideoCapture (issue 3, points 2 and 6).

Each test writes a small clip to ``tmp_path`` (a synthetic exit-camera clip from
``simulators.video``, or a frozen or black clip written with ``cv2.VideoWriter``), watches it
with a 0.5 s heartbeat and short thresholds, and waits for the heartbeat it must give. Every
heartbeat is checked against the wire contract's model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.sources.camera import CameraWatcher, SourceKind, _redact, source_kind
from edge_agent.vision.stream_health import StreamHealth
from protocol.messages import Heartbeat, StreamState
from simulators.video import main as write_clips
from tests.support import wait_for

pytestmark = pytest.mark.integration

HEARTBEAT_S = 0.5
W, H = 160, 120


class Heartbeats:
    """The ``report`` callback: records every heartbeat, checked against the contract."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, str, dict[str, Any]]] = []

    def __call__(self, camera_id: str, fields: dict[str, Any]) -> None:
        assert set(fields) == {"stream", "fps", "last_frame_ts"}
        # As the publisher does: validate the JSON that would go on the wire.
        Heartbeat.model_validate_json(json.dumps({"ts": time.time(), "boot": "testboot", "seq": 0, **fields}))
        with self._lock:
            self.items.append((time.monotonic(), camera_id, dict(fields)))

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fields for _t, _c, fields in self.items]

    def streams(self) -> list[str]:
        return [h["stream"] for h in self.all()]

    def latest(self, stream: StreamState) -> dict[str, Any] | None:
        found = [h for h in self.all() if h["stream"] == stream.value]
        return found[-1] if found else None


@contextmanager
def watching(source: str | int, health: StreamHealth | None = None, **kwargs: Any
             ) -> Iterator[tuple[CameraWatcher, Heartbeats]]:
    beats = Heartbeats()
    watcher = CameraWatcher("cam-1", source, heartbeat_s=HEARTBEAT_S, report=beats,
                            health=health or StreamHealth(frozen_after_s=1.0, lost_after_s=0.5, dark_after_s=0.5),
                            backoff_min_s=0.1, backoff_max_s=0.4, **kwargs)
    watcher.start()
    try:
        yield watcher, beats
    finally:
        watcher.stop()
    assert not watcher.running


def _write(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic empty corridor (sensor noise, faint daylight drift), small: a quiet scene."""
    outdir = tmp_path_factory.mktemp("clips")
    assert write_clips([str(outdir), "--only", "empty_corridor", "--width", str(W), "--height", str(H),
                        "--jobs", "1"]) == 0
    return outdir / "empty_corridor.mp4"


@pytest.fixture
def frozen_clip(tmp_path: Path) -> Path:
    """One textured picture repeated: MPEG-4 re-encodes it, so the decodings differ slightly
    within each group of pictures, as from an encoder that froze on its input."""
    rng = np.random.default_rng(0)
    still = cv2.GaussianBlur(np.clip(rng.normal(120, 40, (H, W, 3)), 0, 255).astype(np.uint8), (0, 0), 1.5)
    return _write(tmp_path / "frozen.mp4", [still] * 30)


@pytest.fixture
def black_clip(tmp_path: Path) -> Path:
    return _write(tmp_path / "black.mp4", [np.zeros((H, W, 3), np.uint8)] * 20)


def test_video_file_gives_ok_heartbeats_with_fps(live_clip: Path) -> None:
    frames: list[tuple[str, tuple[int, ...], float]] = []
    lock = threading.Lock()

    def sink(camera_id: str, frame: np.ndarray, ts: float) -> None:
        with lock:
            frames.append((camera_id, frame.shape, ts))

    with watching(str(live_clip), frame_sink=sink) as (watcher, beats):
        ok = wait_for(lambda: (h := beats.latest(StreamState.OK)) and h["fps"] > 5 and h, timeout=10,
                      what="an ok heartbeat with fps")
        # A quiet scene keeps being ok for longer than frozen_after_s (1 s).
        time.sleep(1.2)
    stats = watcher.stats()  # stopped: the counts match the sink's
    assert ok["fps"] == pytest.approx(10.0, abs=1.5)  # paced at the file's 10 frames/s
    assert ok["last_frame_ts"] == pytest.approx(time.time(), abs=5)
    assert len(beats.streams()) >= 3  # the last one after frozen_after_s
    assert set(beats.streams()) == {"ok"}, beats.streams()
    assert stats.opens == 1
    assert stats.frames >= 12
    assert stats.bad_frames == stats.read_failures == stats.sink_errors == 0
    with lock:
        assert len(frames) == stats.frames
        assert {c for c, _s, _t in frames} == {"cam-1"}
        assert {s for _c, s, _t in frames} == {(H, W, 3)}
        times = [t for _c, _s, t in frames]
    assert times == sorted(times)


def test_file_is_looped_and_heartbeats_keep_their_cadence(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    clip = _write(tmp_path / "short.mp4", [rng.integers(0, 255, (H, W, 3), np.uint8) for _ in range(5)])
    # Five frames in a loop are five pictures over and over: a long frozen_after_s here.
    with watching(str(clip), StreamHealth(frozen_after_s=60.0, lost_after_s=0.5)) as (watcher, beats):
        wait_for(lambda: watcher.stats().opens >= 3, timeout=10, what="the 0.5 s file to be played 3 times")
        wait_for(lambda: len(beats.all()) >= 3, timeout=10, what="3 heartbeats")
    with beats._lock:
        stamps = [t for t, _c, _f in beats.items]
    gaps = np.diff(stamps)
    assert all(0.1 < g < 1.2 for g in gaps), gaps  # every heartbeat_s, give or take a busy machine
    assert float(np.mean(gaps)) == pytest.approx(HEARTBEAT_S, abs=0.15)
    assert set(beats.streams()) == {"ok"}


def test_frozen_clip_gives_frozen(frozen_clip: Path) -> None:
    with watching(str(frozen_clip)) as (_watcher, beats):
        frozen = wait_for(lambda: beats.latest(StreamState.FROZEN), timeout=10, what="a frozen heartbeat")
    assert frozen["fps"] > 5  # frames keep coming: frozen, not lost
    assert "ok" in beats.streams()  # before frozen_after_s had passed


def test_black_clip_gives_dark(black_clip: Path) -> None:
    with watching(str(black_clip)) as (_watcher, beats):
        dark = wait_for(lambda: beats.latest(StreamState.DARK), timeout=10, what="a dark heartbeat")
    assert dark["fps"] > 5
    assert dark["last_frame_ts"] is not None


@pytest.mark.parametrize("source", ["missing/camera.mp4", "rtsp://127.0.0.1:1/stream"],
                         ids=["missing-file", "refused-rtsp"])
def test_source_that_does_not_exist_gives_lost_and_keeps_retrying(tmp_path: Path, source: str) -> None:
    if not source.startswith("rtsp"):
        source = str(tmp_path / source)
    with watching(source) as (watcher, beats):
        wait_for(lambda: len(beats.all()) >= 2, timeout=10, what="2 heartbeats")
        first_failures = watcher.stats().open_failures
        wait_for(lambda: watcher.stats().open_failures > first_failures + 1, timeout=5, what="more retries")
    stats = watcher.stats()
    assert set(beats.streams()) == {"lost"}
    assert beats.all()[-1] == {"stream": "lost", "fps": 0.0, "last_frame_ts": None}
    assert stats.opens == 0
    assert stats.frames == 0
    assert stats.heartbeats == len(beats.all())


def test_stream_that_appears_later_is_picked_up(tmp_path: Path, live_clip: Path) -> None:
    """Lost while the source is missing, ok once it is there: reconnects until it works."""
    target = tmp_path / "late.mp4"
    with watching(str(target)) as (_watcher, beats):
        wait_for(lambda: beats.latest(StreamState.LOST), timeout=10, what="a lost heartbeat")
        target.write_bytes(live_clip.read_bytes())
        wait_for(lambda: beats.streams()[-1] == "ok", timeout=10, what="ok after the source appeared")


def test_file_not_looped_ends_as_lost(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    clip = _write(tmp_path / "once.mp4", [rng.integers(0, 255, (H, W, 3), np.uint8) for _ in range(8)])
    with watching(str(clip), loop_file=False) as (watcher, beats):
        wait_for(lambda: beats.latest(StreamState.OK), timeout=10, what="an ok heartbeat while it plays")
        lost = wait_for(lambda: beats.latest(StreamState.LOST), timeout=10, what="lost once it ended")
        stats = watcher.stats()
    assert lost["last_frame_ts"] is not None  # when the last frame came, for the gateway
    assert stats.opens == 1  # not reopened
    assert stats.frames == 8
    assert stats.read_failures == 0  # the end of a file is not a failure


def test_a_failing_sink_or_report_does_not_stop_the_camera(live_clip: Path) -> None:
    def bad_sink(_camera_id: str, _frame: np.ndarray, _ts: float) -> None:
        raise RuntimeError("detector bug")

    calls: list[dict[str, Any]] = []

    def bad_report(_camera_id: str, fields: dict[str, Any]) -> None:
        calls.append(fields)
        raise ConnectionError("publisher down")

    watcher = CameraWatcher("cam-2", str(live_clip), heartbeat_s=HEARTBEAT_S, report=bad_report,
                            frame_sink=bad_sink)
    watcher.start()
    try:
        wait_for(lambda: len(calls) >= 3, timeout=10, what="3 heartbeats despite the errors")
        assert watcher.running
    finally:
        watcher.stop()
    stats = watcher.stats()
    assert stats.frames > 10
    assert stats.sink_errors == stats.frames
    assert stats.report_errors == stats.heartbeats >= 3
    assert calls[-1]["stream"] == "ok"


def test_bad_frames_are_counted_not_fatal(live_clip: Path) -> None:
    """A frame the health check refuses (here: every third, by a health that says so) is
    counted and skipped; the camera carries on."""

    class Picky(StreamHealth):
        def __init__(self) -> None:
            super().__init__(lost_after_s=1.0)
            self.calls = 0

        def update(self, frame: np.ndarray | None, ts: float) -> None:
            self.calls += 1
            if self.calls % 3 == 0:
                raise ValueError("corrupt frame")
            super().update(frame, ts)

    with watching(str(live_clip), health=Picky()) as (watcher, beats):
        wait_for(lambda: watcher.stats().bad_frames >= 5, timeout=10, what="bad frames counted")
        wait_for(lambda: beats.latest(StreamState.OK), timeout=10, what="an ok heartbeat")
        stats = watcher.stats()
    assert stats.frames >= 2 * stats.bad_frames - 2
    assert stats.opens == 1


@pytest.mark.parametrize(("source", "kind"), [
    (0, SourceKind.DEVICE), ("2", SourceKind.DEVICE), ("rtsp://user:pw@10.0.0.5/stream1", SourceKind.URL),
    ("http://cam/video.mjpg", SourceKind.URL), ("/var/clips/exit.mp4", SourceKind.FILE), ("clip.avi", SourceKind.FILE),
])
def test_source_kind(source: str | int, kind: SourceKind) -> None:
    assert source_kind(source) is kind


@pytest.mark.parametrize(("source", "shown"), [
    ("rtsp://admin:s3cret@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1"),
    ("rtsp://10.0.0.5/stream1", "rtsp://10.0.0.5/stream1"),
    ("/clips/a@b.mp4", "/clips/a@b.mp4"),
    (3, "3"),
])
def test_passwords_stay_out_of_the_log(source: str | int, shown: str) -> None:
    assert _redact(source) == shown
