"""The corridor scene and the renderer: a timeline in, frames (BGR uint8) out.

The static corridor (tiled floor, walls, exit door and sign, ceiling lamps, a notice board,
an extinguisher) is drawn once per clip as an albedo image with texture. Each frame copies
it, shows what is beyond the doorway when the door is open (outdoors, people going through),
paints objects and people far to near, multiplies by the light (daylight plus lamps, which
light the floor in pools) and adds sensor noise.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from simulators.video.camera import (
    BACK_WALL_Z,
    CEILING_Y,
    CORRIDOR_HALF_WIDTH,
    DOOR_HALF_WIDTH,
    DOOR_HEIGHT,
    NEAR_Z,
    SUBPIXEL_BITS,
    Camera,
    doorway_world,
)
from simulators.video.drawing import (
    BGR,
    Fill,
    Image,
    Layer,
    Pose,
    Prim,
    Stroke,
    door_panel_layer,
    paint,
    paint_layers,
    person_layer,
    prop_layers,
    scaled,
)
from simulators.video.timeline import Timeline

NOISE_BANK = 8
NOISE_SIGMA = 2.5  # grey levels, in good light
DARK_NOISE_SIGMA = 5.0  # the camera raises its gain in the dark
STRIDE_M = 1.4  # one full gait cycle


@dataclass(frozen=True)
class RenderOptions:
    """Switches for tests: render without noise, light changes, people or door movement."""

    noise: bool = True
    lighting: bool = True
    people: bool = True
    door: bool = True


@dataclass(frozen=True)
class SceneStyle:
    wall: BGR
    floor: BGR
    door: BGR
    frame: BGR
    board: BGR
    glass: BGR
    outdoor: BGR
    pavement: BGR

    @staticmethod
    def draw(rng: np.random.Generator) -> SceneStyle:
        def jitter(base: BGR, amount: int = 10) -> BGR:
            b, g, r = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in base)
            return (b, g, r)

        walls: list[BGR] = [(200, 210, 215), (175, 195, 205), (210, 205, 190), (190, 200, 185)]
        floors: list[BGR] = [(140, 150, 160), (120, 138, 155), (150, 150, 148), (105, 112, 120)]
        doors: list[BGR] = [(70, 70, 160), (150, 110, 60), (80, 120, 80), (140, 140, 145)]
        return SceneStyle(
            wall=jitter(walls[int(rng.integers(len(walls)))]),
            floor=jitter(floors[int(rng.integers(len(floors)))]),
            door=jitter(doors[int(rng.integers(len(doors)))]),
            frame=jitter((90, 95, 100)),
            board=jitter((80, 130, 170)),
            glass=jitter((215, 200, 185)),
            outdoor=jitter((225, 225, 220), 8),
            pavement=jitter((150, 155, 155), 5),
        )


def _u8(mat: cv2.typing.MatLike) -> Image:
    return np.asarray(mat, dtype=np.uint8)


def _quad(cam: Camera, pts: list[tuple[float, float, float]], colour: BGR) -> Fill:
    return Fill(cam.project_fixed(np.array(pts, np.float64)), colour)


def _wall_rect(cam: Camera, side: float, z0: float, z1: float, y0: float, y1: float, colour: BGR) -> Fill:
    x = side * CORRIDOR_HALF_WIDTH
    return _quad(cam, [(x, y0, z0), (x, y0, z1), (x, y1, z1), (x, y1, z0)], colour)


def _back_rect(cam: Camera, x0: float, x1: float, y0: float, y1: float, colour: BGR) -> Fill:
    z = BACK_WALL_Z
    return _quad(cam, [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)], colour)


def _floor_tiles(cam: Camera, style: SceneStyle, rng: np.random.Generator) -> list[Prim]:
    tile = 0.6
    prims: list[Prim] = []
    xs = np.arange(-CORRIDOR_HALF_WIDTH, CORRIDOR_HALF_WIDTH + 1e-6, tile)
    xs = np.append(xs, CORRIDOR_HALF_WIDTH) if xs[-1] < CORRIDOR_HALF_WIDTH - 1e-6 else xs
    zs = np.arange(BACK_WALL_Z, NEAR_Z - 1e-6, -tile)[::-1]
    zs = np.insert(zs, 0, NEAR_Z) if zs[0] > NEAR_Z + 1e-6 else zs
    for x0, x1 in itertools.pairwise(xs):
        for z0, z1 in itertools.pairwise(zs):
            shade = float(rng.uniform(0.93, 1.05))
            prims.append(_quad(cam, [(x0, 0, z0), (x1, 0, z0), (x1, 0, z1), (x0, 0, z1)], scaled(style.floor, shade)))
    grout = scaled(style.floor, 0.7)
    for x in xs:
        prims.append(Stroke(cam.project_fixed(np.array([(x, 0, NEAR_Z), (x, 0, BACK_WALL_Z)])), grout, 1))
    for z in zs:
        pts = np.array([(-CORRIDOR_HALF_WIDTH, 0, z), (CORRIDOR_HALF_WIDTH, 0, z)])
        prims.append(Stroke(cam.project_fixed(pts), grout, 1))
    return prims


def _corridor(cam: Camera, style: SceneStyle, rng: np.random.Generator) -> list[Prim]:
    w, z0, z1, top = CORRIDOR_HALF_WIDTH, NEAR_Z, BACK_WALL_Z, CEILING_Y
    ceiling = scaled(style.wall, 1.05)
    prims: list[Prim] = [_quad(cam, [(-w, top, z0), (w, top, z0), (w, top, z1), (-w, top, z1)], ceiling)]
    for zl in (1.2, 2.6, 4.0):  # lamp panels (bright albedo; how bright they look depends on the light)
        prims.append(_quad(cam, [(-0.3, top, zl - 0.3), (0.3, top, zl - 0.3), (0.3, top, zl + 0.3),
                                 (-0.3, top, zl + 0.3)], (250, 252, 252)))
    prims += _floor_tiles(cam, style, rng)
    for side, tone in ((-1.0, 0.92), (1.0, 0.86)):
        prims.append(_wall_rect(cam, side, z0, z1, 0.0, top, scaled(style.wall, tone)))
        prims.append(_wall_rect(cam, side, z0, z1, 0.0, 0.12, scaled(style.wall, tone * 0.6)))  # skirting
        prims.append(_wall_rect(cam, side, z0, z1, 0.95, 1.0, scaled(style.wall, tone * 0.8)))  # dado rail
    prims.append(_back_rect(cam, -w, w, 0.0, top, style.wall))
    prims.append(_back_rect(cam, -w, w, 0.0, 0.12, scaled(style.wall, 0.6)))
    prims.append(_wall_rect(cam, -1.0, 2.2, 3.3, 1.15, 1.85, style.board))  # notice board, papers on it
    for i in range(4):
        za = 2.3 + 0.25 * i + float(rng.uniform(-0.03, 0.03))
        ya = 1.3 + 0.25 * (i % 2)
        prims.append(_wall_rect(cam, -1.0, za, za + 0.18, ya, ya + 0.24, (235, 240, 240)))
    prims.append(_wall_rect(cam, 1.0, 3.6, 3.8, 0.3, 0.85, (30, 30, 190)))  # extinguisher
    prims.append(_wall_rect(cam, 1.0, 3.4, 4.0, 1.4, 1.6, (40, 160, 40)))  # exit arrow sign
    d = DOOR_HALF_WIDTH
    prims.append(_back_rect(cam, -d - 0.08, d + 0.08, 0.0, DOOR_HEIGHT + 0.08, style.frame))
    prims.append(_back_rect(cam, -0.3, 0.3, 2.3, 2.55, (60, 170, 40)))  # EXIT sign
    prims.append(_back_rect(cam, -0.22, 0.05, 2.36, 2.49, (235, 245, 235)))
    return prims


def _closed_door(cam: Camera, style: SceneStyle) -> list[Prim]:
    d = DOOR_HALF_WIDTH
    return [
        _back_rect(cam, -d, d, 0.0, DOOR_HEIGHT, style.door),
        _back_rect(cam, -d + 0.33, d - 0.33, 1.3, 1.9, style.glass),
        Stroke(cam.project_fixed(np.array([(-d + 0.13, 1.0, BACK_WALL_Z), (d - 0.1, 1.0, BACK_WALL_Z)])),
               (150, 150, 150), max(1, round(0.04 * cam.pixels_per_metre(0.0, 1.0, BACK_WALL_Z)))),
        Stroke(cam.project_fixed(doorway_world()), scaled(style.door, 0.5), 1, closed=True),
    ]


def _outdoors(cam: Camera, style: SceneStyle) -> list[Prim]:
    ground = [(-12.0, 0.0, BACK_WALL_Z), (12.0, 0.0, BACK_WALL_Z), (12.0, 0.0, 40.0), (-12.0, 0.0, 40.0)]
    prims: list[Prim] = [_quad(cam, ground, style.pavement)]
    for z in np.arange(BACK_WALL_Z + 0.5, 12.0, 0.8):
        prims.append(Stroke(cam.project_fixed(np.array([(-12.0, 0.0, z), (12.0, 0.0, z)])),
                            scaled(style.pavement, 0.85), 1))
    return prims


def _texture(img: Image, rng: np.random.Generator, amount: float) -> Image:
    h, w = img.shape[:2]
    fine = rng.standard_normal((h, w), dtype=np.float32) * amount
    coarse = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 6.0) * amount * 6.0
    out = img.astype(np.float32) + (fine + coarse)[:, :, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _lamp_map(cam: Camera) -> NDArray[np.float32]:
    """How much the ceiling lamps light each pixel: pools on the floor under them, 0.55..1."""
    h, w = cam.height, cam.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pools = np.zeros((h, w), np.float32)
    for zl in (1.2, 2.6, 4.0):
        (u, v), = cam.project([(0.0, 0.0, zl)])
        sigma = 1.3 * cam.pixels_per_metre(0.0, 0.0, zl)
        pools += np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2))
    return (0.55 + 0.45 * pools / max(float(pools.max()), 1e-6)).astype(np.float32)


class Renderer:
    """Renders the frames of one realised clip. ``frame(k)`` depends only on the timeline and the seed."""

    def __init__(self, timeline: Timeline, camera: Camera, rng: np.random.Generator,
                 options: RenderOptions | None = None) -> None:
        self.timeline, self.camera = timeline, camera
        self.options = options or RenderOptions()
        self.style = SceneStyle.draw(rng)
        h, w = camera.height, camera.width
        base = np.zeros((h, w, 3), np.uint8)
        paint(base, _corridor(camera, self.style, rng))
        paint(base, _closed_door(camera, self.style))
        self.background: Image = _texture(base, rng, 3.0)
        outdoor = np.full((h, w, 3), self.style.outdoor, np.uint8)
        paint(outdoor, _outdoors(camera, self.style))
        self.outdoors: Image = _texture(outdoor, rng, 2.0)
        self.doorway = np.zeros((h, w), np.uint8)
        cv2.fillPoly(self.doorway, [camera.project_fixed(doorway_world())], (255,), cv2.LINE_8, SUBPIXEL_BITS)
        x, y, bw, bh = cv2.boundingRect(self.doorway)
        self._door_box = (slice(y, y + bh), slice(x, x + bw))
        self.lamp_map = _lamp_map(camera)
        self._noise = {sigma: [self._noise_pair(rng, sigma) for _ in range(NOISE_BANK)]
                       for sigma in (NOISE_SIGMA, DARK_NOISE_SIGMA)}
        self._gain_cache: tuple[tuple[float, float, bool], Image] | None = None
        self.spot_map = self._spot_map(timeline.spec.lighting.spot)

    def _noise_pair(self, rng: np.random.Generator, sigma: float) -> tuple[Image, Image]:
        n = rng.standard_normal((self.camera.height, self.camera.width, 3), dtype=np.float32) * sigma
        return np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)

    def frame(self, k: int) -> Image:
        tl, opts, cam = self.timeline, self.options, self.camera
        t = tl.time(k)
        img = self.background.copy()
        people = [p for p in tl.spec.people if p.present(t)] if opts.people else []
        angle = tl.door_angle[k] if opts.door else 0.0
        near: list[Layer] = []
        beyond: list[Layer] = []
        for prop in tl.spec.props:
            if prop.present(t):
                x, z = prop.path.at(t)
                near += prop_layers(cam, prop.look, x, z)
        for person in people:
            path = person.path
            x, z = path.at(t)
            pose = Pose(x, z, path.heading(t), 2 * np.pi * path.distance(t) / STRIDE_M, path.moving(t), t)
            (beyond if z >= BACK_WALL_Z else near).append(person_layer(cam, person.look, pose))
        if angle > 0.0:  # with the door shut, whoever is beyond it is hidden
            self._through_doorway(img, angle, beyond)
        paint_layers(img, near)
        if opts.lighting:
            spot = tl.spec.lighting.spot_on(t)
            img = _u8(cv2.multiply(img, self._gain(tl.ambient[k], tl.lamps[k], spot), scale=1 / 128))
        if opts.noise:
            level = tl.ambient[k] + 0.8 * tl.lamps[k]
            pos, neg = self._noise[NOISE_SIGMA if level >= 0.6 else DARK_NOISE_SIGMA][tl.noise_index[k]]
            if opts.lighting:
                img = _u8(cv2.convertScaleAbs(img, alpha=tl.exposure_jitter[k]))
            img = _u8(cv2.subtract(cv2.add(img, pos), neg))
        return img

    def _through_doorway(self, img: Image, angle: float, beyond: list[Layer]) -> None:
        """What the open doorway shows: outdoors, the door leaf swung outwards, people beyond the wall."""
        scratch = self.outdoors.copy()
        paint_layers(scratch, [*beyond, door_panel_layer(self.camera, angle, self.style.door, self.style.glass)])
        rows, cols = self._door_box
        roi = img[rows, cols]
        np.copyto(roi, scratch[rows, cols], where=self.doorway[rows, cols, None] > 0)

    def _spot_map(self, spot: tuple[float, float, float, float, float] | None) -> NDArray[np.float32] | None:
        """A spot lamp's pool of light on the floor: a disc with a soft edge (a lasting change)."""
        if spot is None:
            return None
        _, x, z, radius, gain = spot
        cam = self.camera
        pts = cam.project([(x + radius * math.cos(a), 0.0, z + radius * math.sin(a))
                           for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)])
        disc = np.zeros((cam.height, cam.width), np.float32)
        cv2.fillPoly(disc, [np.round(pts).astype(np.int32)], (1.0,))
        soft = cv2.GaussianBlur(disc, (0, 0), 0.12 * cam.pixels_per_metre(x, 0.0, z))
        return np.asarray(soft * gain, np.float32)

    def _gain(self, ambient: float, lamps: float, spot: bool = False) -> Image:
        key = (round(ambient, 4), round(lamps, 4), spot)
        if self._gain_cache is None or self._gain_cache[0] != key:
            light = ambient + lamps * self.lamp_map
            if spot and self.spot_map is not None:
                light = light + self.spot_map
            gain = np.clip(light * 128.0, 0, 255).astype(np.uint8)
            self._gain_cache = (key, cv2.merge([gain, gain, gain]))
        return self._gain_cache[1]
