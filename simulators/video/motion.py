"""Piecewise-linear paths on the floor: where a person or an object is at time ``t``."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

Point = tuple[float, float]  # floor position (x, z) in metres


@dataclass(frozen=True)
class Path:
    """Keyframes ``(time, position)``, linear in between. Equal consecutive positions mean a rest."""

    times: tuple[float, ...]
    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        if len(self.times) != len(self.points) or not self.times:
            raise ValueError("a path needs as many times as points, at least one")
        if any(b < a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ValueError("path times must not decrease")

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        return self.times[-1]

    def _segment(self, t: float) -> int:
        """Index ``i`` of the segment ``times[i] <= t < times[i+1]`` (clamped to the path)."""
        return max(0, min(bisect_right(self.times, t) - 1, len(self.times) - 2))

    def at(self, t: float) -> Point:
        """Position at ``t``, clamped to the first and last keyframes."""
        if len(self.times) == 1 or t <= self.start:
            return self.points[0]
        if t >= self.end:
            return self.points[-1]
        i = self._segment(t)
        t0, t1 = self.times[i], self.times[i + 1]
        (x0, z0), (x1, z1) = self.points[i], self.points[i + 1]
        f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
        return (x0 + f * (x1 - x0), z0 + f * (z1 - z0))

    def moving(self, t: float) -> bool:
        if len(self.times) == 1 or not self.start <= t < self.end:
            return False
        i = self._segment(t)
        return self.points[i] != self.points[i + 1]

    def heading(self, t: float) -> Point:
        """Unit direction of the current (or, at rest, the last) movement; ``(0, 1)`` if none yet."""
        i = self._segment(t) if len(self.times) > 1 else 0
        for j in range(i, -1, -1):
            if j + 1 < len(self.points) and self.points[j] != self.points[j + 1]:
                (x0, z0), (x1, z1) = self.points[j], self.points[j + 1]
                n = math.hypot(x1 - x0, z1 - z0)
                return ((x1 - x0) / n, (z1 - z0) / n)
        return (0.0, 1.0)

    def distance(self, t: float) -> float:
        """Distance travelled since the start (drives the walking gait)."""
        total = 0.0
        for i in range(len(self.times) - 1):
            if t <= self.times[i]:
                break
            (x0, z0) = self.points[i]
            x1, z1 = self.at(min(t, self.times[i + 1]))
            total += math.hypot(x1 - x0, z1 - z0)
        return total

    def rests(self) -> list[tuple[float, float]]:
        """Closed intervals during which the position does not change, merged."""
        out: list[tuple[float, float]] = []
        for i in range(len(self.times) - 1):
            if self.points[i] == self.points[i + 1]:
                t0, t1 = self.times[i], self.times[i + 1]
                if out and out[-1][1] == t0:
                    out[-1] = (out[-1][0], t1)
                else:
                    out.append((t0, t1))
        return out


class PathBuilder:
    """Builds a :class:`Path` step by step: walk here at this speed, wait so long."""

    def __init__(self, t: float, start: Point) -> None:
        self._times = [t]
        self._points = [start]

    @property
    def now(self) -> float:
        return self._times[-1]

    @property
    def here(self) -> Point:
        return self._points[-1]

    def walk(self, to: Point, speed: float) -> PathBuilder:
        if speed <= 0:
            raise ValueError("speed must be positive")
        (x0, z0) = self.here
        dt = math.hypot(to[0] - x0, to[1] - z0) / speed
        self._times.append(self.now + dt)
        self._points.append(to)
        return self

    def wait(self, seconds: float) -> PathBuilder:
        if seconds < 0:
            raise ValueError("cannot wait a negative time")
        self._times.append(self.now + seconds)
        self._points.append(self.here)
        return self

    def wait_until(self, t: float) -> PathBuilder:
        return self.wait(max(0.0, t - self.now))

    def build(self) -> Path:
        return Path(tuple(self._times), tuple(self._points))
