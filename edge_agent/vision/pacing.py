"""Frame pacing: which frames of a camera an exit detector analyses (at most ``fps`` a second)."""

from __future__ import annotations


class FramePacer:
    """Takes a frame when it is due on a fixed grid of ``1 / fps`` seconds.

    A frame is due from a quarter period before its slot, so that a 10 fps source gives 5 fps
    (not 3.3 fps, as a plain ``ts - last < period`` test does on float timestamps: 0.2 - 0.1
    is 0.09999...), and a 25 or 30 fps source gives 5 fps on average. The first frame is always
    taken, whatever its timestamp (0 included). A jump (a stalled stream) restarts the grid.
    """

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.period = 1.0 / fps
        self._due: float | None = None

    def take(self, ts: float) -> bool:
        if self._due is not None and ts < self._due - 0.25 * self.period:
            return False
        if self._due is None or ts - self._due >= self.period:
            self._due = ts + self.period  # first frame, or frames were missing: a new grid
        else:
            self._due += self.period
        return True
