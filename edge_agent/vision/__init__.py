"""Pure vision for the edge agent: frames in, results out (no clock, camera or broker).

:class:`ExitBlockageDetector` decides per exit whether an object has been left standing in
the exit region (issue 3, point 3). See ``docs/edge-agent-vision.md``.
"""

from edge_agent.vision.exit_blockage import (
    BlockageParams,
    ExitBlockageDetector,
    ExitObservation,
    draw_observation,
)
from edge_agent.vision.pacing import FramePacer
from protocol import ExitState

__all__ = ["BlockageParams", "ExitBlockageDetector", "ExitObservation", "ExitState", "FramePacer", "draw_observation"]
