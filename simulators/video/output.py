"""Clip files: the video (MPEG-4 part 2, ``mp4v`` in ``.mp4``) and its ground truth beside it (``.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simulators.video.camera import Camera, doorway, exit_region
from simulators.video.clips import make_clip
from simulators.video.drawing import Image
from simulators.video.timeline import Timeline

CODEC = "mp4v"  # written and read back by opencv-python-headless' bundled FFmpeg
VIDEO_SUFFIX = ".mp4"


@dataclass(frozen=True)
class ClipFiles:
    video: Path
    metadata: Path
    frames: int


def metadata(timeline: Timeline, camera: Camera, seed: int) -> dict[str, Any]:
    """The JSON written beside each video. ``blocked`` is per frame, without any persistence time."""
    spec = timeline.spec
    return {
        "name": spec.name,
        "description": spec.description,
        "video": spec.name + VIDEO_SUFFIX,
        "fps": timeline.fps,
        "width": camera.width,
        "height": camera.height,
        "exit_region": [[x, y] for x, y in exit_region(camera, spec.region_scale)],
        "door": [[x, y] for x, y in doorway(camera)],  # the door leaf's picture (an exit's optional `door`)
        "frames": timeline.frames,
        "blocked": list(timeline.blocked),
        "attended": list(timeline.attended),
        "events": [{"frame": e.frame, "what": e.what} for e in timeline.events],
        "seed": seed,
    }


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float


def video_info(path: Path) -> VideoInfo:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open {path}")
        return VideoInfo(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), float(cap.get(cv2.CAP_PROP_FPS)))
    finally:
        cap.release()


def read_frames(path: Path) -> Iterator[Image]:
    """Decode every frame of a clip (BGR)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open {path}")
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield np.asarray(frame, dtype=np.uint8)
    finally:
        cap.release()


def write_clip(outdir: Path, name: str, seed: int = 0, fps: float = 10.0, camera: Camera | None = None) -> ClipFiles:
    """Render one standard clip into ``outdir/NAME.mp4`` and ``outdir/NAME.json``, and check it reads back."""
    camera = camera or Camera()
    timeline, renderer = make_clip(name, seed, fps, camera)
    outdir.mkdir(parents=True, exist_ok=True)
    video = outdir / f"{name}{VIDEO_SUFFIX}"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*CODEC), timeline.fps, (camera.width, camera.height))
    if not writer.isOpened():
        raise OSError(f"cannot write {video} with codec {CODEC}")
    try:
        for k in range(timeline.frames):
            writer.write(renderer.frame(k))
    finally:
        writer.release()
    info = video_info(video)
    if (info.frames, info.width, info.height) != (timeline.frames, camera.width, camera.height):
        raise OSError(f"{video} reads back as {info}, expected {timeline.frames} frames of "
                      f"{camera.width}x{camera.height}")
    meta = outdir / f"{name}.json"
    meta.write_text(json.dumps(metadata(timeline, camera, seed), indent=1) + "\n", encoding="utf-8")
    return ClipFiles(video, meta, timeline.frames)
