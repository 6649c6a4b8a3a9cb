"""A single-background baseline, kept to compare against in ``bench/vision.py`` (the "peer").

:class:`SingleModelDetector` is what a first attempt usually is: one OpenCV MOG2 background
on the grey frame; the exit is blocked once at least ``min_blocked_ratio`` of the region has
been foreground without a break for the persistence time. It has the weaknesses the
dual-background detector is built to avoid: a person standing still is foreground like a
box, lighting changes are foreground, and a parked object slowly fades into the background.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_agent.vision.exit_blockage import ExitObservation, Frame, Polygon
from protocol import ExitState


class SingleModelDetector:
    def __init__(self, region: Polygon, frame_size: tuple[int, int], persistence_s: float = 30.0,
                 history_s: float = 120.0, min_blocked_ratio: float = 0.04, work_width: int = 160) -> None:
        width, height = frame_size
        scale = work_width / width
        self._size = (work_width, max(8, round(height * scale)))
        mask = np.zeros((self._size[1], self._size[0]), np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(region, np.float64) * scale).astype(np.int32)], (255,))
        self._region = mask > 0
        self._region_px = max(1, int(self._region.sum()))
        self._mog = cv2.createBackgroundSubtractorMOG2(history=500, varThreshold=16, detectShadows=False)
        self.persistence_s = persistence_s
        self._history_s = history_s
        self._min_ratio = min_blocked_ratio
        self._last_ts: float | None = None
        self._since: float | None = None

    def update(self, frame: Frame, ts: float) -> ExitObservation:
        dt = 0.1 if self._last_ts is None else min(max(ts - self._last_ts, 1e-3), 2.0)
        self._last_ts = ts
        grey = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), self._size, interpolation=cv2.INTER_AREA)
        fg = self._mog.apply(grey, learningRate=1.0 - math.exp(-dt / self._history_s))
        ratio = float(np.count_nonzero(fg[self._region])) / self._region_px
        if ratio < self._min_ratio:
            self._since = None
            return ExitObservation(ExitState.CLEAR, ratio, None)
        if self._since is None:
            self._since = ts
        if ts - self._since >= self.persistence_s:
            return ExitObservation(ExitState.BLOCKED, ratio, self._since)
        return ExitObservation(ExitState.CLEAR, ratio, None)
