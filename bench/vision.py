"""Exit-blockage detection: per-clip delay, false alarms, precision/recall by frame and frames/s.

    .venv/bin/python -m bench.vision [--clips DIR] [--persistence 30 10] [--footage DIR] [--peer]

Without ``--clips`` the standard synthetic set (``simulators.video``, docs/synthetic-video.md)
is written to a temporary folder first (``--clips DIR`` reuses or fills DIR). Every clip is
decoded once and fed at the agent's pace (:class:`edge_agent.vision.FramePacer`, 5 frames/s
whatever the source's rate) to one detector per persistence time:

* dual: :class:`edge_agent.vision.ExitBlockageDetector` (the one the agent uses);
* peer (``--peer``): :class:`edge_agent.vision.baselines.SingleModelDetector` (one MOG2 background).

The clips' ground truth has no persistence time; the bench applies it: a frame is truly
blocked once its label has been true without a break for the persistence time. Scores are
per analysed frame for the blocked class. A false-alarm clip is one where the detector says
blocked on a frame that is not truly blocked (its first such frame is printed). The delay is
from the first truly blocked frame of a run to the first frame the detector says blocked
(negative: earlier); "after removal" is how long the exit stays blocked once the object's
label ends.

The real clips of ``--footage`` (default ``../shared/footage`` beside the repository; the
README there gives their facts) are people only: any blocked frame is a false alarm. Then a
throughput test: 8 detectors with the person check on, fed 640x480 frames of a person standing
in the exit round-robin on one thread pinned to one core.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_agent.vision import BlockageParams, ExitBlockageDetector, ExitObservation, ExitState, FramePacer
from edge_agent.vision.baselines import SingleModelDetector
from edge_agent.vision.exit_blockage import Frame, Polygon

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FOOTAGE = REPO.parent / "shared" / "footage"


@dataclass(frozen=True)
class RealClip:
    """A real recording with its facts (from the footage folder's README): people only, never blocked."""

    file: str
    region: list[tuple[int, int]]
    credit: str


# The floor around the standing table (768x432), where people stand 10-30 s.
# The open court in front of the seated audience (480x360), the README's suggested polygon.
REAL_CLIPS = [
    RealClip("people-standing-at-table.mp4", [(330, 240), (580, 240), (620, 420), (290, 420)],
             "Intel IoT Devkit sample videos, CC BY 4.0"),
    RealClip("meva-school-gym-G330-annotated-4x.mp4",
             [(140, 205), (260, 195), (400, 168), (470, 175), (470, 260), (415, 300), (415, 360), (190, 360),
              (135, 250)],
             "MEVA dataset (Kitware Inc., IARPA), CC BY 4.0"),
]
CAMERAS = 8
TARGET_FPS = 5.0


CAMERAS = 8
TARGET_FPS = 5.0
ANALYSIS_FPS = 5.0  # the agent's pace (edge_agent.agent.EXIT_ANALYSIS_FPS)


class Detector(Protocol):
    def update(self, frame: Frame, ts: float) -> ExitObservation: ...


Factory = Callable[[Polygon, tuple[int, int], float, Polygon | None], Detector]  # region, size, persistence, door
PARAMS = BlockageParams()  # the dual detector's parameters; --param overrides them
METHODS: dict[str, Factory] = {
    "dual": lambda region, size, persistence, door: ExitBlockageDetector(region, size, persistence, PARAMS,
                                                                         door=door),
    "peer": lambda region, size, persistence, _door: SingleModelDetector(region, size, persistence),
}


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    frames: int = 0
    seconds: float = 0.0  # time spent in update()
    delays: list[float] = field(default_factory=list)
    after_removal: list[float] = field(default_factory=list)
    missed: int = 0  # truly blocked runs never detected
    false_alarm_clips: list[str] = field(default_factory=list)

    def add(self, other: Score) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.frames += other.frames
        self.seconds += other.seconds
        self.delays += other.delays
        self.after_removal += other.after_removal
        self.missed += other.missed
        self.false_alarm_clips += other.false_alarm_clips

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def delay_text(self) -> str:
        if not self.delays and not self.missed:
            return "-"
        text = " ".join(f"{d:+.1f}" for d in self.delays)
        return text + (f" missed {self.missed}" if self.missed else "")

    def removal_text(self) -> str:
        return " ".join(f"{d:.1f}" for d in self.after_removal) or "-"


def persisted(labels: list[bool], fps: float, persistence_s: float, attended: list[bool] | None = None) -> list[bool]:
    """Truly blocked: the label has been true without a break for ``persistence_s`` since the
    object was left (``attended``: someone still stands with it; the clock starts after that)."""
    out: list[bool] = []
    run = 0
    need = round(persistence_s * fps)
    for k, label in enumerate(labels):
        run = run + 1 if label and not (attended and attended[k]) else 0
        out.append(bool(label) and run - 1 >= need)
    return out


def score_clip(name: str, labels: list[bool], truth: list[bool], said: list[bool], times: list[float]) -> Score:
    """Scores over the analysed frames (``times`` in seconds; labels and truth at those frames)."""
    s = Score(frames=len(said))
    first_false: float | None = None
    for t, d, ts in zip(truth, said, times, strict=True):
        s.tp += t and d
        s.fp += d and not t
        s.fn += t and not d
        if d and not t and first_false is None:
            first_false = ts
    if s.fp:
        s.false_alarm_clips.append(f"{name}@{first_false:.1f}s")
    n = len(truth)
    for k in range(n):
        if truth[k] and (k == 0 or not truth[k - 1]):
            start = k
            while start > 0 and labels[start - 1]:
                start -= 1  # the label run this truth belongs to: a detection during it counts
            hit = next((j for j in range(start, n) if said[j] and (labels[j] or truth[j])), None)
            if hit is None:
                s.missed += 1
            else:
                s.delays.append(times[hit] - times[k])
        if k > 0 and labels[k - 1] and not labels[k] and said[k - 1]:
            # The object was taken away: how long does the exit stay blocked?
            end = next((j for j in range(k, n) if not said[j]), None)
            s.after_removal.append((times[end] if end is not None else times[-1]) - times[k])
    return s


def read_frames(path: Path) -> Iterator[Frame]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"cannot open {path}")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield np.asarray(frame, np.uint8)
    finally:
        cap.release()


def paced(path: Path, fps: float) -> Iterator[tuple[int, float, Frame]]:
    """The frames the agent would analyse: (source frame index, timestamp, frame)."""
    pacer = FramePacer(ANALYSIS_FPS)
    for k, frame in enumerate(read_frames(path)):
        ts = k / fps
        if pacer.take(ts):
            yield k, ts, frame


def run_video(path: Path, region: Polygon, size: tuple[int, int], fps: float, persistences: list[float],
              methods: list[str], door: Polygon | None = None,
              ) -> tuple[list[int], list[float], dict[tuple[str, float], tuple[list[bool], float]]]:
    """Feed the paced frames to one detector per method and persistence; their blocked flags and time."""
    keys = [(m, p) for m in methods for p in persistences]
    detectors = {key: METHODS[key[0]](region, size, key[1], door) for key in keys}
    said: dict[tuple[str, float], list[bool]] = {key: [] for key in keys}
    spent = dict.fromkeys(keys, 0.0)
    index: list[int] = []
    times: list[float] = []
    for k, ts, frame in paced(path, fps):
        index.append(k)
        times.append(ts)
        for key, det in detectors.items():
            start = time.perf_counter()
            obs = det.update(frame, ts)
            spent[key] += time.perf_counter() - start
            said[key].append(obs.state is ExitState.BLOCKED)
    return index, times, {key: (said[key], spent[key]) for key in keys}


def bench_clips(clips: Path, persistences: list[float], methods: list[str],
                only: list[str] | None, use_door: bool = True) -> dict[tuple[str, float], Score]:
    totals = {(m, p): Score() for m in methods for p in persistences}
    print(f"{'clip':24} {'method':6} {'pers':>4} {'P':>6} {'R':>6} {'TP':>4} {'FP':>4} {'FN':>4} {'fps':>6}  "
          "delay s | blocked after removal s")
    for meta_path in sorted(clips.glob("*.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if only and meta["name"] not in only:
            continue
        fps = float(meta["fps"])
        labels_all = [bool(b) for b in meta["blocked"]]
        attended = [bool(b) for b in meta["attended"]] if "attended" in meta else None
        region = [(float(x), float(y)) for x, y in meta["exit_region"]]
        door = [(float(x), float(y)) for x, y in meta["door"]] if meta.get("door") and use_door else None
        index, times, results = run_video(clips / meta["video"], region, (meta["width"], meta["height"]), fps,
                                          persistences, methods, door)
        for (m, pers), (said, seconds) in results.items():
            truth_all = persisted(labels_all, fps, pers, attended)
            labels = [labels_all[k] for k in index]
            truth = [truth_all[k] for k in index]
            s = score_clip(meta["name"], labels, truth, said, times)
            s.seconds = seconds
            totals[(m, pers)].add(s)
            print(f"{meta['name']:24} {m:6} {pers:4g} {s.precision:6.3f} {s.recall:6.3f} {s.tp:4} {s.fp:4} {s.fn:4} "
                  f"{s.fps:6.0f}  {s.delay_text()} | {s.removal_text()}", flush=True)
    return totals


def bench_footage(folder: Path, persistences: list[float], methods: list[str]) -> None:
    for clip in REAL_CLIPS:
        path = folder / clip.file
        if not path.exists():
            print(f"footage {path} not found: skipped", file=sys.stderr)
            continue
        cap = cv2.VideoCapture(str(path))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 10.0
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        cap.release()
        _, times, results = run_video(path, clip.region, size, fps, persistences, methods)
        for (m, pers), (said, seconds) in results.items():
            bad = sum(said)
            first = f", first at {times[said.index(True)]:.1f} s" if bad else ""
            print(f"footage {clip.file} [{m}, {pers:g} s] ({clip.credit}): {len(said)} frames analysed, "
                  f"{bad} 'blocked' (false alarms){first}; {len(said) / seconds:.0f} frames/s", flush=True)


def bench_throughput(clips: Path | None, persistence_s: float, methods: list[str]) -> None:
    """8 detectors at 640x480, round-robin on one thread pinned to one core, person check on."""
    frames: list[Frame] = []
    source = clips / "person_standing_long.mp4" if clips is not None else None
    if source is not None and source.exists():
        for _, _, frame in paced(source, 10.0):
            frames.append(np.asarray(cv2.resize(frame, (640, 480)), np.uint8))
            if len(frames) >= 150:  # 30 s: the person walks in and stands (resting blob: HOG runs)
                break
    if not frames:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(50)]
    region = [(229, 347), (411, 347), (391, 292), (359, 292), (365, 139), (275, 139), (281, 292), (249, 292)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {min(affinity or {0})})
    try:
        for name in methods:
            make = METHODS[name]
            dets = [make(region, (640, 480), persistence_s, None) for _ in range(CAMERAS)]
            start = time.perf_counter()
            for k, frame in enumerate(frames):
                for det in dets:
                    det.update(frame, k / ANALYSIS_FPS)
            total = len(frames) * CAMERAS / (time.perf_counter() - start)
            per_cam = total / CAMERAS
            verdict = "fits" if per_cam >= TARGET_FPS else "does NOT fit"
            checks = sum(d.counters.person_checks for d in dets if isinstance(d, ExitBlockageDetector))
            print(f"throughput [{name}]: {CAMERAS} cameras 640x480 round-robin on 1 core: {total:.0f} frames/s "
                  f"total, {per_cam:.0f} frames/s per camera -> {TARGET_FPS:.0f} fps x {CAMERAS} {verdict} "
                  f"({per_cam / TARGET_FPS:.0f}x headroom; {checks} person checks in {len(frames) * CAMERAS} frames)")
    finally:
        cv2.setNumThreads(threads)
        if affinity is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, affinity)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.vision", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=Path, help="folder of clips (NAME.mp4 + NAME.json); generated there if empty")
    ap.add_argument("--persistence", type=float, nargs="+", default=[30.0, 10.0],
                    help="seconds at rest before blocked (default: 30 10)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated set (0)")
    ap.add_argument("--footage", type=Path, default=DEFAULT_FOOTAGE,
                    help=f"folder of the real clips (default {DEFAULT_FOOTAGE})")
    ap.add_argument("--only", action="append", metavar="CLIP", help="only this synthetic clip (repeatable)")
    ap.add_argument("--peer", action="store_true", help="also run the single-background peer")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-door", action="store_true",
                    help="ignore the clips' door polygon (an exit configured without `door`)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a BlockageParams field of the dual detector (repeatable)")
    args = ap.parse_args(argv)
    global PARAMS  # noqa: PLW0603 - the bench's one knob, set once before any detector is made
    fields = {f.name: f.type for f in dataclasses.fields(BlockageParams)}
    overrides: dict[str, Any] = {}
    for item in args.param:
        name, _, value = item.partition("=")
        if name not in fields:
            ap.error(f"unknown parameter {name!r}; known: {', '.join(fields)}")
        kind = fields[name]
        overrides[name] = (value.lower() in ("1", "true", "yes") if kind in ("bool", bool)
                           else int(value) if kind in ("int", int) else float(value))
    PARAMS = dataclasses.replace(BlockageParams(), **overrides)
    if overrides:
        print(f"dual parameters overridden: {overrides}")
    methods = ["dual", "peer"] if args.peer else ["dual"]
    persistences: list[float] = args.persistence
    with contextlib.ExitStack() as stack:
        clips: Path | None = args.clips
        if clips is None:
            clips = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sg-clips-")))
        if not any(clips.glob("*.json")):
            from simulators.video import main as write_clips  # noqa: PLC0415 - only when generating clips

            if write_clips([str(clips), "--seed", str(args.seed)]) != 0:
                return 1
        print(f"persistence {' and '.join(f'{p:g}' for p in persistences)} s, clips in {clips}, "
              f"analysed at {ANALYSIS_FPS:g} frames/s, the clips' door polygon {'ignored' if args.no_door else 'used'}")
        totals = bench_clips(clips, persistences, methods, args.only, use_door=not args.no_door)
        print()
        for (m, pers), s in totals.items():
            print(f"overall [{m}, {pers:g} s]: precision {s.precision:.3f} recall {s.recall:.3f} "
                  f"(TP {s.tp} FP {s.fp} FN {s.fn}); false-alarm clips: {', '.join(s.false_alarm_clips) or 'none'}; "
                  f"delay s: {s.delay_text()}; blocked after removal s: {s.removal_text()}; {s.fps:.0f} frames/s")
        if args.footage.is_dir():
            bench_footage(args.footage, persistences, methods)
        else:
            print(f"footage folder {args.footage} not found: real clips skipped", file=sys.stderr)
        if not args.no_throughput:
            bench_throughput(clips, persistences[0], methods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
