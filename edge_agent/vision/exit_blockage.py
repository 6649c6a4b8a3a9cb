"""Exit-blockage detection: is an object left standing in an exit region? (issues 3 and 11)

Pure and stateful per exit: :meth:`ExitBlockageDetector.update` takes a BGR frame and its
timestamp and returns an :class:`ExitObservation`. It never reads a clock or a camera, so it
is tested with synthetic numpy frames and benchmarked on recorded clips (``bench/vision.py``).

Method (an abandoned-object detector with a dual background, see ``docs/edge-agent-vision.md``):

1. Work on a small grey image (``work_width`` pixels wide). Take its logarithm and subtract a
   wide Gaussian blur of it: a multiplicative, spatially smooth illumination (daylight drift,
   lamp pools) becomes an additive, smooth term in the log and is removed by the high-pass.
2. The empty scene: the ``reference`` picture when there is one; otherwise the per-pixel
   median of the first ``learn_s`` seconds (people who walk are not in it).
3. Two background models of that image: a long-term one that learns only where it sees
   background, so it is *frozen* under anything foreign and an obstacle never fades into it,
   and a short-term one (``short_tau_s``) that absorbs whatever stands still for a few seconds.
4. A pixel is *static foreground* when it differs from the long-term model but not from the
   short-term one. Each pixel accumulates how long it has been at rest; hidden time is
   credited back when the same thing (same appearance) is seen at rest again, a different
   thing restarts the clock (``blocked_since`` is the blocking object's own rest time).
5. Objects: connected blobs of pixels at rest for ``settle_s``. A blob is not an object when
   a person is found on it (OpenCV's HOG people detector, run on resting blobs only), and it
   is absorbed into the background when it shows no object: a *ghost* (the background has an
   outline there the current view does not: something that was in the learnt scene has gone)
   or *see-through* (the floor's own texture is still seen there: light, a shadow), or, where the
   exit has a ``door`` polygon, *the door's state* (nearly all of it on the door leaf's picture,
   less than an object's size on the floor in front: a door propped open or closed again).
6. The exit is ``blocked`` when one blob has at least ``min_object_px`` pixels in the region
   at rest for ``persistence_s``; the observation gives that blob's box.
7. ``unknown`` when the view is unusable: too dark, no texture, or the picture no longer
   matches the learnt background as a whole (the camera was moved; after ``relearn_s`` the
   models are learnt again from the new view).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from protocol import ExitState  # the contract's states: clear, blocked, unknown

Frame = NDArray[np.uint8]
Floats = NDArray[np.float32]
Mask = NDArray[np.bool_]
Polygon = Sequence[tuple[float, float]] | Sequence[Sequence[float]]
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels
DOOR_SLACK_PX = 1  # working pixels the door polygon is widened by


@dataclass(frozen=True)
class ExitObservation:
    state: ExitState
    blocked_ratio: float  # share of the region covered by object pixels at rest >= persistence (0..1)
    blocked_since: float | None  # when the blocking object came to rest (only when blocked)
    reason: str = ""  # unknown: "dark", "no texture", "camera moved"; clear: "learning" at start
    box: Box | None = None  # the blocking blob's box in frame pixels (only when blocked)
    blob_px: int = 0  # that blob's pixels in the region at rest >= persistence (working pixels)


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
    learn_s: float = 4.0  # without a reference: the empty scene is the median of this many seconds
    learn_samples: int = 12  # ... of at most this many frames spread over them
    occlusion_decay: float = 0.5  # static time lost per second while covered, before settle_s at rest
    clear_s: float = 1.0  # background seen this long again at a pixel: the object there has gone
    same_k: float = 2.5  # seen at rest again within this many thresholds of how it looked: the same thing
    credit_cap_s: float = 3.0  # a pixel coming to rest is credited the time it was still, up to this
    global_change: float = 0.25  # more of the view than this changing at once: a lighting step, hold
    light_step: float = 0.06  # mean brightness changing more than this between frames: a lighting step, hold
    settle_s: float = 2.0  # at rest this long: part of a resting blob
    min_object_px: int = 24  # working pixels (160 wide) of one blob in the region that make an object
    link_px: int = 2  # resting pixels this close (working pixels) belong to one blob
    person_check: bool = True  # run the HOG people detector on resting blobs
    person_check_s: float = 1.0  # the same blob is checked at most this often ...
    person_recheck_s: float = 8.0  # ... and at least this often (the interval doubles while nobody is found)
    person_hold_s: float = 20.0  # a person mark not confirmed again (HOG or twitches) for this long is dropped
    person_at_rest: float = 0.0  # share of the upper body found by HOG that must be at rest to mark it
    person_rest_slack_s: float = 3.0  # a person's pixels come to rest within this of their upper body
    person_hit: float = 0.0  # HOG SVM score a detection needs
    person_keep: float = 0.5  # a person mark is dropped when less than this share of its blob is left
    heal_s: float = 3.0  # a resting blob that is a ghost, see-through or the door is absorbed after this long
    door_share: float = 0.9  # a resting blob with this share of its pixels on the door leaf is the door's state
    ghost_ratio: float = 2.0  # ghost: how unlike its surroundings the background is in the blob / the view
    ghost_flat: float = 8.0  # ... and only where the view is this close to the floor around it (grey levels)
    see_through_ncc: float = 0.55  # see-through: texture correlation with the background in the blob
    see_through_texture: float = 3.0  # see-through needs floor texture of at least this many noise sigmas
    see_through_rough: float = 0.02  # ... and at most this share of it differs by more than a smooth term
    twitch_k: float = 1.5  # a twitch is a change of at least this many foreground thresholds ...
    twitch_min_px: int = 3  # ... over at least this many working pixels ...
    twitch_after_s: float = 3.0  # twitches count on pixels at rest settle_s + this long
    twitch_px: int = 12  # a motion blob this small (working pixels) next to resting pixels is a twitch
    alive_s: float = 10.0  # twitches are remembered this long (decay time constant)
    alive_peak: float = 0.0  # ... and one spot of it twitched about this many times (fidgeting, not passing)
    alive_score: float = 8.0  # a resting blob with this many recent twitches is alive: a person, not an object
    release_s: float = 3.0  # pixels left when a person mark is dropped count only after resting this long again
    dark_level: float = 10.0  # mean grey (0..255) of the region below this: "dark"
    min_texture: float = 1.5  # grey std-dev of the whole view below this: "no texture"
    moved_ncc: float = 0.4  # correlation with the long-term background below this: "camera moved"
    relearn_s: float = 10.0  # after the camera moved this long, learn the new view
    max_dt_s: float = 2.0  # a gap in the frames longer than this counts as this long


def _alpha(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0


@dataclass
class _PersonMark:
    pixels: int  # how many pixels the mark covered when it was made (or at most since)
    ts: float
    box: tuple[int, int, int, int]  # working pixels x0, y0, x1, y1 of the person found
    since: float = -math.inf  # when the person came to rest: what rested before them is not them


@dataclass
class _Counters:
    person_checks: int = 0
    persons_found: int = 0
    absorbed_ghost: int = 0
    absorbed_see_through: int = 0
    absorbed_startup: int = 0
    absorbed_door: int = 0
    alive_marks: int = 0
    learnt: list[str] = field(default_factory=list)


_HOG: cv2.HOGDescriptor | None = None


def _hog() -> cv2.HOGDescriptor:
    """OpenCV 4.x's built-in Dalal-Triggs people detector (its coefficients are in the library)."""
    global _HOG  # noqa: PLW0603 - one descriptor per process, built on first use
    if _HOG is None:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        _HOG = hog
    return _HOG


class ExitBlockageDetector:
    """Per-exit state; feed every frame of the exit's camera in time order.

    ``region`` is the exit polygon in pixels of frames of ``frame_size`` (width, height).
    ``reference``: an optional clear-reference frame (the exit with nothing in it); without
    it, the median of the first ``learn_s`` seconds is taken as the empty scene.
    """

    def __init__(self, region: Polygon, frame_size: tuple[int, int], persistence_s: float = 30.0,
                 params: BlockageParams | None = None, reference: Frame | None = None,
                 door: Polygon | None = None) -> None:
        self.params = params or BlockageParams()
        self.persistence_s = persistence_s
        self.frame_size = frame_size
        width, height = frame_size
        p = self.params
        self._scale = p.work_width / width
        self._size = (p.work_width, max(8, round(height * self._scale)))
        self._region: Mask = self._fill(region)
        # The door leaf's picture (the doorway as the camera sees it): what changes there alone is
        # the door's state (propped open, closed again), not an object standing in the exit.
        self._door = self._door_mask(door) if door is not None else None
        self._region_px = max(1, int(self._region.sum()))
        self._kernel: NDArray[np.uint8] = np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), np.uint8)
        self._long: Floats | None = None
        self._long_grey: Floats | None = None
        self._short: Floats | None = None
        self._prev: Floats | None = None
        shape = (self._size[1], self._size[0])
        self._static_s: Floats = np.zeros(shape, np.float32)  # seconds at rest, per pixel
        self._still_s: Floats = np.zeros(shape, np.float32)  # seconds without frame-to-frame motion
        self._bg_s: Floats = np.zeros(shape, np.float32)  # seconds the long-term background is seen
        self._fg_s: Floats = np.zeros(shape, np.float32)  # seconds the pixel has been foreground
        self._hidden_s: Floats = np.zeros(shape, np.float32)  # seconds a pixel at rest has been covered
        self._rest_tex: Floats = np.zeros(shape, np.float32)  # what the pixel looked like at rest
        self._person: NDArray[np.int32] = np.zeros(shape, np.int32)  # person mark id per pixel (0: none)
        self._marks: dict[int, _PersonMark] = {}
        self._released: Floats = np.full(shape, -np.inf, np.float32)  # when a person mark left the pixel
        # Pixels whose learnt background was behind a person during the first seconds: never seen empty.
        self._unverified: Mask = np.zeros(shape, np.bool_)
        self._twitch_n: Floats = np.zeros(shape, np.float32)  # recent small motions at resting pixels
        self._step: Floats = np.zeros(shape, np.float32)
        self._next_mark = 1
        self._checked: list[tuple[Box, float, float]] = []  # person checks: (working box, next due, interval)
        self._learning: list[tuple[NDArray[np.uint8], Frame]] = []
        self._learning_ends: list[tuple[NDArray[np.uint8], Frame]] = []
        self._learn_t0: float | None = None
        self._last_sample = -math.inf
        self._learnt_frame: Frame | None = None
        self._learnt_frames: list[Frame] = []
        self._last_ts: float | None = None
        self._now = 0.0
        self._noise = 0.0  # sensor noise sigma of the texture image, measured on the last frame
        self._moved_s = 0.0
        self._level = 0.0  # mean grey of the previous frame
        self._blocked = False
        self.counters = _Counters()
        self._labels: NDArray[np.int32] = np.zeros(shape, np.int32)
        self._deciding: int = 0
        if reference is not None:
            self.accept_clear(reference)

    # ------------------------------------------------------------------ image

    def _fill(self, polygon: Polygon) -> Mask:
        """A polygon in frame pixels as a mask of working pixels."""
        mask = np.zeros((self._size[1], self._size[0]), np.uint8)
        pts = np.round(np.asarray(polygon, np.float64) * self._scale * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], (255,), cv2.LINE_8, 4)
        return mask > 0

    def _door_mask(self, door: Polygon) -> Mask:
        """The door polygon in the region, widened a pixel: a polygon drawn by hand misses the jambs."""
        reach = 2 * DOOR_SLACK_PX + 1
        leaf = cv2.dilate(self._fill(door).astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0
        return leaf & self._region

    def _grey(self, frame: Frame) -> NDArray[np.uint8]:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        small = cv2.resize(grey, self._size, interpolation=cv2.INTER_AREA)
        return np.asarray(small, np.uint8)

    def _texture(self, grey: NDArray[np.uint8]) -> Floats:
        """Log-intensity minus its wide blur: edges and texture, without smooth illumination."""
        log = np.log(grey.astype(np.float32) + np.float32(self.params.log_offset))
        log = cv2.GaussianBlur(log, (3, 3), 0)
        return np.asarray(log - cv2.GaussianBlur(log, (0, 0), self.params.highpass_sigma), np.float32)

    def _learn(self, grey: NDArray[np.uint8], why: str) -> None:
        texture = self._texture(grey)
        self._long = texture.copy()
        self._long_grey = grey.astype(np.float32)
        self._short = texture.copy()
        self._prev = texture.copy()
        for timer in (self._static_s, self._still_s, self._bg_s, self._fg_s, self._hidden_s):
            timer[:] = 0.0
        self._person[:] = 0
        self._unverified[:] = False
        self._marks.clear()
        self._checked.clear()
        self._learning.clear()
        self._moved_s = 0.0
        self._level = float(grey.mean())
        self._blocked = False
        self.counters.learnt.append(why)

    def accept_clear(self, frame: Frame) -> None:
        """Take ``frame`` as the empty exit (a reference picture, or an operator's "it is clear")."""
        self._learnt_frame = np.asarray(frame, np.uint8).copy()
        self._learn(self._grey(frame), "reference")

    @property
    def learnt_frame(self) -> Frame | None:
        """The empty scene as a full-size picture once learnt (the median of the first seconds or the
        reference): what the agent saves as the exit's reference when it has none yet."""
        if self._learnt_frame is None and self._learnt_frames:
            self._learnt_frame = np.median(np.stack(self._learnt_frames), axis=0).astype(np.uint8)
            self._learnt_frames = []
        return self._learnt_frame

    @property
    def learning(self) -> bool:
        return self._long is None

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
        if self._long is None:
            return self._learn_step(grey, frame, ts)
        texture = self._texture(grey)
        assert self._short is not None
        assert self._prev is not None
        assert self._long_grey is not None
        long_bg, short_bg, prev = self._long, self._short, self._prev

        # Robust noise sigma of the texture image from the frame-to-frame difference.
        step = np.abs(texture - prev)
        self._step = step
        noise = float(np.median(step)) * 1.4826 / math.sqrt(2.0)
        self._noise = noise
        threshold = max(p.fg_threshold, p.noise_k * noise)
        if _ncc(texture, long_bg) < p.moved_ncc:
            self._moved_s += dt
            self._prev = texture
            if self._moved_s >= p.relearn_s:
                self._learnt_frame = np.asarray(frame, np.uint8).copy()
                self._learn(grey, "camera moved")
            return ExitObservation(ExitState.UNKNOWN, 0.0, None, "camera moved")
        self._moved_s = 0.0

        raw_fg = np.abs(texture - long_bg) > threshold
        fg_long = _clean(raw_fg, self._kernel)
        fg_short = np.abs(texture - short_bg) > threshold
        motion = step > threshold

        if self._accumulate(grey, texture, dt, fg_long, fg_short, motion, threshold):
            # Background learning: the short-term model everywhere, the long-term one only where
            # it sees background and nothing moves (frozen under any foreground).
            cv2.accumulateWeighted(texture, short_bg, _alpha(dt, p.short_tau_s))
            # Not where anything differs, however thin (an object's outline, which the cleaning of
            # fg_long drops), nor next to it: the background must never learn part of an object.
            busy = cv2.dilate((raw_fg | motion).astype(np.uint8), self._kernel, iterations=1)
            learn = (busy == 0).astype(np.uint8)
            a = _alpha(dt, p.long_tau_s)
            cv2.accumulateWeighted(texture, long_bg, a, mask=learn)
            cv2.accumulateWeighted(grey.astype(np.float32), self._long_grey, a, mask=learn)
            self._prev = texture
        return self._decide(frame, grey, texture, ts)

    def _learn_step(self, grey: NDArray[np.uint8], frame: Frame, ts: float) -> ExitObservation:
        """No background yet: collect frames for ``learn_s`` and take their per-pixel median."""
        p = self.params
        if self._learn_t0 is None:
            self._learn_t0 = ts
        if ts - self._last_sample >= p.learn_s / max(1, p.learn_samples) * 0.999:
            self._learning.append((grey, np.asarray(frame, np.uint8).copy()))
            self._last_sample = ts
        if ts - self._learn_t0 >= p.learn_s or p.learn_s <= 0:
            self._learning_ends = [self._learning[0], self._learning[-1]]
            greys = np.stack([g for g, _ in self._learning])
            # A few of them, whose median is made when asked for (the agent saves it as the reference).
            self._learnt_frames = [f for _, f in self._learning][::3]
            median = np.median(greys, axis=0).astype(np.uint8)
            self._learn(median, "median of the first seconds")
            if p.person_check:
                # People who stood still through the first seconds are in the median: where they
                # stood, the floor has not been seen yet (healed once they leave, see _heal).
                for _, sample in (self._learning_ends[0], self._learning_ends[-1]):
                    for x0, y0, x1, y1 in self._people_boxes(sample):
                        self._unverified[y0:y1, x0:x1] = True
            self._learning_ends = []
            self._short = self._texture(grey)
            self._prev = self._short.copy()
            self._level = float(grey.mean())
        return ExitObservation(ExitState.CLEAR, 0.0, None, "learning")

    def _accumulate(self, grey: NDArray[np.uint8], texture: Floats, dt: float,
                    fg_long: Mask, fg_short: Mask, motion: Mask, threshold: float) -> bool:
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
        # from when the short-term background absorbed it (which takes ~short_tau_s).
        new = static & (acc <= 0)
        acc[new] = np.minimum(np.minimum(still[new], fg_age[new]), p.credit_cap_s)
        self._rest_tex[new] = texture[new]
        acc[static & ~new] += dt
        # Covered (something moves over it): a pixel at rest for settle_s holds its clock and
        # keeps the time it was hidden. When it is seen at rest again, the hidden time is credited
        # if it looks as it did (the object was still there behind the passer-by); if it looks
        # different, something else came to rest there (a bag where a person stood): its clock
        # starts again, so blocked_since is never borrowed from what stood there before.
        covered = fg_long & ~static
        hidden = self._hidden_s
        held = covered & (acc >= p.settle_s)
        hidden[held] += dt
        back = static & (hidden > 0)
        same = back & (np.abs(texture - self._rest_tex) <= p.same_k * threshold)
        other = back & ~same
        acc[same] += hidden[same]
        acc[other] = np.minimum(still[other], p.credit_cap_s)
        self._rest_tex[other] = texture[other]
        self._person[other] = 0
        hidden[back] = 0.0
        fading = covered & ~held
        acc[fading] = np.maximum(acc[fading] - p.occlusion_decay * dt, 0.0)
        gone = seen >= p.clear_s
        acc[gone] = 0.0
        hidden[gone] = 0.0
        self._person[acc <= 0] = 0
        self._twitch(self._step > p.twitch_k * threshold, acc, dt)
        return True

    def _twitch(self, motion: Mask, acc: Floats, dt: float) -> None:
        """Small motions on or next to resting pixels (a seated or standing person fidgets, turns the
        head, moves a hand; a bag never does). A passer-by's motion is one large blob: not a twitch."""
        p = self.params
        self._twitch_n *= np.float32(math.exp(-dt / p.alive_s)) if dt > 0 else np.float32(1.0)
        if not motion.any():
            return
        _, mlabels, mstats, _ = cv2.connectedComponentsWithStats(motion.astype(np.uint8), connectivity=8)
        area = mstats[:, cv2.CC_STAT_AREA]
        small = (area >= p.twitch_min_px) & (area <= p.twitch_px)  # 1-2 pixels: noise
        small[0] = False
        twitch = small[mlabels]
        if not twitch.any():
            return
        # Someone walking by (even seen in pieces, through the frame of a bicycle) moves much more
        # around the spot than a twitch does.
        local = cv2.boxFilter(motion.astype(np.float32), -1, (21, 21), normalize=False)
        twitch &= local <= 2 * p.twitch_px
        near = cv2.dilate(twitch.astype(np.uint8), self._kernel, iterations=1) > 0
        # Only on what has rested a while (not the moment an object is set down beside its carrier).
        hit = near & (acc >= p.settle_s + p.twitch_after_s)
        self._twitch_n[hit] += 1.0

    # ------------------------------------------------------------------ blobs

    def _decide(self, frame: Frame, grey: NDArray[np.uint8], texture: Floats, ts: float) -> ExitObservation:
        p = self.params
        self._now = ts
        acc = self._static_s
        settled_mask = acc >= p.settle_s
        # Blobs are labelled on the resting pixels grown by link_px, so that the head, shoulders and
        # legs of one standing person, or the frame of a bicycle, are one blob; only resting pixels count.
        grown = cv2.dilate(settled_mask.astype(np.uint8), self._kernel, iterations=p.link_px)
        n, raw_labels, grown_stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        labels: NDArray[np.int32] = np.asarray(raw_labels, np.int32)
        labels[~settled_mask] = 0
        stats = np.asarray(grown_stats, np.int32).copy()
        stats[:, cv2.CC_STAT_AREA] = np.bincount(labels.ravel(), minlength=n)
        self._labels = labels
        self._extend_marks(labels, settled_mask)
        self._deciding = 0
        if n <= 1:
            self._blocked = False
            self._drop_marks()
            return ExitObservation(ExitState.CLEAR, 0.0, None)
        in_region = self._region
        lab_region = labels[in_region]
        region_count = np.bincount(lab_region, minlength=n)
        self._drop_marks()
        # Absorb blobs that show no object (ghosts, light) once they have rested heal_s.
        for k in range(1, n):
            if self._heal(k, labels, stats[k], grey, texture):
                region_count[k] = 0
        person = (self._person > 0) | (ts - self._released < p.release_s)
        self._find_people(n, labels, stats, region_count, frame, ts)
        person = (self._person > 0) | (ts - self._released < p.release_s)
        old = (acc >= self.persistence_s) & in_region & ~person
        old_count = np.bincount(labels[old], minlength=n)
        old_count[0] = 0
        self._released[acc <= 0] = -np.inf
        need = p.min_object_px * (0.5 if self._blocked else 1.0)  # hysteresis
        best = int(np.argmax(old_count))
        self._blocked = bool(old_count[best] >= need)
        deciding = (labels == best) & old if self._blocked else np.zeros_like(old)
        ratio = float(np.count_nonzero(deciding)) / self._region_px
        if not self._blocked:
            return ExitObservation(ExitState.CLEAR, 0.0, None)
        self._deciding = best
        since = ts - float(np.median(acc[deciding]))
        x, y, w, h = (int(v) for v in stats[best][:4])
        s = self._scale
        box = (math.floor(x / s), math.floor(y / s), math.ceil(w / s), math.ceil(h / s))
        return ExitObservation(ExitState.BLOCKED, ratio, since, box=box, blob_px=int(old_count[best]))

    def _find_people(self, n: int, labels: NDArray[np.int32], stats: NDArray[np.int32],
                     region_count: NDArray[np.int64], frame: Frame, ts: float) -> None:
        """Mark resting blobs in the region that are people: twitching, or the HOG detector finds one."""
        p = self.params
        # Alive: a resting blob that keeps twitching is people (a seated audience, people talking).
        alive = np.bincount(labels.ravel(), weights=self._twitch_n.ravel(), minlength=n)
        peak = np.zeros(n, np.float32)
        np.maximum.at(peak, labels.ravel(), self._twitch_n.ravel())
        for k in range(1, n):
            if alive[k] >= p.alive_score and peak[k] >= p.alive_peak and region_count[k] > 0:
                self._mark(labels == k, stats[k], ts)
        # The people detector on blobs that could soon decide (enough resting pixels in the region).
        candidates = [k for k in range(1, n) if region_count[k] >= p.min_object_px]
        if not (p.person_check and candidates):
            return
        settled_free = self._region & (self._person == 0) & (self._static_s >= p.settle_s)
        unmarked = np.bincount(labels[settled_free], minlength=n)
        # Marks are confirmed again before they run out (person_hold_s).
        stale = [m for m, mark in self._marks.items() if ts - mark.ts > p.person_hold_s / 3]
        ageing = np.zeros(n, np.bool_)
        if stale:
            ageing[np.unique(labels[np.isin(self._person, stale)])] = True
        for k in sorted(candidates, key=lambda j: -int(unmarked[j])):
            if unmarked[k] >= p.min_object_px or ageing[k]:
                self._check_person(k, labels, stats[k], frame, ts)

    def _extend_marks(self, labels: NDArray[np.int32], settled: Mask) -> None:
        """Resting pixels inside the box a marked person was found in are that person too (their arm
        or hip comes to rest a little later than the rest of them), as long as the mark holds."""
        for mark_id, mark in self._marks.items():
            x0, y0, x1, y1 = mark.box
            rest_start = self._now - self._static_s[y0:y1, x0:x1]
            grow = settled[y0:y1, x0:x1] & (self._person[y0:y1, x0:x1] == 0) \
                & (rest_start >= mark.since - self.params.person_rest_slack_s)
            if grow.any():
                self._person[y0:y1, x0:x1][grow] = mark_id
                mark.pixels = max(mark.pixels, int(np.count_nonzero(self._person[y0:y1, x0:x1] == mark_id)))

    def _drop_marks(self) -> None:
        """A person mark holds while most of what it was made on still rests (the person is still
        there); when the person walks off, whatever is left of the mark (the bag at their feet) is
        looked at afresh."""
        if not self._marks:
            return
        counts = np.bincount(self._person.ravel(), minlength=self._next_mark)
        alive = np.bincount(self._person.ravel(), weights=self._twitch_n.ravel(), minlength=self._next_mark)
        for mark_id, mark in list(self._marks.items()):
            if alive[mark_id] >= self.params.alive_score:
                mark.ts = self._now  # still twitching: still a person
            if counts[mark_id] < self.params.person_keep * mark.pixels \
                    or self._now - mark.ts > self.params.person_hold_s:
                left = self._person == mark_id
                self._person[left] = 0
                self._released[left] = self._now  # the last of a leaving person, or what they left
                del self._marks[mark_id]

    def _heal(self, k: int, labels: NDArray[np.int32], stat: NDArray[np.int32], grey: NDArray[np.uint8],
              texture: Floats) -> bool:
        """Absorb blob ``k`` into the long-term background if it shows no object."""
        p = self.params
        x, y, w, h, area = (int(v) for v in stat)
        x0, y0 = max(0, x - 3), max(0, y - 3)
        x1, y1 = min(labels.shape[1], x + w + 3), min(labels.shape[0], y + h + 3)
        blob = (labels[y0:y1, x0:x1] == k) & (self._person[y0:y1, x0:x1] == 0)
        area = int(np.count_nonzero(blob))
        acc = self._static_s[y0:y1, x0:x1]
        # Only a blob that has rested heal_s and that nothing has moved over (or next to) for as
        # long: the tests below look at the whole blob and its surroundings, undisturbed.
        if area < p.min_object_px or float(np.median(acc[blob])) < p.heal_s \
                or float(np.median(self._still_s[y0:y1, x0:x1][blob])) < p.heal_s:
            return False
        if self._door is not None and self._is_door(blob, self._door[y0:y1, x0:x1], self._region[y0:y1, x0:x1]):
            self._absorb(blob, x0, y0, x1, y1, grey, texture)
            labels[y0:y1, x0:x1][blob] = 0
            self.counters.absorbed_door += 1
            return True
        unverified = self._unverified[y0:y1, x0:x1]
        if np.count_nonzero(unverified & blob) >= 0.5 * np.count_nonzero(blob):
            # Where a person stood in the first seconds: the floor they hid, now seen. Only that part.
            part = blob & unverified
            # The rest of the blob, if it came to rest at the same moment, is the same thing (the
            # door they held open, closing again when they left); what rested at another time is not.
            rest_start = self._now - acc
            t_ref = float(np.median(rest_start[part]))
            part |= blob & (np.abs(rest_start - t_ref) <= p.person_rest_slack_s)
            self._absorb(part, x0, y0, x1, y1, grey, texture)
            unverified[part] = False
            self.counters.absorbed_startup += 1
            return not (blob & ~part).any()
        assert self._long is not None
        assert self._long_grey is not None
        long_bg = self._long[y0:y1, x0:x1]
        tex = texture[y0:y1, x0:x1]
        why = ""
        if self._see_through(tex, long_bg, blob):
            why = "see-through"
        else:
            # Ghost: inside the blob, the current view looks like the floor around it and the
            # background does not (what the background holds there has gone). Grey levels, not the
            # high-pass texture, whose halo around an object would make any blob look uniform.
            outer = (cv2.dilate(blob.astype(np.uint8), self._kernel, iterations=3) > 0) & ~blob
            if outer.any():
                cur = grey[y0:y1, x0:x1].astype(np.float32)
                bg = self._long_grey[y0:y1, x0:x1]
                flat = _unlike(cur, blob, outer)
                if flat <= p.ghost_flat and _unlike(bg, blob, outer) >= max(p.ghost_ratio * flat + 6.0, 15.0):
                    why = "ghost"
        if not why:
            return False
        self._absorb(blob, x0, y0, x1, y1, grey, texture)
        labels[y0:y1, x0:x1][blob] = 0
        if why == "ghost":
            self.counters.absorbed_ghost += 1
        else:
            self.counters.absorbed_see_through += 1
        return True

    def _is_door(self, blob: Mask, door: Mask, region: Mask) -> bool:
        """The door's own state (propped open, closed again): of the blob's pixels in the exit region,
        nearly all on the door leaf's picture and less than an object's size on the floor in front.
        Whatever stands in the exit stands on that floor, its base in front of the threshold."""
        inside = blob & region
        on_door = int(np.count_nonzero(inside & door))
        on_floor = int(np.count_nonzero(inside)) - on_door
        return on_floor < self.params.min_object_px and on_door >= self.params.door_share * (on_door + on_floor)

    def _people_boxes(self, frame: Frame) -> list[tuple[int, int, int, int]]:
        """People around the exit region (working pixels x0, y0, x1, y1, with a margin): run once at start."""
        fh, fw = frame.shape[:2]
        ys, xs = np.nonzero(self._region)
        s0 = self._scale
        # The region's box, with room above it for whole people standing in it.
        rx0, rx1 = float(xs.min()) / s0, float(xs.max() + 1) / s0
        ry0, ry1 = float(ys.min()) / s0, float(ys.max() + 1) / s0
        side, up = 0.3 * (rx1 - rx0), 0.8 * (ry1 - ry0)
        cx0, cx1 = max(0, round(rx0 - side)), min(fw, round(rx1 + side))
        cy0, cy1 = max(0, round(ry0 - up)), min(fh, round(ry1 + 0.1 * (ry1 - ry0)))
        zoom = max(1.0, min(2.0, 720.0 / fh, 600.0 / math.sqrt(max((cx1 - cx0) * (cy1 - cy0), 1))))
        image = frame[cy0:cy1, cx0:cx1]
        if zoom > 1.0:
            image = np.asarray(cv2.resize(image, None, fx=zoom, fy=zoom), np.uint8)
        rects, _ = _hog().detectMultiScale(image, winStride=(8, 8), padding=(16, 16), scale=1.1)
        self.counters.person_checks += 1
        h, w = self._static_s.shape
        out = []
        for rx, ry, rw, rh in rects:
            x0, y0 = (rx - 0.1 * rw) / zoom + cx0, (ry - 0.05 * rh) / zoom + cy0
            x1, y1 = (rx + 1.1 * rw) / zoom + cx0, (ry + 1.1 * rh) / zoom + cy0
            out.append((max(0, math.floor(x0 * s0)), max(0, math.floor(y0 * s0)),
                        min(w, math.ceil(x1 * s0)), min(h, math.ceil(y1 * s0))))
        return out

    def _see_through(self, tex: Floats, bg: Floats, blob: Mask) -> bool:
        """The floor's own texture is still seen in the blob, changed only by a smooth term (light,
        a shadow, an object's halo in the high-pass image): the background has texture there, the
        view correlates with it, and what differs between them is smooth almost everywhere."""
        p = self.params
        if float(bg[blob].std()) < p.see_through_texture * self._noise:
            return False  # a plain floor: nothing to see through, so nothing to tell light from an object
        if _ncc(tex[blob], bg[blob]) < p.see_through_ncc:
            return False
        diff = tex - bg
        rough = np.abs(diff - cv2.GaussianBlur(diff, (0, 0), 2.0)) > p.fg_threshold
        # An object hides the floor: where it stands, the difference is not smooth. Even a small
        # object inside a large, smooth-looking blob (its halo in the high-pass image) fails this.
        rough_px = float(np.count_nonzero(rough & blob))
        return rough_px <= p.see_through_rough * float(np.count_nonzero(blob)) and rough_px < p.min_object_px / 4

    def _absorb(self, part: Mask, x0: int, y0: int, x1: int, y1: int, grey: NDArray[np.uint8],
                texture: Floats) -> None:
        """The current view of ``part`` (a mask of the window x0:x1, y0:y1) becomes background."""
        assert self._long is not None
        assert self._long_grey is not None
        self._long[y0:y1, x0:x1][part] = texture[y0:y1, x0:x1][part]
        self._long_grey[y0:y1, x0:x1][part] = grey[y0:y1, x0:x1][part]
        self._static_s[y0:y1, x0:x1][part] = 0.0
        self._hidden_s[y0:y1, x0:x1][part] = 0.0
        self._labels[y0:y1, x0:x1][part] = 0

    def _mark(self, blob: Mask, stat: NDArray[np.int32], ts: float) -> None:
        """Mark the unmarked resting pixels of ``blob`` as a person (a new mark)."""
        twitched = cv2.dilate((self._twitch_n > 0.5).astype(np.uint8), self._kernel, iterations=4) > 0
        under = blob & (self._person == 0) & twitched
        if not under.any():
            return
        x, y, w, h = (int(v) for v in stat[:4])
        mark = self._next_mark
        self._next_mark += 1
        self._person[under] = mark
        since = float(np.min(ts - self._static_s[under]))
        self._marks[mark] = _PersonMark(int(np.count_nonzero(under)), ts, (x, y, x + w, y + h), since)
        self.counters.alive_marks += 1

    def _person_crop(self, frame: Frame, x: int, y: int, w: int, h: int
                     ) -> tuple[NDArray[np.uint8], float, int, int, int, int] | None:
        """The frame around a blob (working box x, y, w, h) for the people detector: the crop, its
        zoom, its top-left corner in the frame and the padding added to it."""
        s = self._scale
        fh, fw = frame.shape[:2]
        # A crop around the blob with room for a whole standing person above and beside it (the
        # resting part may be only their legs or torso), scaled so that the blob is at least
        # ~140 pixels high (HOG's window is 64x128; people far away are small).
        bx, by, bw, bh = x / s, y / s, w / s, h / s
        side = 0.6 * max(bh, bw)
        cx0, cx1 = max(0, round(bx - side)), min(fw, round(bx + bw + side))
        cy0, cy1 = max(0, round(by - 1.4 * bh)), min(fh, round(by + bh + 0.3 * bh))
        if cx1 - cx0 < 8 or cy1 - cy0 < 16:
            return None
        # Bounded: at most ~300x300 pixels go to the detector (its cost grows with the area).
        zoom = min(3.0, max(1.0, 110.0 / max(bh, 1.0)), 300.0 / math.sqrt(max((cy1 - cy0) * (cx1 - cx0), 1)))
        zoom = max(zoom, 1.0)
        crop: NDArray[np.uint8] = frame[cy0:cy1, cx0:cx1]
        if zoom > 1.0:
            crop = np.asarray(cv2.resize(crop, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR), np.uint8)
        if crop.shape[0] < 128 + 16 or crop.shape[1] < 64 + 16:
            pad_y, pad_x = max(0, 144 - crop.shape[0]), max(0, 80 - crop.shape[1])
            crop = np.asarray(cv2.copyMakeBorder(crop, pad_y // 2, pad_y - pad_y // 2, pad_x // 2,
                                                 pad_x - pad_x // 2, cv2.BORDER_REPLICATE), np.uint8)
            off_x, off_y = pad_x // 2, pad_y // 2
        else:
            off_x = off_y = 0
        return crop, zoom, cx0, cy0, off_x, off_y

    def _mark_person(self, under: Mask, bx0: float, by0: float, bx1: float, by1: float, ts: float) -> None:
        """A new person mark on the resting pixels ``under`` the person found (working box bx0..by1)."""
        p = self.params
        under = under & (self._person == 0)
        # A person comes to rest all at once: the pixels of their upper body tell when. What
        # rested well before that (the bicycle they stop beside, the bag at their feet) is not them.
        rest_start = ts - self._static_s
        top = np.zeros_like(under)
        top[max(0, math.floor(by0)):math.ceil(by0 + 0.6 * (by1 - by0)), max(0, math.floor(bx0)):math.ceil(bx1)] = True
        upper = under & top
        if np.count_nonzero(upper) < p.person_at_rest * np.count_nonzero(top):
            return  # someone walking by what rests there (a bicycle's handlebars are not a person at rest)
        since = float(np.median(rest_start[upper])) if upper.any() else -math.inf
        under &= rest_start >= since - p.person_rest_slack_s
        if not under.any():
            return
        mark = self._next_mark
        self._next_mark += 1
        self._person[under] = mark
        person_box = (max(0, math.floor(bx0)), max(0, math.floor(by0)), math.ceil(bx1), math.ceil(by1))
        self._marks[mark] = _PersonMark(int(np.count_nonzero(under)), ts, person_box, since)

    def _check_person(self, k: int, labels: NDArray[np.int32], stat: NDArray[np.int32], frame: Frame,
                      ts: float) -> bool:
        """Run the people detector around resting blob ``k``; mark the pixels under a person found."""
        p = self.params
        x, y, w, h = (int(v) for v in stat[:4])
        box = (x, y, w, h)
        # The same blob (boxes overlapping) is looked at again after person_check_s, then after twice
        # as long each time nobody is found on it, up to person_recheck_s: a bag costs little.
        self._checked = [c for c in self._checked if ts < c[1] + 2 * p.person_recheck_s]
        same = next((i for i, c in enumerate(self._checked) if _iou(box, c[0]) > 0.5), None)
        if same is not None and ts < self._checked[same][1]:
            return False
        interval = p.person_check_s if same is None else min(2 * self._checked[same][2], p.person_recheck_s)
        if same is not None:
            del self._checked[same]
        self.counters.person_checks += 1
        crop_at = self._person_crop(frame, x, y, w, h)
        if crop_at is None:
            return False
        crop, zoom, cx0, cy0, off_x, off_y = crop_at
        s = self._scale
        rects, weights = _hog().detectMultiScale(crop, winStride=(8, 8), padding=(16, 16), scale=1.08)
        found = False
        blob = labels == k
        for (rx, ry, rw, rh), weight in zip(rects, np.ravel(weights), strict=False):
            if float(weight) < p.person_hit:
                continue
            # Back to working pixels; the HOG box has a margin around the person: shrink it a little.
            bx0 = ((rx - off_x + 0.15 * rw) / zoom + cx0) * s
            bx1 = ((rx - off_x + 0.85 * rw) / zoom + cx0) * s
            by0 = ((ry - off_y + 0.05 * rh) / zoom + cy0) * s
            by1 = ((ry - off_y + 0.95 * rh) / zoom + cy0) * s
            under = np.zeros_like(blob)
            under[max(0, math.floor(by0)):math.ceil(by1), max(0, math.floor(bx0)):math.ceil(bx1)] = True
            if not (under & blob).any():
                continue
            for other in set(np.unique(self._person[under]).tolist()) - {0}:
                self._marks[other].ts = ts  # found again: the mark holds
            # The whole resting blob the person is on is them (HOG's box may hold only part of
            # them), except what came to rest well before them (_mark_person).
            under = blob & (self._static_s >= p.settle_s)
            if not under.any():
                continue
            found = True
            self._mark_person(under, min(bx0, x), by0, max(bx1, x + w), max(by1, y + h), ts)
            self.counters.persons_found += 1
        wait = p.person_check_s if found else interval
        self._checked.append((box, ts + wait, wait))
        return found

    # ------------------------------------------------------------------ for snapshots

    def static_mask(self) -> Mask:
        """Pixels (working size) at rest at least ``settle_s``: for snapshots and debugging."""
        return self._static_s >= self.params.settle_s

    def person_mask(self) -> Mask:
        """Pixels (working size) of resting blobs the people detector found a person on."""
        return self._person > 0

    def deciding_mask(self) -> Mask:
        """Pixels (working size) of the blob that made the last decision ``blocked`` (empty otherwise)."""
        if not self._deciding:
            return np.zeros(self._static_s.shape, np.bool_)
        return np.asarray(self._labels == self._deciding, np.bool_)


def draw_observation(frame: Frame, region: Polygon, observation: ExitObservation) -> Frame:
    """The frame with the exit region outlined in red and the blocking blob's box in yellow."""
    image = np.asarray(frame, np.uint8).copy()
    pts = np.round(np.asarray(region, np.float64)).astype(np.int32)
    cv2.polylines(image, [pts], isClosed=True, color=(0, 0, 255), thickness=3)
    if observation.box is not None:
        x, y, w, h = observation.box
        cv2.rectangle(image, (x, y), (x + w, y + h), (0, 255, 255), 2)
        cv2.putText(image, "blocking object", (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
    return image


def _unlike(image: Floats, inside: Mask, around: Mask) -> float:
    """How much the inside of a blob differs from its surroundings in grey level and contrast."""
    a, b = image[inside], image[around]
    return abs(float(a.mean()) - float(b.mean())) + 0.5 * abs(float(a.std()) - float(b.std()))


def _iou(a: Box, b: Box) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


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
