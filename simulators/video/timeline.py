"""What happens in a clip, and when: people, objects, the door, the lights; the ground truth.

A :class:`ClipSpec` is the script in continuous time. :func:`realize` samples it at the
clip's frame rate into a :class:`Timeline`: per-frame door angle, light levels, noise choice,
the ``blocked`` ground truth and the event list.

Ground truth: frame ``k`` is *blocked* when an object (never a person, never the door) is at
rest at time ``k / fps`` — from the frame it stops moving until it is picked up again — and at
least :data:`IN_REGION_FRACTION` of what it covers in the image lies in the exit region. No
persistence time is applied: that is the detector's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from simulators.video.camera import BACK_WALL_Z, EXIT_HALF_WIDTH, EXIT_NEAR_Z, Camera, exit_region
from simulators.video.drawing import PersonLook, PropLook, prop_mask
from simulators.video.motion import Path, Point

IN_REGION_FRACTION = 0.25
DOOR_OPEN_DEG = 85.0
DOOR_OPEN_SPEED = 150.0  # degrees per second
DOOR_CLOSE_SPEED = 50.0  # a door closer is slower
DOOR_HOLD_S = 1.2  # the door stays open this long after the last person
FLICKER_S = 0.6  # fluorescent tubes flicker this long when switched on
_FLICKER = (0.15, 0.9, 0.05, 0.6, 0.2, 1.0)


@dataclass(frozen=True)
class Person:
    label: str
    path: Path
    look: PersonLook

    def present(self, t: float) -> bool:
        return self.path.start <= t <= self.path.end


@dataclass(frozen=True)
class Prop:
    """An object pushed or carried along its path; it stays where the path ends if ``remains``."""

    label: str
    path: Path
    look: PropLook
    remains: bool

    def present(self, t: float) -> bool:
        return self.path.start <= t and (self.remains or t <= self.path.end)

    def rests(self) -> list[tuple[float, float]]:
        """Closed intervals during which the object stands still (the last one open-ended if it remains)."""
        spans = self.path.rests()
        if self.remains:
            if spans and spans[-1][1] == self.path.end:
                spans[-1] = (spans[-1][0], math.inf)
            else:
                spans.append((self.path.end, math.inf))
        return spans


@dataclass(frozen=True)
class Lighting:
    """Ambient (daylight) and lamp levels over time: slow drift and lamp switching."""

    ambient: float = 0.35
    lamps: float = 0.75
    drift: float = 0.0  # relative amplitude of the daylight's slow drift
    drift_waves: tuple[tuple[float, float], ...] = ()  # (period s, phase rad)
    switches: tuple[tuple[float, bool], ...] = ()  # (time, lamps on)
    # A spot lamp lighting part of the floor from a time on, for good: (time on, x, z, radius m, gain).
    spot: tuple[float, float, float, float, float] | None = None

    def spot_on(self, t: float) -> bool:
        return self.spot is not None and t >= self.spot[0]

    def at(self, t: float) -> tuple[float, float]:
        ambient = self.ambient
        if self.drift and self.drift_waves:
            wave = sum(math.sin(2 * math.pi * t / p + ph) for p, ph in self.drift_waves) / len(self.drift_waves)
            ambient *= 1.0 + self.drift * wave
        on, since = True, -math.inf
        for ts, state in self.switches:
            if ts <= t:
                on, since = state, ts
        lamps = 0.0
        if on:
            lamps = self.lamps
            if t - since < FLICKER_S:
                lamps *= _FLICKER[int((t - since) / FLICKER_S * len(_FLICKER))]
        return ambient, lamps


@dataclass(frozen=True)
class ClipSpec:
    name: str
    description: str
    duration_s: float
    people: tuple[Person, ...] = ()
    props: tuple[Prop, ...] = ()
    lighting: Lighting = field(default_factory=Lighting)
    door_held: tuple[tuple[float, float], ...] = ()  # door held open from t0 to t1 by someone out of view
    fps: float | None = None  # the clip's own frame rate (a 25 fps camera), else the set's
    region_scale: float = 1.0  # the exit region written in the metadata, scaled about its centre


@dataclass(frozen=True)
class Event:
    frame: int
    what: str


@dataclass(frozen=True)
class Timeline:
    spec: ClipSpec
    fps: float
    frames: int
    door_angle: tuple[float, ...]
    ambient: tuple[float, ...]
    lamps: tuple[float, ...]
    noise_index: tuple[int, ...]
    exposure_jitter: tuple[float, ...]
    blocked: tuple[bool, ...]
    attended: tuple[bool, ...]  # someone stands still beside a blocking object: it is not left yet
    events: tuple[Event, ...]

    def time(self, frame: int) -> float:
        return frame / self.fps


def _near_door(p: Point) -> bool:
    x, z = p
    return abs(x) < 0.8 and BACK_WALL_Z - 0.45 < z < BACK_WALL_Z + 1.2


def _door_angles(spec: ClipSpec, fps: float, frames: int) -> list[float]:
    angles: list[float] = []
    angle, last_wanted = 0.0, -math.inf
    dt = 1.0 / fps
    for k in range(frames):
        t = k * dt
        wanted = any(p.present(t) and _near_door(p.path.at(t)) for p in spec.people)
        wanted = wanted or any(t0 <= t <= t1 for t0, t1 in spec.door_held)
        if wanted:
            last_wanted = t
        if t - last_wanted <= DOOR_HOLD_S:
            angle = min(DOOR_OPEN_DEG, angle + DOOR_OPEN_SPEED * dt)
        else:
            angle = max(0.0, angle - DOOR_CLOSE_SPEED * dt)
        angles.append(angle)
    return angles


def _frame_of(t: float, fps: float) -> int:
    return math.ceil(t * fps - 1e-9)


def _in_exit(p: Point) -> bool:
    x, z = p
    return abs(x) <= EXIT_HALF_WIDTH and EXIT_NEAR_Z <= z <= BACK_WALL_Z


def prop_region_fractions(spec: ClipSpec, camera: Camera) -> dict[tuple[str, float], float]:
    """For each object and each rest (keyed by label and rest start): the share of it inside the exit region."""
    region = np.zeros((camera.height, camera.width), np.uint8)
    cv2.fillPoly(region, [np.array(exit_region(camera), np.int32)], (255,))
    out: dict[tuple[str, float], float] = {}
    for prop in spec.props:
        for t0, _ in prop.rests():
            x, z = prop.path.at(t0)
            mask = prop_mask(camera, prop.look, x, z)
            covered = int(np.count_nonzero(mask))
            inside = int(np.count_nonzero(cv2.bitwise_and(mask, region)))
            out[(prop.label, t0)] = inside / covered if covered else 0.0
    return out


def _ground_truth(spec: ClipSpec, camera: Camera, fps: float, frames: int) -> tuple[list[bool], list[Event]]:
    fractions = prop_region_fractions(spec, camera)
    blocked = [False] * frames
    events: list[Event] = []
    for prop in spec.props:
        kind = prop.look.kind.value
        events.append(Event(_frame_of(prop.path.start, fps), f"{prop.label} ({kind}) enters the view"))
        for t0, t1 in prop.rests():
            inside = fractions[(prop.label, t0)] >= IN_REGION_FRACTION
            where = "in the exit region" if inside else "outside the exit region"
            first = _frame_of(t0, fps)
            last = frames - 1 if math.isinf(t1) else min(frames - 1, math.floor(t1 * fps + 1e-9))
            if first >= frames:
                continue
            events.append(Event(first, f"{prop.label} ({kind}) set down {where}"))
            if inside:
                for k in range(first, last + 1):
                    blocked[k] = True
            if not math.isinf(t1) and last + 1 < frames:
                events.append(Event(last + 1, f"{prop.label} ({kind}) moved again"))
        if not prop.remains and _frame_of(prop.path.end, fps) < frames:
            events.append(Event(_frame_of(prop.path.end, fps), f"{prop.label} ({kind}) leaves the view"))
    return blocked, events


OWNER_M = 1.0  # a person standing still this close to an object is with it (its owner, or talking beside it)


def _attended(spec: ClipSpec, fps: float, blocked: list[bool]) -> list[bool]:
    """Per frame: an object blocks the exit and someone stands still within OWNER_M of it. An
    object is *left* (abandoned) from when nobody stands with it; the bench starts the
    persistence time then, as abandoned-object benchmarks do."""
    out = [False] * len(blocked)
    for k, is_blocked in enumerate(blocked):
        if not is_blocked:
            continue
        t = k / fps
        spots = [prop.path.at(t) for prop in spec.props if prop.present(t) and not prop.path.moving(t)]
        for person in spec.people:
            if not person.present(t) or person.path.moving(t):
                continue
            px, pz = person.path.at(t)
            if any(math.hypot(px - x, pz - z) <= OWNER_M for x, z in spots):
                out[k] = True
                break
    return out


def _people_events(spec: ClipSpec, fps: float, frames: int) -> list[Event]:
    events: list[Event] = []
    for person in spec.people:
        for t, what in ((person.path.start, "appears"), (person.path.end, "leaves")):
            if _frame_of(t, fps) < frames:
                events.append(Event(_frame_of(t, fps), f"{person.label} {what}"))
        for t0, t1 in person.path.rests():
            if t1 - t0 >= 1.0 and _frame_of(t0, fps) < frames:
                where = " in the exit region" if _in_exit(person.path.at(t0)) else ""
                events.append(Event(_frame_of(t0, fps), f"{person.label} stands still{where} for {t1 - t0:.0f} s"))
    return events


def _door_and_light_events(spec: ClipSpec, angles: list[float], fps: float, frames: int) -> list[Event]:
    events: list[Event] = []
    for k in range(1, frames):
        if angles[k - 1] == 0.0 < angles[k]:
            events.append(Event(k, "door opens"))
        elif angles[k - 1] > 0.0 == angles[k]:
            events.append(Event(k, "door closed"))
    for t, on in spec.lighting.switches:
        if _frame_of(t, fps) < frames:
            events.append(Event(_frame_of(t, fps), "lights on" if on else "lights off"))
    if spec.lighting.spot is not None and _frame_of(spec.lighting.spot[0], fps) < frames:
        events.append(Event(_frame_of(spec.lighting.spot[0], fps), "a spot lamp over part of the exit is switched on"))
    if spec.lighting.drift:
        events.append(Event(0, f"daylight drifts slowly (±{spec.lighting.drift:.0%})"))
    return events


def realize(spec: ClipSpec, camera: Camera, fps: float, rng: np.random.Generator, noise_bank: int) -> Timeline:
    """Sample the script at ``fps``: everything the renderer and the metadata need, frame by frame."""
    frames = max(1, round(spec.duration_s * fps))
    angles = _door_angles(spec, fps, frames)
    levels = [spec.lighting.at(k / fps) for k in range(frames)]
    blocked, events = _ground_truth(spec, camera, fps, frames)
    events += _people_events(spec, fps, frames) + _door_and_light_events(spec, angles, fps, frames)
    events.sort(key=lambda e: (e.frame, e.what))
    return Timeline(
        spec=spec, fps=fps, frames=frames, door_angle=tuple(angles),
        ambient=tuple(a for a, _ in levels), lamps=tuple(lamp for _, lamp in levels),
        noise_index=tuple(int(i) for i in rng.integers(0, noise_bank, frames)),
        exposure_jitter=tuple(float(j) for j in 1.0 + 0.006 * rng.standard_normal(frames)),
        blocked=tuple(blocked), attended=tuple(_attended(spec, fps, blocked)), events=tuple(events),
    )
