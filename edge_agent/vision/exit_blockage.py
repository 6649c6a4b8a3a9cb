"""Exit-blockage detection: is an object left standing in an exit region? (issue 3, point 3)

Pure and stateful per exit: :meth:`ExitBlockageDetector.update` takes a BGR frame and its
timestamp and returns an :class:`ExitObservation`. It never reads a clock or a camera, so it
is tested with synthetic numpy frames and benchmarked on recorded clips (``bench/vision.py``).

Method (an abandoned-object detector with a dual background, see ``docs/edge-agent-vision.md``):

1. Work on a small grey image (``work_width`` pixels wide). Take its logarithm and subtract a
   wide Gaussian blur of it: a multiplicative, spatially smooth illumination (daylight drift,
   lamp pools) becomes an additive, smooth term in the log and is removed by the high-pass.
   What is left is the scene's texture and edges, largely independent of the light level.
2. Two background models of that image: a long-term one (time constant ``long_tau_s``)
   that learns only where it sees background, so it is *frozen* under anything foreign and
   an obstacle never fades into it, and a short-term one (``short_tau_s``) that absorbs
   whatever stands still for a few seconds.
3. A pixel is *static foreground* when it differs from the long-term model but not from the
   short-term one. Each pixel accumulates how long it has been static (seconds). While
   something moves over it (a person passing in front of a parked cart), a pixel at rest for
   ``settle_s`` holds its clock, and the time it was hidden is credited when it is seen at
   rest again (the object was there all along); other pixels decay slowly. It is reset when
   the background shows again (the object was taken away, or a person left the spot).
4. Rigidity (off by default, ``motion_reset_px``): a person standing still sways; a box
   does not. A static blob with a little frame-to-frame motion next to it has the part near
   the motion reset. The bench showed it costs recall (people passing a parked bicycle reset
   it) without sparing people who stand longer than the persistence time, so it is off.
5. The exit is ``blocked`` when at least ``min_blocked_ratio`` of the region has been static
   for ``persistence_s``; ``blocked_since`` is when those pixels came to rest.
6. ``unknown`` when the view is unusable: too dark, no texture, or the picture no longer
   matches the learnt background as a whole (the camera was moved; after ``relearn_s`` the
   models are learnt again from the new view).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from protocol import ExitState  # the contract's states: clear, blocked, unknown

Frame = NDArray[np.uint8]
Floats = NDArray[np.float32]
Mask = NDArray[np.bool_]
Polygon = Sequence[tuple[float, float]] | Sequence[Sequence[float]]


@dataclass(frozen=True)
class ExitObservation:
    state: ExitState
    blocked_ratio: float  # share of the exit region covered by something at rest (0..1)
    blocked_since: float | None  # when the blocking object came to rest (only when blocked)
    reason: str = ""  # why the state is unknown: "dark", "no texture", "camera moved"


@dataclass(frozen=True)
class BlockageParams:
    """Tuning; defaults chosen with ``python -m bench.vision`` (figures in docs/edge-agent-vision.md)."""

    work_width: int = 160  # the frame is downscaled to this width (aspect kept)
    highpass_sigma: float = 6.0  # working pixels; removes smooth illumination
    log_offset: float = 8.0  # grey + offset before the log: tames noise in the dark
    fg_threshold: float = 0.12  # minimum |log high-pass difference| for foreground
    noise_k: float = 5.0  # ... and at least this many times the measured noise sigma
    short_tau_s: float = 1.5  # short-term background: absorbs anything still for ~2 s
    long_tau_s: float = 60.0  # long-term background: learns only where it sees background
    occlusion_decay: float = 0.5  # static time lost per second while covered, before settle_s at rest
    clear_s: float = 1.0  # background seen this long again at a pixel: the object there has gone
    motion_reset_px: int = 0  # moving working pixels next to a static blob that reset it (a sway; 0: off) ...
    sway_fraction: float = 0.5  # ... when the touching motion is at most this share of the blob's area
    sway_radius_px: int = 3  # working pixels around the motion that a sway resets
    credit_cap_s: float = 3.0  # a pixel coming to rest is credited the time it was still, up to this
    global_change: float = 0.25  # more of the view than this changing at once: a lighting step, hold
    light_step: float = 0.06  # mean brightness changing more than this between frames: a lighting step, hold
    min_blocked_ratio: float = 0.04  # share of the region that must be static for "blocked"
    settle_s: float = 2.0  # static this long counts in blocked_ratio
    dark_level: float = 10.0  # mean grey (0..255) of the region below this: "dark"
    min_texture: float = 1.5  # grey std-dev of the whole view below this: "no texture"
    moved_ncc: float = 0.4  # correlation with the long-term background below this: "camera moved"
    relearn_s: float = 10.0  # after the camera moved this long, learn the new view
    max_dt_s: float = 2.0  # a gap in the frames longer than this counts as this long


def _alpha(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0


class ExitBlockageDetector:
    """Per-exit state; feed every frame of the exit's camera in time order.

    ``region`` is the exit polygon in pixels of frames of ``frame_size`` (width, height).
    ``reference``: an optional clear-reference frame (the exit with nothing in it); without
    it, the first usable frame is taken as the empty exit.
    """

    def __init__(self, region: Polygon, frame_size: tuple[int, int], persistence_s: float = 30.0,
                 params: BlockageParams | None = None, reference: Frame | None = None) -> None:
        self.params = params or BlockageParams()
        self.persistence_s = persistence_s
        self.frame_size = frame_size
        width, height = frame_size
        p = self.params
        self._scale = p.work_width / width
        self._size = (p.work_width, max(8, round(height * self._scale)))
        mask = np.zeros((self._size[1], self._size[0]), np.uint8)
        pts = np.round(np.asarray(region, np.float64) * self._scale * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], (255,), cv2.LINE_8, 4)
        self._region: Mask = mask > 0
        self._region_px = max(1, int(self._region.sum()))
        self._kernel: NDArray[np.uint8] = np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), np.uint8)
        self._long: Floats | None = None
        self._short: Floats | None = None
        self._prev: Floats | None = None
        shape = (self._size[1], self._size[0])
        self._static_s: Floats = np.zeros(shape, np.float32)  # seconds at rest, per pixel
        self._still_s: Floats = np.zeros(shape, np.float32)  # seconds without frame-to-frame motion
        self._bg_s: Floats = np.zeros(shape, np.float32)  # seconds the long-term background is seen
        self._fg_s: Floats = np.zeros(shape, np.float32)  # seconds the pixel has been foreground
        self._hidden_s: Floats = np.zeros(shape, np.float32)  # seconds a pixel at rest has been covered
        self._last_ts: float | None = None
        self._moved_s = 0.0
        self._level = 0.0  # mean grey of the previous frame
        self._blocked = False
        if reference is not None:
            self._learn(self._texture(self._grey(reference)))

    # ------------------------------------------------------------------ image

    def _grey(self, frame: Frame) -> NDArray[np.uint8]:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        small = cv2.resize(grey, self._size, interpolation=cv2.INTER_AREA)
        return np.asarray(small, np.uint8)

    def _texture(self, grey: NDArray[np.uint8]) -> Floats:
        """Log-intensity minus its wide blur: edges and texture, without smooth illumination."""
        log = np.log(grey.astype(np.float32) + np.float32(self.params.log_offset))
        log = cv2.GaussianBlur(log, (3, 3), 0)
        return np.asarray(log - cv2.GaussianBlur(log, (0, 0), self.params.highpass_sigma), np.float32)

    def _learn(self, texture: Floats) -> None:
        self._long = texture.copy()
        self._short = texture.copy()
        self._prev = texture.copy()
        self._static_s[:] = 0.0
        self._still_s[:] = 0.0
        self._bg_s[:] = 0.0
        self._fg_s[:] = 0.0
        self._hidden_s[:] = 0.0
        self._moved_s = 0.0
        self._blocked = False

    # ------------------------------------------------------------------ update

    def update(self, frame: Frame, ts: float) -> ExitObservation:
        """One frame (BGR uint8, the configured size) taken at ``ts`` seconds."""
        p = self.params
        dt = 0.0 if self._last_ts is None else min(max(ts - self._last_ts, 0.0), p.max_dt_s)
        self._last_ts = ts
        grey = self._grey(frame)
        if float(grey[self._region].mean()) < p.dark_level:
            return ExitObservation(ExitState.UNKNOWN, 0.0, None, "dark")
        if float(grey.std()) < p.min_texture:
            return ExitObservation(ExitState.UNKNOWN, 0.0, None, "no texture")
        texture = self._texture(grey)
        if self._long is None or self._short is None or self._prev is None:
            self._learn(texture)
            return ExitObservation(ExitState.CLEAR, 0.0, None)
        long_bg, short_bg, prev = self._long, self._short, self._prev

        # Robust noise sigma of the texture image from the frame-to-frame difference.
        step = np.abs(texture - prev)
        noise = float(np.median(step)) * 1.4826 / math.sqrt(2.0)
        threshold = max(p.fg_threshold, p.noise_k * noise)
        if _ncc(texture, long_bg) < p.moved_ncc:
            self._moved_s += dt
            self._prev = texture
            if self._moved_s >= p.relearn_s:
                self._learn(texture)
            return ExitObservation(ExitState.UNKNOWN, 0.0, None, "camera moved")
        self._moved_s = 0.0

        fg_long = _clean(np.abs(texture - long_bg) > threshold, self._kernel)
        fg_short = np.abs(texture - short_bg) > threshold
        motion = step > threshold

        if not self._accumulate(grey, texture, dt, fg_long, fg_short, motion):
            return self._decide(ts)

        # Background learning: the short-term model everywhere, the long-term one only where
        # it sees background and nothing moves (frozen under any foreground).
        cv2.accumulateWeighted(texture, short_bg, _alpha(dt, p.short_tau_s))
        learn = (~fg_long & ~motion).astype(np.uint8)
        cv2.accumulateWeighted(texture, long_bg, _alpha(dt, p.long_tau_s), mask=learn)
        self._prev = texture
        return self._decide(ts)

    def _accumulate(self, grey: NDArray[np.uint8], texture: Floats, dt: float,
                    fg_long: Mask, fg_short: Mask, motion: Mask) -> bool:
        """Update the per-pixel timers; False on a lighting step (evidence held, models not learnt)."""
        p = self.params
        static = fg_long & ~fg_short
        still = self._still_s
        still += dt
        still[motion] = 0.0
        seen = self._bg_s
        seen += dt
        seen[fg_long] = 0.0
        fg_age = self._fg_s
        fg_age += dt
        fg_age[~fg_long] = 0.0
        acc = self._static_s
        level = float(grey.mean())
        light_step = abs(level - self._level) > p.light_step * max(self._level, 1.0)
        self._level = level
        if light_step or float(np.count_nonzero(motion)) > p.global_change * motion.size:
            # Lamps switching or flickering change the whole view at once: hold the evidence.
            assert self._short is not None
            self._prev = texture
            cv2.accumulateWeighted(texture, self._short, _alpha(dt, p.short_tau_s))
            return False
        # A pixel coming to rest counts from when it stopped changing (and was foreground), not
        # from when the short-term background absorbed it (which takes ~short_tau_s). The
        # inside of a uniform moving figure does not change either, hence the foreground age.
        new = static & (acc <= 0)
        acc[new] = np.minimum(np.minimum(still[new], fg_age[new]), p.credit_cap_s)
        acc[static & ~new] += dt
        # Covered (something moves over it): a pixel at rest for settle_s holds its clock and
        # keeps the time it was hidden, credited if it is seen at rest again (the object was still
        # there behind the passer-by), dropped if the background shows (it was a person leaving
        # their own footprint, or the object was taken away). Anything else loses evidence slowly.
        covered = fg_long & ~static
        hidden = self._hidden_s
        held = covered & (acc >= p.settle_s)
        hidden[held] += dt
        back = static & (hidden > 0)
        acc[back] += hidden[back]
        hidden[back] = 0.0
        fading = covered & ~held
        acc[fading] = np.maximum(acc[fading] - p.occlusion_decay * dt, 0.0)
        acc[seen >= p.clear_s] = 0.0
        hidden[seen >= p.clear_s] = 0.0
        self._reset_swaying(acc, motion)
        return True

    def _reset_swaying(self, acc: Floats, motion: Mask) -> None:
        """Reset static blobs with a little motion next to them: a person standing still sways,
        gestures, shifts weight; a box never moves. Someone walking past or in front of a parked
        object makes a motion blob as large as a fair share of the object, which is not a sway."""
        p = self.params
        if p.motion_reset_px <= 0:
            return
        settled = (acc >= p.settle_s).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(settled, connectivity=8)
        if n <= 1 or not motion.any():
            return
        # Dilated so that the legs, arms and head of one walking person make one blob.
        moving = cv2.dilate(motion.astype(np.uint8), self._kernel, iterations=2)
        m, mlabels = cv2.connectedComponents(moving, connectivity=8)
        grown = cv2.dilate(labels.astype(np.float32), self._kernel, iterations=1).astype(np.int32)
        touch = (grown > 0) & (mlabels > 0)
        if not touch.any():
            return
        pairs = np.unique(np.stack([grown[touch], mlabels[touch]], axis=1), axis=0)
        raw = np.bincount(mlabels[motion], minlength=m)  # moving pixels per (dilated) motion blob
        touching = np.zeros(n, np.int64)
        np.add.at(touching, pairs[:, 0], raw[pairs[:, 1]])
        area = stats[:, cv2.CC_STAT_AREA]
        sway = (touching >= p.motion_reset_px) & (touching <= p.sway_fraction * area)
        sway[0] = False
        if sway.any():
            # Only the part of the blob near the motion: a person passing close to a parked
            # bicycle resets the bicycle's near edge, not all of it.
            near = cv2.dilate(motion.astype(np.uint8), self._kernel, iterations=p.sway_radius_px) > 0
            hit = near & (sway[labels] | (sway[grown] & (acc > 0)))
            acc[hit] = 0.0
            self._still_s[hit] = 0.0

    def _decide(self, ts: float) -> ExitObservation:
        p = self.params
        in_region = self._static_s[self._region]
        ratio = float(np.count_nonzero(in_region >= p.settle_s)) / self._region_px
        old = in_region[in_region >= self.persistence_s]
        need = p.min_blocked_ratio * (0.5 if self._blocked else 1.0)  # hysteresis
        self._blocked = old.size / self._region_px >= need
        if not self._blocked:
            return ExitObservation(ExitState.CLEAR, ratio, None)
        since = ts - float(np.percentile(old, 75))
        return ExitObservation(ExitState.BLOCKED, ratio, since)

    def static_mask(self) -> Mask:
        """Pixels (working size) at rest at least ``settle_s``: for snapshots and debugging."""
        return self._static_s >= self.params.settle_s


def _clean(mask: Mask, kernel: NDArray[np.uint8]) -> Mask:
    """Drop isolated noise pixels and close small gaps inside objects."""
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    return np.asarray(m) > 0


def _ncc(a: Floats, b: Floats) -> float:
    a0 = a - a.mean()
    b0 = b - b.mean()
    den = math.sqrt(float((a0 * a0).sum()) * float((b0 * b0).sum()))
    return float((a0 * b0).sum()) / den if den > 0 else 0.0
