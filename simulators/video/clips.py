"""The standard set of labelled exit-camera clips, each scripted from a seeded random generator.

Every clip is deterministic given ``(seed, name)``: the script, the scene's colours and
textures and the sensor noise all come from ``numpy`` generators seeded with both, so
``--only NAME`` reproduces exactly the clip of the full set.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from simulators.video.camera import BACK_WALL_Z, Camera
from simulators.video.drawing import BGR, PersonLook, PropKind, PropLook
from simulators.video.motion import PathBuilder, Point
from simulators.video.scene import NOISE_BANK, Renderer, RenderOptions
from simulators.video.timeline import ClipSpec, Lighting, Person, Prop, Timeline, realize

ENTRY_Z = 0.3  # under the camera: out of view
OUTSIDE_Z = 6.3  # beyond the exit door
LEAD = 0.6  # an object pushed or pulled keeps this far from its carrier's feet

_SHIRTS: list[BGR] = [(40, 40, 180), (160, 90, 30), (60, 140, 60), (200, 200, 200), (40, 40, 40), (30, 150, 220),
                      (120, 60, 120), (170, 170, 60), (90, 90, 90), (20, 90, 160)]
_TROUSERS: list[BGR] = [(70, 40, 20), (40, 40, 40), (110, 100, 90), (60, 60, 80), (150, 130, 100)]
_SKIN: list[BGR] = [(150, 180, 225), (120, 150, 200), (80, 110, 160), (60, 80, 120), (170, 200, 235)]
_HAIR: list[BGR] = [(20, 20, 25), (30, 50, 80), (60, 90, 130), (150, 160, 170), (40, 40, 60)]
_PROP_COLOURS: dict[PropKind, list[BGR]] = {
    PropKind.BOX: [(70, 120, 170), (60, 105, 150), (95, 145, 190)],
    PropKind.CHAIR: [(150, 80, 30), (40, 40, 170), (50, 50, 50), (60, 110, 150), (30, 140, 60)],
    PropKind.CART: [(160, 110, 40), (120, 120, 125), (40, 60, 170)],
    PropKind.BICYCLE: [(30, 30, 200), (200, 120, 20), (30, 160, 30), (30, 180, 220), (160, 40, 140)],
}


def _pick(rng: np.random.Generator, options: list[BGR]) -> BGR:
    return options[int(rng.integers(len(options)))]


def person_look(rng: np.random.Generator) -> PersonLook:
    return PersonLook(
        height=float(rng.uniform(1.55, 1.92)), build=float(rng.uniform(0.9, 1.15)),
        shirt=_pick(rng, _SHIRTS), trousers=_pick(rng, _TROUSERS), skin=_pick(rng, _SKIN),
        hair=_pick(rng, _HAIR), shoes=(25, 25, 30), sway_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def prop_look(rng: np.random.Generator, kind: PropKind) -> PropLook:
    colour = _pick(rng, _PROP_COLOURS[kind])
    if kind is PropKind.BOX:
        size = (float(rng.uniform(0.45, 0.7)), float(rng.uniform(0.35, 0.6)), float(rng.uniform(0.35, 0.55)))
        return PropLook(kind, colour, (175, 190, 200), size, float(rng.uniform(-0.4, 0.4)))
    second: BGR = {PropKind.CHAIR: (90, 90, 95), PropKind.CART: (80, 130, 175),
                   PropKind.BICYCLE: (30, 30, 30)}[kind]
    scale = float(rng.uniform(0.95, 1.1))
    yaw = float(rng.uniform(-0.35, 0.35)) + (float(rng.uniform(-1.2, 1.2)) if kind is PropKind.CHAIR else 0.0)
    return PropLook(kind, colour, second, (scale, scale, scale), yaw)


@dataclass
class Script:
    """Collects people and objects for a clip, with labels in order of appearance."""

    rng: np.random.Generator
    people: list[Person] = field(default_factory=list)
    props: list[Prop] = field(default_factory=list)

    def speed(self) -> float:
        return float(self.rng.uniform(0.95, 1.45))

    def add_person(self, path: PathBuilder) -> None:
        self.people.append(Person(f"person {len(self.people) + 1}", path.build(), person_look(self.rng)))

    def out_through_door(self, t0: float, lane: float = 0.0) -> None:
        """Walk up the corridor and out through the exit door."""
        v = self.speed()
        path = PathBuilder(t0, (float(self.rng.uniform(-1.5, 1.5)), ENTRY_Z))
        path.walk((lane + float(self.rng.uniform(-0.1, 0.1)), 4.5), v).walk((lane * 0.3, 5.05), v)
        self.add_person(path.walk((0.0, OUTSIDE_Z), v))

    def in_through_door(self, t0: float, lane: float = 0.0) -> None:
        """Come in through the exit door and walk down the corridor towards the camera."""
        v = self.speed()
        path = PathBuilder(t0, (0.0, OUTSIDE_Z)).walk((lane * 0.3, 4.95), v).walk((lane, 4.4), v)
        self.add_person(path.walk((float(self.rng.uniform(-1.6, 1.6)), ENTRY_Z), v))

    def visit(self, t0: float, spot: Point, pause: float) -> None:
        """Walk to a spot, stand there ``pause`` seconds, walk back."""
        v = self.speed()
        path = PathBuilder(t0, (float(self.rng.uniform(-1.5, 1.5)), ENTRY_Z)).walk(spot, v).wait(pause)
        self.add_person(path.walk((float(self.rng.uniform(-1.5, 1.5)), ENTRY_Z), v))

    def random_passer(self, t0: float, lane: float = 0.0) -> None:
        choice = int(self.rng.integers(3))
        if choice == 0:
            self.out_through_door(t0, lane)
        elif choice == 1:
            self.in_through_door(t0, lane)
        else:
            spot = (lane + float(self.rng.uniform(-0.3, 0.3)), float(self.rng.uniform(3.6, 4.4)))
            self.visit(t0, spot, float(self.rng.uniform(0.0, 2.5)))

    def deliver(self, t0: float, kind: PropKind, spot: Point, *, stay: float | None = None,
                carrier_waits: bool = False) -> float:
        """Push an object to ``spot`` and leave it there (for ``stay`` seconds, then take it away again,
        or for good). ``carrier_waits``: the carrier stays beside it meanwhile. Returns when it stops."""
        v = min(self.speed(), 1.1)
        entry = (float(self.rng.uniform(-1.2, 1.2)), ENTRY_Z)
        dx, dz = spot[0] - entry[0], spot[1] - entry[1]
        n = math.hypot(dx, dz)
        ux, uz = dx / n, dz / n
        behind = (spot[0] - LEAD * ux, spot[1] - LEAD * uz)
        carrier = PathBuilder(t0, entry).walk(behind, v)
        thing = PathBuilder(t0, (entry[0] + LEAD * ux, entry[1] + LEAD * uz)).walk(spot, v)
        t_set = thing.now
        look = prop_look(self.rng, kind)
        label = f"{kind.value} {len(self.props) + 1}"
        if stay is None:
            self.add_person(carrier.wait(0.8).walk((float(self.rng.uniform(-1.5, 1.5)), ENTRY_Z), v))
            self.props.append(Prop(label, thing.build(), look, remains=True))
            return t_set
        exit_at = (float(self.rng.uniform(-1.2, 1.2)), ENTRY_Z)
        thing.wait(stay).walk((exit_at[0] + LEAD * ux, exit_at[1] + LEAD * uz), v)
        if carrier_waits:
            carrier.wait(stay).walk(exit_at, v)
            self.add_person(carrier)
        else:
            self.add_person(carrier.wait(0.8).walk((float(self.rng.uniform(-1.5, 1.5)), ENTRY_Z), v))
            approach = math.dist(exit_at, behind) / v
            fetcher = PathBuilder(t_set + stay - approach, exit_at).walk(behind, v).walk(exit_at, v)
            self.add_person(fetcher)
        self.props.append(Prop(label, thing.build(), look, remains=False))
        return t_set

    def spec(self, name: str, description: str, duration_s: float, lighting: Lighting | None = None,
             door_held: tuple[tuple[float, float], ...] = (), fps: float | None = None,
             region_scale: float = 1.0) -> ClipSpec:
        return ClipSpec(name, description, duration_s, tuple(self.people), tuple(self.props),
                        lighting or Lighting(), door_held, fps, region_scale)

    def stand(self, t0: float, spot: Point, until: float, leave_to: Point | None = None) -> None:
        """Someone already standing at ``spot`` at ``t0`` (in view when the clip starts) who walks off at ``until``."""
        v = self.speed()
        away = leave_to or (float(self.rng.uniform(-1.5, 1.5)), ENTRY_Z)
        self.add_person(PathBuilder(t0, spot).wait_until(until).walk(away, v))

    def standing_object(self, kind: PropKind, spot: Point, until: float) -> None:
        """An object standing at ``spot`` from the start (in the learnt scene), pushed away at ``until``."""
        v = min(self.speed(), 1.0)
        exit_at = (float(self.rng.uniform(-1.2, 1.2)), ENTRY_Z)
        dx, dz = exit_at[0] - spot[0], exit_at[1] - spot[1]
        n = math.hypot(dx, dz)
        ux, uz = dx / n, dz / n
        behind = (spot[0] + LEAD * ux, spot[1] + LEAD * uz)  # the pusher pulls it towards the camera
        approach = math.dist(exit_at, behind) / v
        self.add_person(PathBuilder(until - approach, exit_at).walk(behind, v).wait(0.5)
                        .walk((exit_at[0], exit_at[1] - 0.0), v))
        thing = PathBuilder(0.0, spot).wait_until(until + 0.5).walk((exit_at[0] - LEAD * ux, exit_at[1] - LEAD * uz), v)
        look = prop_look(self.rng, kind)
        self.props.append(Prop(f"{kind.value} {len(self.props) + 1}", thing.build(), look, remains=False))


def _drift(rng: np.random.Generator, amount: float) -> Lighting:
    waves = tuple((float(rng.uniform(25, 90)), float(rng.uniform(0, 2 * math.pi))) for _ in range(3))
    return Lighting(drift=amount, drift_waves=waves)


def _exit_spot(rng: np.random.Generator, x_range: tuple[float, float] = (-0.45, 0.45)) -> Point:
    return (float(rng.uniform(*x_range)), float(rng.uniform(4.15, 4.45)))


def _empty_corridor(rng: np.random.Generator) -> ClipSpec:
    return Script(rng).spec("empty_corridor", "Nobody, nothing: noise and a faint daylight drift.", 30,
                            _drift(rng, 0.08))


def _people_passing(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    t = 2.0
    while t < 50:
        s.random_passer(t, float(rng.uniform(-0.3, 0.3)))
        t += float(rng.uniform(3.0, 7.0))
    return s.spec("people_passing", "People walking out and in through the exit, some stopping briefly.", 60,
                  _drift(rng, 0.05))


def _person_pausing(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.visit(4.0, _exit_spot(rng), 15.0)
    s.out_through_door(27.0)
    return s.spec("person_pausing", "A person stands 15 s in the exit region, then leaves; another walks out.",
                  40)


def _box_left(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    spot = _exit_spot(rng, (-0.4, 0.0))
    s.deliver(6.0, PropKind.BOX, spot)
    s.visit(28.0, (1.3, 3.9), 2.0)
    return s.spec("box_left", "A box is pushed into the exit region and left there.", 45, _drift(rng, 0.05))


def _box_removed(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.deliver(6.0, PropKind.BOX, _exit_spot(rng), stay=10.0)
    return s.spec("box_removed", "A box is left in the exit region, then taken away 10 s later.", 40)


def _chair_left_lights_drift(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.deliver(8.0, PropKind.CHAIR, _exit_spot(rng))
    s.visit(35.0, (-1.4, 3.5), 1.0)
    return s.spec("chair_left_lights_drift", "A chair is left in the exit while the daylight drifts strongly.",
                  60, _drift(rng, 0.45))


def _cart_left_lights_switch(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.deliver(6.0, PropKind.CART, _exit_spot(rng, (-0.3, 0.3)))
    return s.spec("cart_left_lights_switch", "A cart is left in the exit; the lamps go off at 30 s, on at 45 s.",
                  60, Lighting(switches=((30.0, False), (45.0, True))))


def _door_opening(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.in_through_door(4.0)
    s.out_through_door(17.0)
    return s.spec("door_opening", "The exit door opens for people and is held open 8 s from 28 s; nothing left.",
                  45, door_held=((28.0, 36.0),))


def _bicycle_among_people(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    t = 2.0
    while t < 52:
        s.random_passer(t, 0.35)
        t += float(rng.uniform(4.0, 8.0))
    s.deliver(12.0, PropKind.BICYCLE, (float(rng.uniform(-0.55, -0.35)), float(rng.uniform(4.2, 4.4))))
    return s.spec("bicycle_among_people", "A bicycle is left at the side of the exit while people keep passing.",
                  60)


def _box_beside_exit(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.deliver(5.0, PropKind.BOX, (float(rng.uniform(1.6, 1.75)), float(rng.uniform(4.3, 4.6))))
    s.out_through_door(20.0)
    s.in_through_door(30.0)
    return s.spec("box_beside_exit", "A box is left against the wall beside the exit region: never blocked.", 40)


def _lights_switching(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.out_through_door(14.0)
    return s.spec("lights_switching", "Lamps off at 8 s and on at 20 s in an otherwise empty corridor.", 30,
                  Lighting(switches=((8.0, False), (20.0, True))))


def _cart_brief_stop(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.deliver(5.0, PropKind.CART, _exit_spot(rng), stay=5.0, carrier_waits=True)
    s.out_through_door(24.0)
    return s.spec("cart_brief_stop", "A cart stops 5 s in the exit beside its pusher, then goes: blocked 5 s "
                  "in the ground truth, below any sensible persistence time.", 40)


# ------------------------------------------------------------- issue 11: what real cameras show


def _people_at_start(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.stand(0.0, (-0.3, 4.2), 9.0)  # three people in the exit when the detector starts
    s.stand(0.0, (0.45, 4.0), 14.0)
    s.stand(0.0, (0.1, 4.6), 20.0)
    t = 24.0
    while t < 50:
        s.random_passer(t, float(rng.uniform(-0.3, 0.3)))
        t += float(rng.uniform(5.0, 9.0))
    return s.spec("people_at_start", "Three people stand in the exit as the clip starts and leave at 9, 14 and "
                  "20 s; others pass later. Nothing is left: never blocked.", 60)


def _lamp_on_then_box(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    spot = _exit_spot(rng, (-0.3, 0.3))
    s.deliver(30.0, PropKind.BOX, spot, stay=45.0)
    return s.spec("lamp_on_then_box", "A spot lamp over part of the exit goes on at 8 s for good; a box is left "
                  "there at ~32 s and taken away 45 s later.", 100,
                  Lighting(spot=(8.0, 0.5, 4.3, 0.55, 0.6)))


def _chair_moved_away(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.standing_object(PropKind.CHAIR, (-0.45, 4.3), 6.0)
    s.out_through_door(30.0)
    return s.spec("chair_moved_away", "A chair stands in the exit when the clip starts (it is in the learnt "
                  "scene) and is pulled away at 6 s: the floor it leaves is not an obstruction.", 50)


def _door_left_open(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.out_through_door(4.0)
    return s.spec("door_left_open", "The exit door is propped open at 12 s and stays open: a lasting change, "
                  "not an obstruction.", 70, door_held=((12.0, 1e9),))


def _box_against_door(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.deliver(6.0, PropKind.BOX, (float(rng.uniform(-0.25, 0.25)), BACK_WALL_Z - 0.32))
    return s.spec("box_against_door", "A box is pushed up against the closed exit door and left there: most of "
                  "it is in the doorway's picture, and it is an obstruction.", 45)


def _door_open_then_box(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.out_through_door(3.0)
    s.deliver(24.0, PropKind.BOX, (float(rng.uniform(-0.25, 0.25)), BACK_WALL_Z - 0.32))
    return s.spec("door_open_then_box", "The exit door is propped open at 10 s (absorbed as the door's state); "
                  "a box is then pushed into the open doorway and left there: an obstruction.", 60,
                  door_held=((10.0, 1e9),))


def _person_standing_long(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.visit(3.0, _exit_spot(rng), 50.0)
    s.out_through_door(62.0)
    return s.spec("person_standing_long", "A person stands still 50 s in the exit, then leaves: never blocked.", 75)


def _dark_bag_left(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    t_set = s.deliver(6.0, PropKind.BOX, _exit_spot(rng, (-0.35, 0.2)))
    bag = s.props[-1]
    w, h, d = 0.45, 0.3, 0.3
    s.props[-1] = Prop(bag.label, bag.path, PropLook(PropKind.BOX, (78, 84, 88), (74, 80, 84), (w, h, d), 0.2),
                       bag.remains)
    s.visit(t_set + 20.0, (1.2, 3.8), 2.0)
    return s.spec("dark_bag_left", "A small dark bag of about the floor's shade is left in the exit.", 60)


def _box_left_wide_region(rng: np.random.Generator) -> ClipSpec:
    spec = _box_left(rng)
    return ClipSpec("box_left_wide_region", "box_left with an exit region twice as wide and tall around it.",
                    spec.duration_s, spec.people, spec.props, spec.lighting, spec.door_held, None, 2.0)


def _box_left_25fps(rng: np.random.Generator) -> ClipSpec:
    spec = _box_left(rng)
    return ClipSpec("box_left_25fps", "box_left from a 25 fps camera.", spec.duration_s, spec.people, spec.props,
                    spec.lighting, spec.door_held, 25.0)


def _bag_left_by_talkers(rng: np.random.Generator) -> ClipSpec:
    s = Script(rng)
    s.visit(3.0, (-0.35, 4.25), 28.0)  # two people stand talking in the exit ...
    s.visit(3.5, (0.25, 4.3), 26.0)
    s.deliver(8.0, PropKind.BOX, (-0.05, 4.05))  # ... one of them puts a bag down beside them
    return s.spec("bag_left_by_talkers", "Two people talk 26-28 s in the exit; a bag put down beside them at "
                  "~10 s stays when they leave.", 75)


STANDARD_CLIPS: dict[str, Callable[[np.random.Generator], ClipSpec]] = {
    "empty_corridor": _empty_corridor,
    "people_passing": _people_passing,
    "person_pausing": _person_pausing,
    "box_left": _box_left,
    "box_removed": _box_removed,
    "chair_left_lights_drift": _chair_left_lights_drift,
    "cart_left_lights_switch": _cart_left_lights_switch,
    "door_opening": _door_opening,
    "bicycle_among_people": _bicycle_among_people,
    "box_beside_exit": _box_beside_exit,
    "lights_switching": _lights_switching,
    "cart_brief_stop": _cart_brief_stop,
    "people_at_start": _people_at_start,
    "lamp_on_then_box": _lamp_on_then_box,
    "chair_moved_away": _chair_moved_away,
    "door_left_open": _door_left_open,
    "person_standing_long": _person_standing_long,
    "box_against_door": _box_against_door,
    "door_open_then_box": _door_open_then_box,
    "dark_bag_left": _dark_bag_left,
    "box_left_wide_region": _box_left_wide_region,
    "box_left_25fps": _box_left_25fps,
    "bag_left_by_talkers": _bag_left_by_talkers,
}


# Variants of a clip that must show the very same scene and script (only the region or the frame rate differs).
SAME_SCRIPT = {"box_left_wide_region": "box_left", "box_left_25fps": "box_left"}


def clip_rngs(name: str, seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the script, the per-frame choices and the scene's look."""
    name = SAME_SCRIPT.get(name, name)
    script, frames, look = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).spawn(3)
    return np.random.default_rng(script), np.random.default_rng(frames), np.random.default_rng(look)


def make_clip(name: str, seed: int = 0, fps: float = 10.0, camera: Camera | None = None,
              options: RenderOptions | None = None,
              spec: ClipSpec | None = None) -> tuple[Timeline, Renderer]:
    """Script, sample and prepare to render one standard clip (or ``spec``, named ``name``)."""
    if spec is None and name not in STANDARD_CLIPS:
        raise KeyError(f"unknown clip {name!r}; known: {', '.join(STANDARD_CLIPS)}")
    camera = camera or Camera()
    script_rng, frame_rng, look_rng = clip_rngs(name, seed)
    spec = spec or STANDARD_CLIPS[name](script_rng)
    timeline = realize(spec, camera, spec.fps or fps, frame_rng, NOISE_BANK)
    return timeline, Renderer(timeline, camera, look_rng, options)
