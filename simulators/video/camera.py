"""The exit camera: a pinhole looking down a corridor at an exit door, and the corridor's geometry.

World coordinates are metres: ``x`` across the corridor (right positive), ``y`` up from the
floor, ``z`` along the corridor away from the camera. The camera hangs at ``mount_height``
above ``x = z = 0`` and is pitched down. The exit door is in the back wall at ``z = BACK_WALL_Z``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

CORRIDOR_HALF_WIDTH = 2.2
BACK_WALL_Z = 5.0
NEAR_Z = 0.2  # the side walls and floor start behind the image's bottom edge
CEILING_Y = 2.9
DOOR_HALF_WIDTH = 0.55
DOOR_HEIGHT = 2.1
DOOR_HINGE_X = -DOOR_HALF_WIDTH  # the door opens outwards (away from the camera), hinged on the left
EXIT_HALF_WIDTH = 1.0  # the floor in front of the door that must stay clear
EXIT_NEAR_Z = 3.7

SUBPIXEL_BITS = 4  # cv2 drawing ``shift``: coordinates carry 4 fractional bits
SUBPIXEL = 1 << SUBPIXEL_BITS


@dataclass(frozen=True)
class Camera:
    width: int = 640
    height: int = 480
    mount_height: float = 2.6
    pitch_deg: float = 20.0
    focal_ratio: float = 0.62  # focal length in pixels / image width

    @property
    def focal(self) -> float:
        return self.focal_ratio * self.width

    def _depth_and_image(self, points: ArrayLike) -> tuple[FloatArray, FloatArray]:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        pitch = math.radians(self.pitch_deg)
        s, c = math.sin(pitch), math.cos(pitch)
        dy = p[:, 1] - self.mount_height
        depth = np.maximum(-dy * s + p[:, 2] * c, 0.05)  # along the optical axis
        down = -dy * c - p[:, 2] * s
        u = self.width / 2 + self.focal * p[:, 0] / depth
        v = self.height / 2 + self.focal * down / depth
        return depth, np.stack([u, v], axis=1)

    def project(self, points: ArrayLike) -> FloatArray:
        """World points ``(N, 3)`` → image points ``(N, 2)`` in pixels (float)."""
        return self._depth_and_image(points)[1]

    def project_fixed(self, points: ArrayLike) -> NDArray[np.int32]:
        """Like :meth:`project`, as int32 fixed-point coordinates for cv2 drawing with ``shift``."""
        return np.round(self.project(points) * SUBPIXEL).astype(np.int32)

    def pixels_per_metre(self, x: float, y: float, z: float) -> float:
        depth, _ = self._depth_and_image((x, y, z))
        return float(self.focal / depth[0])

    def distance(self, x: float, y: float, z: float) -> float:
        """Distance from the camera, used to paint far things first."""
        return math.hypot(x, y - self.mount_height, z)


def floor_circle(cx: float, cz: float, rx: float, rz: float, n: int = 14) -> FloatArray:
    """Points of an ellipse lying on the floor, as world points ``(n, 3)``."""
    a = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), np.zeros(n), cz + rz * np.sin(a)], axis=1)


def exit_region_world() -> FloatArray:
    """The exit region: the floor in front of the door and the doorway itself."""
    w, d, z0, z1, h = EXIT_HALF_WIDTH, DOOR_HALF_WIDTH, EXIT_NEAR_Z, BACK_WALL_Z, DOOR_HEIGHT
    return np.array([
        (-w, 0, z0), (w, 0, z0), (w, 0, z1), (d, 0, z1), (d, h, z1), (-d, h, z1), (-d, 0, z1), (-w, 0, z1),
    ], dtype=np.float64)


def exit_region(camera: Camera, scale: float = 1.0) -> list[tuple[int, int]]:
    """The exit region as an image polygon (integer pixels), as written in each clip's metadata;
    ``scale`` enlarges it about its centre (clipped to the frame: "the same object, a bigger region")."""
    pts = camera.project(exit_region_world())
    if scale != 1.0:
        centre = pts.mean(axis=0)
        pts = centre + (pts - centre) * scale
        pts[:, 0] = np.clip(pts[:, 0], 0, camera.width - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, camera.height - 1)
    pts = np.round(pts).astype(int)
    return [(int(u), int(v)) for u, v in pts]


def doorway_world() -> FloatArray:
    d, z = DOOR_HALF_WIDTH, BACK_WALL_Z
    return np.array([(-d, 0, z), (d, 0, z), (d, DOOR_HEIGHT, z), (-d, DOOR_HEIGHT, z)], dtype=np.float64)


def doorway(camera: Camera) -> list[tuple[int, int]]:
    """The doorway (the door leaf's picture) as an image polygon, as written in each clip's metadata:
    where the door's own state shows (opened, propped open, closed), above the threshold."""
    return [(int(u), int(v)) for u, v in np.round(camera.project(doorway_world())).astype(int)]
