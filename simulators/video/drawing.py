"""Display lists: what people, objects and the door look like, as primitives to paint.

Shapes are described in world metres and projected by the :class:`~.camera.Camera`; the
result is a list of primitives in image fixed-point coordinates (see ``SUBPIXEL_BITS``). The
same list paints the picture (:func:`paint`) or a mask of what it covers (:func:`paint_mask`),
which is how the ground truth knows how much of an object lies in the exit region.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
from numpy.typing import NDArray

from simulators.video.camera import (
    BACK_WALL_Z,
    DOOR_HALF_WIDTH,
    DOOR_HEIGHT,
    DOOR_HINGE_X,
    SUBPIXEL,
    SUBPIXEL_BITS,
    Camera,
    FloatArray,
    floor_circle,
)

BGR = tuple[int, int, int]
Image = NDArray[np.uint8]
Fixed = NDArray[np.int32]


@dataclass(frozen=True)
class Fill:
    points: Fixed
    colour: BGR


@dataclass(frozen=True)
class Stroke:
    points: Fixed
    colour: BGR
    thickness: int
    closed: bool = False


@dataclass(frozen=True)
class Disc:
    centre: tuple[int, int]  # fixed point
    radius: int  # fixed point
    colour: BGR


@dataclass(frozen=True)
class Shade:
    """Darkens what is under the polygon (a soft contact shadow)."""

    points: Fixed
    factor: float


Prim = Fill | Stroke | Disc | Shade
Layer = tuple[float, list[Prim]]  # (distance from the camera, primitives): far layers are painted first

_AA = cv2.LINE_AA


def scaled(colour: BGR, factor: float) -> BGR:
    b, g, r = (min(255, max(0, round(c * factor))) for c in colour)
    return (b, g, r)


def _shade(img: Image, points: Fixed, factor: float) -> None:
    h, w = img.shape[:2]
    margin = 3
    x0 = max(0, int(points[:, 0].min()) // SUBPIXEL - margin)
    y0 = max(0, int(points[:, 1].min()) // SUBPIXEL - margin)
    x1 = min(w, int(points[:, 0].max()) // SUBPIXEL + margin + 1)
    y1 = min(h, int(points[:, 1].max()) // SUBPIXEL + margin + 1)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = points - np.array([x0 * SUBPIXEL, y0 * SUBPIXEL], np.int32)
    cv2.fillPoly(mask, [local], (255,), _AA, SUBPIXEL_BITS)
    mask = cv2.GaussianBlur(mask, (5, 5), 0)
    keep = 1.0 - (1.0 - factor) * (mask.astype(np.float32) / 255.0)
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi.astype(np.float32) * keep[:, :, None]).astype(np.uint8)


def paint(img: Image, prims: Iterable[Prim]) -> None:
    """Paint primitives onto ``img`` in place, anti-aliased."""
    for p in prims:
        if isinstance(p, Fill):
            cv2.fillPoly(img, [p.points], p.colour, _AA, SUBPIXEL_BITS)
        elif isinstance(p, Stroke):
            cv2.polylines(img, [p.points], p.closed, p.colour, p.thickness, _AA, SUBPIXEL_BITS)
        elif isinstance(p, Disc):
            cv2.circle(img, p.centre, p.radius, p.colour, -1, _AA, SUBPIXEL_BITS)
        else:
            _shade(img, p.points, p.factor)


def paint_mask(mask: Image, prims: Iterable[Prim]) -> None:
    """Set to 255 every pixel of the single-channel ``mask`` that the primitives cover."""
    for p in prims:
        if isinstance(p, Fill | Shade):
            cv2.fillPoly(mask, [p.points], (255,), cv2.LINE_8, SUBPIXEL_BITS)
        elif isinstance(p, Stroke):
            cv2.polylines(mask, [p.points], p.closed, (255,), p.thickness, cv2.LINE_8, SUBPIXEL_BITS)
        else:
            cv2.circle(mask, p.centre, p.radius, (255,), -1, cv2.LINE_8, SUBPIXEL_BITS)


def paint_layers(img: Image, layers: Sequence[Layer]) -> None:
    """Painter's algorithm: farthest layer first."""
    for _, prims in sorted(layers, key=lambda layer: -layer[0]):
        paint(img, prims)


# ---------------------------------------------------------------- people


@dataclass(frozen=True)
class PersonLook:
    height: float  # metres
    build: float  # width factor around 1
    shirt: BGR
    trousers: BGR
    skin: BGR
    hair: BGR
    shoes: BGR
    sway_phase: float  # radians: people standing still shift their weight a little


@dataclass(frozen=True)
class Pose:
    x: float
    z: float
    heading: tuple[float, float]  # unit (dx, dz)
    gait: float  # radians, advances with the distance walked
    moving: bool
    t: float


def person_layer(cam: Camera, look: PersonLook, pose: Pose) -> Layer:
    """A walking (or standing) figure: shadow, legs, torso, arms and head."""
    h, x, z = look.height, pose.x, pose.z
    foot, top = cam.project([(x, 0.0, z), (x, h, z)])
    up = (top - foot) / h  # pixels per metre upwards
    right = np.array([cam.pixels_per_metre(x, h / 2, z), 0.0])
    ppm = float(right[0])
    hx, hz = pose.heading
    swing = 0.32 * math.sin(pose.gait) if pose.moving else 0.0
    sway = 0.0 if pose.moving else 0.02 * math.sin(2 * math.pi * 0.35 * pose.t + look.sway_phase)

    def pt(a: float, b: float) -> Fixed:
        fixed: Fixed = np.round((foot + b * up + a * right) * SUBPIXEL).astype(np.int32)
        return fixed

    def centre(a: float, b: float) -> tuple[int, int]:
        u, v = pt(a, b)
        return (int(u), int(v))

    def seg(a0: float, b0: float, a1: float, b1: float) -> Fixed:
        return np.stack([pt(a0, b0), pt(a1, b1)])

    def thick(metres: float) -> int:
        return max(1, round(metres * ppm))

    prims: list[Prim] = [Shade(cam.project_fixed(floor_circle(x, z, 0.32, 0.22)), 0.72)]
    hip, shoulder, bw = 0.49 * h, 0.8 * h, look.build
    for side, leg in ((-1, swing), (1, -swing)):
        foot_a, foot_b = side * 0.09 * bw + leg * hx, 0.04 + 0.14 * leg * hz
        prims.append(Stroke(seg(side * 0.08 * bw + sway, hip, foot_a, foot_b), look.trousers, thick(0.13)))
        prims.append(Disc(centre(foot_a, foot_b), max(1, round(0.06 * ppm * SUBPIXEL)), look.shoes))
    torso = np.stack([pt(-0.17 * bw + sway, hip - 0.04 * h), pt(0.17 * bw + sway, hip - 0.04 * h),
                      pt(0.21 * bw + sway, shoulder + 0.01 * h), pt(-0.21 * bw + sway, shoulder + 0.01 * h)])
    prims.append(Fill(torso, look.shirt))
    for side, arm in ((-1, -0.6 * swing), (1, 0.6 * swing)):
        hand_a, hand_b = side * 0.25 * bw + arm * hx + sway, 0.45 * h + 0.1 * arm * hz
        arm_line = seg(side * 0.19 * bw + sway, shoulder - 0.01 * h, hand_a, hand_b)
        prims.append(Stroke(arm_line, look.shirt, thick(0.085)))
        prims.append(Disc(centre(hand_a, hand_b), max(1, round(0.045 * ppm * SUBPIXEL)), look.skin))
    head_a, head_b = 1.5 * sway, 0.93 * h
    prims.append(Disc(centre(head_a, head_b + 0.012), max(1, round(0.115 * ppm * SUBPIXEL)), look.hair))
    if hz < 0.35:  # the face shows unless the person walks away from the camera
        face = centre(head_a + 0.03 * hx, head_b - 0.012)
        prims.append(Disc(face, max(1, round(0.098 * ppm * SUBPIXEL)), look.skin))
    return cam.distance(x, h / 2, z), prims


# ---------------------------------------------------------------- objects


class PropKind(StrEnum):
    BOX = "box"
    CHAIR = "chair"
    CART = "cart"
    BICYCLE = "bicycle"


@dataclass(frozen=True)
class PropLook:
    kind: PropKind
    colour: BGR
    second: BGR  # a secondary colour: tape, load, tyres
    size: tuple[float, float, float]  # (width, height, depth) for a box; a scale for the others
    yaw: float  # radians, about the vertical


_LIGHT = np.array([0.3, 0.85, -0.45]) / np.linalg.norm([0.3, 0.85, -0.45])
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (2, 3, 7, 6), (0, 3, 7, 4), (1, 2, 6, 5))


def _place(local: FloatArray, x: float, z: float, yaw: float) -> FloatArray:
    c, s = math.cos(yaw), math.sin(yaw)
    out = local.copy()
    out[:, 0] = x + c * local[:, 0] + s * local[:, 2]
    out[:, 2] = z - s * local[:, 0] + c * local[:, 2]
    return out


def _cuboid(cam: Camera, x: float, z: float, yaw: float, lo: tuple[float, float, float],
            hi: tuple[float, float, float], colour: BGR) -> Layer:
    """A box between local corners ``lo`` and ``hi``, only the faces the camera sees, lit from above."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    local = np.array([(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1),
                      (x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)], np.float64)
    world = _place(local, x, z, yaw)
    centre = world.mean(axis=0)
    eye = np.array([0.0, cam.mount_height, 0.0])
    image = cam.project_fixed(world)
    prims: list[Prim] = []
    for face in _FACES:
        corners = world[list(face)]
        normal = np.cross(corners[1] - corners[0], corners[3] - corners[0])
        normal /= np.linalg.norm(normal)
        if np.dot(normal, corners.mean(axis=0) - centre) < 0:
            normal = -normal
        if np.dot(normal, eye - corners.mean(axis=0)) <= 0:
            continue
        light = 0.6 + 0.4 * max(0.0, float(np.dot(normal, _LIGHT)))
        pts = image[list(face)]
        prims.append(Fill(pts, scaled(colour, light)))
        prims.append(Stroke(pts, scaled(colour, 0.55), 1, closed=True))
    return cam.distance(*centre), prims


def _line3(cam: Camera, pts: FloatArray, colour: BGR, metres: float) -> Layer:
    centre = pts.mean(axis=0)
    ppm = cam.pixels_per_metre(*centre)
    return cam.distance(*centre), [Stroke(cam.project_fixed(pts), colour, max(1, round(metres * ppm)))]


def _ring(cam: Camera, x: float, z: float, yaw: float, centre: tuple[float, float, float], radius: float,
          colour: BGR, metres: float) -> Layer:
    a = np.linspace(0.0, 2 * math.pi, 20, endpoint=False)
    cx, cy, cz = centre
    local = np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a), np.full_like(a, cz)], axis=1)
    world = _place(local, x, z, yaw)
    c = world.mean(axis=0)
    ppm = cam.pixels_per_metre(*c)
    return cam.distance(*c), [Stroke(cam.project_fixed(world), colour, max(1, round(metres * ppm)), closed=True)]


def _shadow(cam: Camera, x: float, z: float, yaw: float, rx: float, rz: float) -> Layer:
    local = floor_circle(0.0, 0.0, rx, rz)
    return 1e9, [Shade(cam.project_fixed(_place(local, x, z, yaw)), 0.62)]  # on the floor: painted first


def _box(cam: Camera, look: PropLook, x: float, z: float) -> list[Layer]:
    w, h, d = look.size
    body = _cuboid(cam, x, z, look.yaw, (-w / 2, 0.0, -d / 2), (w / 2, h, d / 2), look.colour)
    tape = _place(np.array([(-w / 2, h, 0.0), (w / 2, h, 0.0)]), x, z, look.yaw)
    ppm = cam.pixels_per_metre(x, h, z)
    tape_prim = Stroke(cam.project_fixed(tape), look.second, max(1, round(0.05 * ppm)))
    return [_shadow(cam, x, z, look.yaw, w * 0.65, d * 0.65), (body[0], [*body[1], tape_prim])]


def _chair(cam: Camera, look: PropLook, x: float, z: float) -> list[Layer]:
    k, yaw, c = look.size[0], look.yaw, look.colour
    seat_y, half, leg = 0.44 * k, 0.21 * k, 0.018 * k
    layers = [_shadow(cam, x, z, yaw, 0.32 * k, 0.3 * k)]
    for lx in (-half + leg, half - leg):
        for lz in (-half + leg, half - leg):
            layers.append(_cuboid(cam, x, z, yaw, (lx - leg, 0.0, lz - leg), (lx + leg, seat_y, lz + leg),
                                  scaled(look.second, 0.8)))
    layers.append(_cuboid(cam, x, z, yaw, (-half, seat_y, -half), (half, seat_y + 0.05 * k, half), c))
    layers.append(_cuboid(cam, x, z, yaw, (-half, seat_y + 0.05 * k, half - 0.04 * k),
                          (half, seat_y + 0.48 * k, half), c))
    return layers


def _cart(cam: Camera, look: PropLook, x: float, z: float) -> list[Layer]:
    k, yaw, c = look.size[0], look.yaw, look.colour
    lx, lz = 0.45 * k, 0.28 * k
    layers = [_shadow(cam, x, z, yaw, 0.55 * k, 0.35 * k)]
    for wx in (-lx + 0.06, lx - 0.06):
        for wz in (-lz + 0.05, lz - 0.05):
            layers.append(_cuboid(cam, x, z, yaw, (wx - 0.05, 0.0, wz - 0.02), (wx + 0.05, 0.1, wz + 0.02),
                                  (40, 40, 40)))
    layers.append(_cuboid(cam, x, z, yaw, (-lx, 0.1, -lz), (lx, 0.2, lz), c))
    layers.append(_cuboid(cam, x, z, yaw, (-0.35 * k, 0.2, -0.22 * k), (0.2 * k, 0.62 * k, 0.22 * k), look.second))
    for pz in (-lz + 0.02, lz - 0.02):
        layers.append(_cuboid(cam, x, z, yaw, (lx - 0.04, 0.2, pz - 0.015), (lx, 1.0 * k, pz + 0.015),
                              scaled(c, 0.8)))
    layers.append(_cuboid(cam, x, z, yaw, (lx - 0.04, 0.97 * k, -lz), (lx, 1.0 * k, lz), scaled(c, 0.8)))
    return layers


def _bicycle(cam: Camera, look: PropLook, x: float, z: float) -> list[Layer]:
    k, yaw, c = look.size[0], look.yaw, look.colour
    r = 0.34 * k
    rear, front = (-0.52 * k, r, 0.0), (0.52 * k, r, 0.0)
    bb, seat, head = (-0.05 * k, 0.3 * k, 0.0), (-0.18 * k, 0.86 * k, 0.0), (0.36 * k, 0.86 * k, 0.0)
    layers = [_shadow(cam, x, z, yaw, 0.75 * k, 0.18 * k)]
    for hub in (rear, front):
        layers.append(_ring(cam, x, z, yaw, hub, r, look.second, 0.045))
    for a, b in ((rear, bb), (rear, seat), (seat, bb), (bb, head), (seat, head), (head, front)):
        layers.append(_line3(cam, _place(np.array([a, b]), x, z, yaw), c, 0.04))
    saddle = _place(np.array([(-0.27 * k, 0.9 * k, 0.0), (-0.1 * k, 0.9 * k, 0.0)]), x, z, yaw)
    layers.append(_line3(cam, saddle, (30, 30, 30), 0.06))
    bar = _place(np.array([(0.33 * k, 1.0 * k, -0.26), (0.33 * k, 1.0 * k, 0.26)]), x, z, yaw)
    layers.append(_line3(cam, bar, (60, 60, 60), 0.035))
    stem = _place(np.array([head, (0.33 * k, 1.0 * k, 0.0)]), x, z, yaw)
    layers.append(_line3(cam, stem, c, 0.04))
    return layers


def prop_layers(cam: Camera, look: PropLook, x: float, z: float) -> list[Layer]:
    """The object standing at floor position ``(x, z)``, as layers to paint with the rest of the scene."""
    draw = {PropKind.BOX: _box, PropKind.CHAIR: _chair, PropKind.CART: _cart, PropKind.BICYCLE: _bicycle}[look.kind]
    return draw(cam, look, x, z)


def prop_mask(cam: Camera, look: PropLook, x: float, z: float) -> Image:
    """What the object covers in the image (including its contact shadow), 255 inside."""
    mask = np.zeros((cam.height, cam.width), np.uint8)
    for _, prims in prop_layers(cam, look, x, z):
        paint_mask(mask, prims)
    return mask


# ---------------------------------------------------------------- the door


def door_panel_layer(cam: Camera, angle_deg: float, colour: BGR, glass: BGR) -> Layer:
    """The exit door swung ``angle_deg`` outwards about its hinge (seen through the doorway)."""
    a = math.radians(angle_deg)
    width = 2 * DOOR_HALF_WIDTH
    dx, dz = math.cos(a), math.sin(a)

    def at(f: float, y: float) -> tuple[float, float, float]:
        return (DOOR_HINGE_X + f * width * dx, y, BACK_WALL_Z + f * width * dz)

    panel = cam.project_fixed(np.array([at(0, 0), at(1, 0), at(1, DOOR_HEIGHT), at(0, DOOR_HEIGHT)]))
    window = cam.project_fixed(np.array([at(0.3, 1.3), at(0.7, 1.3), at(0.7, 1.9), at(0.3, 1.9)]))
    bar = cam.project_fixed(np.array([at(0.12, 1.0), at(0.9, 1.0)]))
    light = 0.55 + 0.45 * math.cos(a)
    centre = at(0.5, DOOR_HEIGHT / 2)
    ppm = cam.pixels_per_metre(*centre)
    prims: list[Prim] = [Fill(panel, scaled(colour, light)), Fill(window, scaled(glass, 0.9)),
                         Stroke(bar, (150, 150, 150), max(1, round(0.04 * ppm))),
                         Stroke(panel, scaled(colour, 0.5 * light), 1, closed=True)]
    return cam.distance(*centre), prims
