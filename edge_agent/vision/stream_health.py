"""Is a camera's picture usable? Pure stream-health judgement: frames and timestamps in, a
:class:`~protocol.messages.StreamState` out (issue 3, point 2; DESIGN section 3, heartbeat).

- **lost**: no frame for ``lost_after_s`` (or none ever).
- **dark**: the lens is covered or there is no picture: low brightness *and* low variance
  (mean < ``dark_mean`` and standard deviation < ``dark_std`` grey levels) for ``dark_after_s``.
  A dim room still has structure (variance); a bright uniform picture is not dark.
- **frozen**: frames keep arriving but have stopped changing at all for ``frozen_after_s``:
  a hung encoder resending the same picture. Each analysed frame is shrunk to a small grey
  float image and compared by mean absolute difference with the last ``frozen_memory``
  *distinct* pictures seen; it is "unchanged" when it matches one of them within the tiny
  ``frozen_diff``, and the stream is frozen when nothing new has been seen for
  ``frozen_after_s``. Measured with the defaults: a live but quiet room differs from
  everything before it by its sensor noise; the longest run of "unchanged" frames is 1.0 s
  in a real H.264 clip (people-standing-at-table.mp4, 139 s, mostly still) and 0.2-0.4 s in
  each of the 12 synthetic exit clips (``simulators.video``), a tenth of the default 10 s.
  A frozen encoder repeating its bytes gives a difference of 0. An encoder that
  keeps re-encoding one frozen picture cycles through a few slightly different decodings (an
  MPEG-4 GOP of 12: up to 0.33 from the keyframe, then back to it exactly), which is why a
  few pictures are remembered rather than one. Comparing with remembered pictures rather
  than with the previous frame also means a picture cannot creep past the check in steps
  each smaller than the threshold.
- **ok** otherwise. Precedence: lost, dark, frozen, ok (a black "no video" screen is both
  dark and unchanging; dark says more).

No clock, camera or thread here: the camera watcher (:mod:`edge_agent.sources.camera`)
feeds it. Frames are counted for ``fps`` on every :meth:`StreamHealth.update`, but pixels are
analysed at most every ``analyse_every_s`` so that a 25 frames/s 1080p stream costs little.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from protocol.messages import StreamState

__all__ = ["FrameStats", "StreamHealth", "StreamState"]


@dataclass(frozen=True, slots=True)
class FrameStats:
    """What the last analysed frame looked like (for logs and for calibrating thresholds)."""

    mean: float  # grey level 0..255 of the shrunk frame
    std: float
    diff: float | None  # mean absolute difference from the closest remembered picture; None: none yet


class StreamHealth:
    """Stream state of one camera from the frames it delivers; see the module docstring.

    ``update(frame, ts)`` for every read attempt (``frame`` None when the read gave nothing),
    then ``state(now)``, ``fps(now)`` and ``last_frame_ts`` for the heartbeat. Timestamps are
    seconds on any clock that the caller uses consistently (the watcher uses epoch seconds).
    """

    def __init__(
        self,
        frozen_after_s: float = 10.0,
        dark_mean: float = 20.0,
        dark_std: float = 6.0,
        lost_after_s: float = 5.0,
        *,
        dark_after_s: float = 2.0,
        frozen_diff: float = 0.1,
        frozen_memory: int = 8,
        fps_window_s: float = 5.0,
        analyse_every_s: float = 0.2,
        work_width: int = 160,
    ) -> None:
        if min(frozen_after_s, lost_after_s, fps_window_s) <= 0:
            raise ValueError("frozen_after_s, lost_after_s and fps_window_s must be positive")
        if min(dark_after_s, frozen_diff, analyse_every_s) < 0 or work_width < 8 or frozen_memory < 1:
            raise ValueError("dark_after_s, frozen_diff, analyse_every_s must be >= 0, work_width >= 8, "
                             "frozen_memory >= 1")
        self.frozen_after_s = frozen_after_s
        self.dark_mean = dark_mean
        self.dark_std = dark_std
        self.lost_after_s = lost_after_s
        self.dark_after_s = dark_after_s
        self.frozen_diff = frozen_diff
        self.frozen_memory = frozen_memory
        self.fps_window_s = fps_window_s
        self.analyse_every_s = analyse_every_s
        self.work_width = work_width
        self.last_frame_ts: float | None = None
        self.last_stats: FrameStats | None = None
        self.frames = 0  # frames accepted since construction
        self._times: deque[float] = deque()  # frame timestamps within the fps window
        self._analysed_ts: float | None = None
        self._seen: deque[np.ndarray] = deque(maxlen=frozen_memory)  # recent distinct pictures, newest last
        self._unchanged_since: float | None = None  # ts of the last frame unlike all of them
        self._dark_since: float | None = None

    def update(self, frame: np.ndarray | None, ts: float) -> None:
        """Take one frame read at ``ts``; ``None`` (nothing read) changes nothing.

        Raises :class:`ValueError` for a frame that is not an image (empty, wrong shape or
        type): the caller logs and counts it; the state is left as it was.
        """
        if frame is None:
            return
        self._check(frame)  # every frame, before anything is recorded
        small = None
        if self._analysed_ts is None or ts - self._analysed_ts >= self.analyse_every_s or ts < self._analysed_ts:
            small = self._shrink(frame)
        self.frames += 1
        self.last_frame_ts = ts
        self._times.append(ts)
        self._trim(ts)
        if small is not None:
            self._analysed_ts = ts
            self._analyse(small, ts)

    def state(self, now: float) -> StreamState:
        if self.last_frame_ts is None or now - self.last_frame_ts >= self.lost_after_s:
            return StreamState.LOST
        if self._dark_since is not None and now - self._dark_since >= self.dark_after_s:
            return StreamState.DARK
        if self._unchanged_since is not None and now - self._unchanged_since >= self.frozen_after_s:
            return StreamState.FROZEN
        return StreamState.OK

    def fps(self, now: float) -> float:
        """Frames per second over the last ``fps_window_s``; falls to 0 when frames stop.

        Frame intervals over the frames in the window, (n - 1) / (newest - oldest): exact
        while frames flow, even in the first second. Once the gap since the newest frame
        exceeds the mean interval, the span is stretched by that excess, so the figure
        falls as soon as frames stop coming and reaches 0 when fewer than two are left.
        """
        self._trim(now)
        times = self._times
        if len(times) < 2:
            return 0.0
        intervals = len(times) - 1
        span = times[-1] - times[0]
        span = max(span, now - times[0] - span / intervals)
        return intervals / span if span > 0 else 0.0

    # ------------------------------------------------------------------ internals

    def _trim(self, now: float) -> None:
        times = self._times
        while times and (times[0] < now - self.fps_window_s or times[0] > now):
            times.popleft()  # old, or from before a clock step back

    @staticmethod
    def _check(frame: np.ndarray) -> None:
        """:class:`ValueError` unless ``frame`` is an 8 or 16-bit BGR, BGRA or grey image
        (cheap: no pixel is read)."""
        if not isinstance(frame, np.ndarray) or frame.size == 0:
            raise ValueError("empty frame")
        if frame.ndim not in {2, 3} or (frame.ndim == 3 and frame.shape[2] not in {1, 3, 4}):
            raise ValueError(f"not an image: shape {frame.shape}")
        if frame.dtype not in {np.dtype(np.uint8), np.dtype(np.uint16)}:
            raise ValueError(f"unsupported pixel type {frame.dtype}")

    def _shrink(self, frame: np.ndarray) -> np.ndarray:
        """A small float32 grey copy of a checked ``frame``."""
        if frame.dtype == np.uint16:
            frame = (frame >> 8).astype(np.uint8)
        height, width = frame.shape[:2]
        size = (min(width, self.work_width), max(1, round(height * min(width, self.work_width) / width)))
        # Shrink first, convert after: a quarter of the work on a 1080p frame.
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if size != (width, height) else frame
        if small.ndim == 3 and small.shape[2] == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        elif small.ndim == 3 and small.shape[2] == 4:
            small = cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY)
        elif small.ndim == 3:
            small = small[:, :, 0]
        return np.asarray(small, dtype=np.float32)

    def _analyse(self, small: np.ndarray, ts: float) -> None:
        mean, std = cv2.meanStdDev(small)
        mean_f, std_f = float(mean[0, 0]), float(std[0, 0])
        if mean_f < self.dark_mean and std_f < self.dark_std:
            if self._dark_since is None or ts < self._dark_since:
                self._dark_since = ts
        else:
            self._dark_since = None
        diff: float | None = None  # to the closest remembered picture
        for seen in reversed(self._seen):
            if seen.shape == small.shape:
                d = float(cv2.norm(small, seen, cv2.NORM_L1)) / small.size
                diff = d if diff is None else min(diff, d)
                if diff <= self.frozen_diff:
                    break
        stepped_back = self._unchanged_since is not None and ts < self._unchanged_since  # the clock was set back
        if diff is None or not math.isfinite(diff) or diff > self.frozen_diff or stepped_back:
            self._seen.append(small)  # something new (or a new size): a new unchanged stretch starts here
            self._unchanged_since = ts
        self.last_stats = FrameStats(mean_f, std_f, diff)
