"""Synthetic exit-camera video: labelled clips for the edge agent's exit-blockage tests and bench.

``python -m simulators.video OUTDIR`` writes the standard set (see ``docs/synthetic-video.md``):
each clip is a video file and a JSON file beside it with the exit region and per-frame ground
truth. :func:`~simulators.video.clips.make_clip` gives a clip's timeline and renderer in memory.
"""

from simulators.video.camera import Camera
from simulators.video.clips import STANDARD_CLIPS, make_clip
from simulators.video.output import write_clip
from simulators.video.scene import RenderOptions

__all__ = ["STANDARD_CLIPS", "Camera", "RenderOptions", "main", "make_clip", "write_clip"]


def main(argv: list[str] | None = None) -> int:
    """Command entry point (``python -m simulators.video``); returns the exit code."""
    from simulators.video.cli import main as cli_main  # noqa: PLC0415 - keeps argparse and the process pool out of `import simulators.video`

    return cli_main(argv)
