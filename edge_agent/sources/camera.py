"""One camera, watched: read frames, judge the stream's health, send heartbeats (issue 3, point 2).

:class:`CameraWatcher` owns one thread per camera. The thread opens the source with
``cv2.VideoCapture`` (an RTSP/HTTP URL, a video file or a device index), reads frames,
feeds them to a :class:`~edge_agent.vision.stream_health.StreamHealth` and to the optional
``frame_sink`` (the exit detectors), and every ``heartbeat_s`` calls ``report(camera_id,
{"stream", "fps", "last_frame_ts"})``: the heartbeat fields of the wire contract (DESIGN
section 3) without ``ts``/``boot``/``seq``, which the publisher adds.

- **Reconnects** with capped exponential backoff (``backoff_min_s`` doubling up to
  ``backoff_max_s``, with jitter so the cameras of one recorder do not retry in step) when
  opening fails, when a read fails, or when the source ends. The backoff starts again from
  ``backoff_min_s`` once a connection has delivered frames.
- **Heartbeats never stop** while the thread lives: the waits between retries and between
  paced frames are sliced at the next heartbeat. Network sources are opened with OpenCV's
  FFmpeg open/read timeouts (``io_timeout_s``) so that a dead camera cannot block the thread
  (and so its heartbeats) for longer than that. A new watcher waits up to the health's
  ``lost_after_s`` for a first frame before its first heartbeat, so a camera that is still
  connecting is not reported ``lost`` at every agent start.
- **Files** are paced at the file's own frame rate (a file read flat out would play at
  hundreds of frames/s) and looped when ``loop_file``; a file that ended and is not looped
  is a stream that stopped: it turns ``lost``.
- **Never crashes on a bad frame**: a frame the health check rejects, an exception from
  OpenCV, the sink or ``report`` is logged and counted (:meth:`CameraWatcher.stats`), and the
  thread carries on.

``frame_sink`` and ``report`` run on the camera thread: they must hand off quickly.
Timestamps (``last_frame_ts`` and the ``ts`` given to the sink) come from ``clock``
(epoch seconds by default); waits and pacing use ``time.monotonic``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.vision.stream_health import StreamHealth

log = logging.getLogger(__name__)

Report = Callable[[str, dict[str, Any]], None]
FrameSink = Callable[[str, np.ndarray, float], None]

_DEFAULT_FILE_FPS = 10.0  # when a file does not say (or says nonsense)
_MAX_FILE_FPS = 240.0
_BEHIND_S = 1.0  # pacing that fell further behind than this restarts instead of bursting


class SourceKind(StrEnum):
    DEVICE = "device"  # a local camera: V4L2 device index
    URL = "url"  # rtsp://, http(s)://, ...: read through FFmpeg with timeouts
    FILE = "file"  # a video file: paced at its own frame rate, looped on request


def source_kind(source: str | int) -> SourceKind:
    """How ``source`` is opened: an int (or a string of digits) is a device index, a string
    with ``://`` a URL, anything else a file path."""
    if isinstance(source, int) or source.strip().isdigit():
        return SourceKind.DEVICE
    return SourceKind.URL if "://" in source else SourceKind.FILE


@dataclass(frozen=True, slots=True)
class CameraStats:
    opens: int  # successful opens (the first one included)
    open_failures: int
    frames: int  # frames accepted by the health check
    bad_frames: int  # frames rejected (not an image) or that raised
    read_failures: int  # reads that returned nothing or raised (end of a file not counted)
    sink_errors: int  # frame_sink calls that raised
    heartbeats: int  # report calls made
    report_errors: int  # report calls that raised
    connected: bool  # a capture is open now


class CameraWatcher:
    """Watches one camera on its own thread; see the module docstring.

    ``health`` is the stream-health judge (thresholds included); by default
    ``StreamHealth()`` with the contract's defaults. Constructing does nothing:
    :meth:`start` starts the thread, :meth:`stop` ends it.
    """

    def __init__(
        self,
        camera_id: str,
        source: str | int,
        *,
        heartbeat_s: float,
        report: Report,
        frame_sink: FrameSink | None = None,
        loop_file: bool = True,
        clock: Callable[[], float] = time.time,
        health: StreamHealth | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        io_timeout_s: float = 5.0,
    ) -> None:
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be positive, got {heartbeat_s}")
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        self.camera_id = camera_id
        self.source = source
        self.kind = source_kind(source)
        self.heartbeat_s = heartbeat_s
        self.report = report
        self.frame_sink = frame_sink
        self.loop_file = loop_file
        self.clock = clock
        self.health = health if health is not None else StreamHealth()
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.io_timeout_s = io_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the counters read by stats()
        self._opens = self._open_failures = self._frames = self._bad_frames = 0
        self._read_failures = self._sink_errors = self._heartbeats = self._report_errors = 0
        self._connected = False
        self._failing = False  # the last open failed (camera thread only)
        self._started_m = 0.0
        self._next_heartbeat_m = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"camera {self.camera_id} already started")
        self._stop.clear()
        self._started_m = time.monotonic()
        self._next_heartbeat_m = self._started_m + self.heartbeat_s
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait up to ``timeout`` (plus ``io_timeout_s``: a read in
        progress cannot be interrupted)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout + self.io_timeout_s)
        if thread.is_alive():
            log.error("camera %s: thread did not stop", self.camera_id)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> CameraStats:
        with self._lock:
            return CameraStats(
                opens=self._opens, open_failures=self._open_failures, frames=self._frames,
                bad_frames=self._bad_frames, read_failures=self._read_failures, sink_errors=self._sink_errors,
                heartbeats=self._heartbeats, report_errors=self._report_errors, connected=self._connected,
            )

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        backoff = self.backoff_min_s
        failures = 0  # consecutive opens that failed or delivered nothing
        while not self._stop.is_set():
            delivered = 0
            try:
                cap = self._open()
                if cap is not None:
                    delivered = self._read_all(cap)
            except Exception:  # the camera thread must outlive any OpenCV surprise
                log.exception("camera %s: unexpected error; reconnecting", self.camera_id)
            if self._stop.is_set():
                break
            if delivered:
                if failures:
                    log.info("camera %s: frames again after %d failed attempt(s)", self.camera_id, failures)
                failures, backoff = 0, self.backoff_min_s
                if self.kind is SourceKind.FILE:
                    if self.loop_file:
                        continue  # end of the file: play it again at once
                    log.info("camera %s: end of %s (not looped)", self.camera_id, self.source)
                    self._wait(math.inf)  # heartbeats only; the stream turns lost
                    break
            else:
                failures += 1
            # Jitter: the cameras of one recorder that died together do not all retry in step.
            self._wait(backoff * random.uniform(0.8, 1.0))  # noqa: S311 - retry jitter, not cryptography
            backoff = min(backoff * 2, self.backoff_max_s)

    def _open(self) -> cv2.VideoCapture | None:
        source = self.source
        if self.kind is SourceKind.DEVICE:
            cap = cv2.VideoCapture(int(source))
        elif self.kind is SourceKind.URL:
            ms = max(1, round(self.io_timeout_s * 1000))
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, params)
        elif not Path(str(source)).is_file():
            cap = None  # spares OpenCV's warnings for a file that is not there
        else:
            cap = cv2.VideoCapture(str(source))
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            with self._lock:
                self._open_failures += 1
            # The first failure is news; the rest of a long outage is retry noise.
            log.log(logging.DEBUG if self._failing else logging.WARNING, "camera %s: cannot open %s",
                    self.camera_id, _redact(source))
            self._failing = True
            return None
        self._failing = False
        with self._lock:
            self._opens += 1
        log.info("camera %s: opened %s (%s)", self.camera_id, _redact(source), self.kind)
        return cap

    def _read_all(self, cap: cv2.VideoCapture) -> int:
        """Read until the source ends, fails or we are stopped; return the frames delivered."""
        delivered = 0
        period = 0.0
        if self.kind is SourceKind.FILE:
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            period = 1.0 / (fps if math.isfinite(fps) and 0 < fps <= _MAX_FILE_FPS else _DEFAULT_FILE_FPS)
        due = time.monotonic()
        with self._lock:
            self._connected = True
        try:
            while not self._stop.is_set():
                if period:
                    self._wait(due - time.monotonic())
                    if self._stop.is_set():
                        break
                    due += period
                    if due < time.monotonic() - _BEHIND_S:
                        due = time.monotonic()  # fell far behind (a slow sink): resume, do not burst
                try:
                    ok, frame = cap.read()
                except cv2.error:
                    log.warning("camera %s: read raised", self.camera_id, exc_info=True)
                    ok, frame = False, None
                if not ok or frame is None:
                    if self.kind is not SourceKind.FILE or not delivered:
                        with self._lock:
                            self._read_failures += 1
                        log.warning("camera %s: read failed after %d frame(s); reconnecting",
                                    self.camera_id, delivered)
                    return delivered  # a file's end, or a broken stream: the caller reopens
                if self._take(frame):
                    delivered += 1
                self._heartbeat_if_due()
        finally:
            with self._lock:
                self._connected = False
            cap.release()
        return delivered

    def _take(self, frame: np.ndarray) -> bool:
        """Health check and sink for one frame; False (logged, counted) when it was bad."""
        ts = self.clock()
        try:
            self.health.update(frame, ts)
        except Exception as exc:  # noqa: BLE001 - a bad frame is counted, never fatal
            with self._lock:
                self._bad_frames += 1
                n = self._bad_frames
            if n == 1 or n % 100 == 0:  # the first, then a reminder, not one line per frame
                log.warning("camera %s: bad frame #%d: %s", self.camera_id, n, exc)
            return False
        with self._lock:
            self._frames += 1
        if self.frame_sink is not None:
            try:
                self.frame_sink(self.camera_id, frame, ts)
            except Exception:  # a failing consumer must not stop the camera
                with self._lock:
                    self._sink_errors += 1
                    n = self._sink_errors
                if n == 1 or n % 100 == 0:
                    log.exception("camera %s: frame sink failed (#%d)", self.camera_id, n)
        return True

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (until stopped), sending the heartbeats that fall due."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            self._heartbeat_if_due()
            now = time.monotonic()
            if now >= deadline:
                return
            if self._stop.wait(min(deadline, self._next_heartbeat_m) - now):
                return

    def _heartbeat_if_due(self) -> None:
        now_m = time.monotonic()
        if now_m < self._next_heartbeat_m:
            return
        health = self.health
        if health.last_frame_ts is None and now_m - self._started_m < health.lost_after_s:
            # Still connecting: give it lost_after_s for a first frame before calling it lost.
            self._next_heartbeat_m = self._started_m + health.lost_after_s
            return
        self._next_heartbeat_m += self.heartbeat_s
        if self._next_heartbeat_m <= now_m:  # late (a long read): the next one a full period from now
            self._next_heartbeat_m = now_m + self.heartbeat_s
        now = self.clock()
        fields: dict[str, Any] = {
            "stream": health.state(now).value,
            "fps": round(health.fps(now), 2),
            "last_frame_ts": health.last_frame_ts,
        }
        with self._lock:
            self._heartbeats += 1
        try:
            self.report(self.camera_id, fields)
        except Exception:  # the publisher's trouble is not the camera's
            with self._lock:
                self._report_errors += 1
            log.exception("camera %s: report failed", self.camera_id)


def _redact(source: str | int) -> str:
    """``source`` for the log, without the password of a ``rtsp://user:pass@host`` URL."""
    text = str(source)
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return text
    creds, _, host = rest.partition("@")
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
