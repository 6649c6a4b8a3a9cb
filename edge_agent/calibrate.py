"""Exit-region calibration: one frame of the exit's camera with the region drawn, for the installer's eye."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.config import AgentConfig


class CalibrationError(ValueError):
    pass


def grab_frame(source: str | int, attempts: int = 25) -> np.ndarray:
    capture = cv2.VideoCapture(source)
    try:
        if not capture.isOpened():
            raise CalibrationError(f"cannot open camera source {source!r}")
        for _ in range(attempts):  # the first frames of a stream can be empty
            ok, frame = capture.read()
            if ok and frame is not None:
                return np.asarray(frame, dtype=np.uint8)
        raise CalibrationError(f"camera source {source!r} gave no frame")
    finally:
        capture.release()


def draw_region(frame: np.ndarray, region: list[tuple[int, int]], label: str,
                colour: tuple[int, int, int] = (0, 0, 255)) -> np.ndarray:
    """The polygon shaded and outlined in ``colour`` (BGR; the region red, a door blue), its vertices labelled."""
    image = frame.copy()
    points = np.asarray(region, np.int32)
    overlay = image.copy()
    cv2.fillPoly(overlay, [points], colour)
    image = cv2.addWeighted(overlay, 0.25, image, 0.75, 0)
    cv2.polylines(image, [points], isClosed=True, color=colour, thickness=2)
    for x, y in region:  # the vertices, with their pixel coordinates, to edit the YAML by
        cv2.circle(image, (x, y), 4, (0, 255, 255), -1)
        cv2.putText(image, f"{x},{y}", (x + 6, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
    cv2.putText(image, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return np.asarray(image, dtype=np.uint8)


def frame_size(source: str | int) -> tuple[int, int]:
    """(width, height) of the source's frames."""
    height, width = grab_frame(source).shape[:2]
    return int(width), int(height)


def regions_outside(config: AgentConfig, *, streams: bool = False) -> list[tuple[tuple[int | str, ...], str]]:
    """Exit regions with points outside their camera's frame, at their key. Video files are
    opened; live streams only with ``streams`` (``check-config --cameras``: needs the camera)."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    sizes: dict[str, tuple[int, int] | None] = {}
    cameras = {c.id: c for c in config.cameras}
    for index, exit_ in enumerate(config.exits):
        camera = cameras[exit_.camera]
        is_file = isinstance(camera.source, str) and "://" not in camera.source
        if not (is_file or streams):
            continue
        if camera.id not in sizes:
            try:
                sizes[camera.id] = frame_size(camera.source)
            except CalibrationError as exc:
                sizes[camera.id] = None
                problems.append((("cameras", config.cameras.index(camera), "source"), str(exc)))
        size = sizes[camera.id]
        if size is None:
            continue
        width, height = size
        for key, polygon in (("region", exit_.region), ("door", exit_.door or [])):
            outside = _outside(polygon, width, height)
            if outside:
                problems.append((("exits", index, key),
                                 f"points {outside} are outside the {width}x{height} frame of camera {camera.id}"))
    return problems


def _outside(polygon: list[tuple[int, int]], width: int, height: int) -> list[tuple[int, int]]:
    return [(x, y) for x, y in polygon if not (0 <= x < width and 0 <= y < height)]


def calibrate(config: AgentConfig, exit_id: str, out: Path) -> Path:
    """Save ``out`` (JPEG or PNG): the exit's camera view with its region outlined."""
    exit_ = next((e for e in config.exits if e.id == exit_id), None)
    if exit_ is None:
        known = ", ".join(e.id for e in config.exits) or "none"
        raise CalibrationError(f"no exit {exit_id!r} in the config (exits: {known})")
    camera = next(c for c in config.cameras if c.id == exit_.camera)
    frame = grab_frame(camera.source)
    height, width = frame.shape[:2]
    for key, polygon in (("region", exit_.region), ("door", exit_.door or [])):
        outside = _outside(polygon, width, height)
        if outside:
            raise CalibrationError(f"exit {exit_id!r}: {key} points {outside} are outside the {width}x{height} frame")
    image = draw_region(frame, exit_.region, f"{exit_.id} ({camera.id})")
    if exit_.door:
        image = draw_region(image, exit_.door, "", colour=(255, 160, 0))
    if not cv2.imwrite(str(out), image):
        raise CalibrationError(f"could not write {out}")
    return out
