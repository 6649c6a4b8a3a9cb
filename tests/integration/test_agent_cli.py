"""`safeguard agent check-config` and `safeguard agent calibrate` as an installer uses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.integration


def safeguard(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    return subprocess.run([sys.executable, "-m", "safeguard.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def site_config(tmp_path: Path, source: str, region: str, door: str = "") -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"""\
site: hz-0001
broker: {{url: "mqtt://127.0.0.1:1"}}
cameras:
  - {{id: cam-1, source: "{source}"}}
exits:
  - {{id: exit-1, camera: cam-1, region: {region}{f", door: {door}" if door else ""}}}
""", encoding="utf-8")
    return path


def grey_video(path: Path, frames: int = 5) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(frames):
        writer.write(np.full((240, 320, 3), 128, np.uint8))
    writer.release()


def test_check_config_ok_and_bad(tmp_path: Path) -> None:
    good = site_config(tmp_path, "rtsp://camera/1", "[[0, 0], [10, 0], [10, 10]]")
    result = safeguard("agent", "check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert "ok (site hz-0001: 1 cameras, 1 exits, 0 smoke detectors)" in result.stderr
    bad = site_config(tmp_path, "rtsp://camera/1", "[[0, 0], [10, 0]]")
    result = safeguard("agent", "check-config", str(bad))
    assert result.returncode == 2
    assert "site.yaml:6: exits.0.region: List should have at least 3 items" in result.stderr


def test_calibrate_draws_the_region_on_a_frame(tmp_path: Path) -> None:
    video = tmp_path / "exit.avi"
    grey_video(video)
    config = site_config(tmp_path, str(video), "[[100, 60], [220, 60], [220, 200], [100, 200]]")
    out = tmp_path / "region.png"
    result = safeguard("agent", "calibrate", str(config), "--exit", "exit-1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    image = cv2.imread(str(out))
    assert image is not None
    assert image.shape == (240, 320, 3)
    inside, outside = image[130, 160], image[20, 20]
    assert inside[2] > inside[0] + 30, "the region is tinted red"
    assert abs(int(outside[2]) - int(outside[0])) < 10, "outside the region the frame is untouched"


def test_calibrate_refuses_points_outside_the_frame(tmp_path: Path) -> None:
    video = tmp_path / "exit.avi"
    grey_video(video)
    config = site_config(tmp_path, str(video), "[[100, 60], [900, 60], [220, 200]]")
    result = safeguard("agent", "calibrate", str(config), "--exit", "exit-1", "--out", str(tmp_path / "r.png"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "points [(900, 60)] are outside the 320x240 frame" in result.stderr


def test_check_config_refuses_a_region_outside_a_video_files_frame(tmp_path: Path) -> None:
    video = tmp_path / "exit.avi"
    grey_video(video)
    inside = site_config(tmp_path, str(video), "[[100, 60], [220, 60], [220, 200]]")
    assert safeguard("agent", "check-config", str(inside)).returncode == 0
    outside = site_config(tmp_path, str(video), "[[100, 60], [900, 60], [220, 200]]")
    result = safeguard("agent", "check-config", str(outside))
    assert result.returncode == 2
    expected = "site.yaml:6: exits.0.region: points [(900, 60)] are outside the 320x240 frame of camera cam-1"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_the_door_polygon_is_checked_against_the_frame_and_drawn_in_blue(tmp_path: Path) -> None:
    video = tmp_path / "exit.avi"
    grey_video(video)
    region = "[[100, 60], [220, 60], [220, 200], [100, 200]]"
    config = site_config(tmp_path, str(video), region, door="[[130, 70], [190, 70], [190, 140], [130, 140]]")
    out = tmp_path / "region.png"
    result = safeguard("agent", "calibrate", str(config), "--exit", "exit-1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    image = cv2.imread(str(out))
    assert image is not None
    door, floor = image[105, 160], image[180, 160]
    assert door[0] > door[2], "the door is tinted blue over the region's red"
    assert floor[2] > floor[0] + 30, "the rest of the region stays red"

    outside = site_config(tmp_path, str(video), region, door="[[130, 70], [400, 70], [190, 140]]")
    result = safeguard("agent", "check-config", str(outside))
    assert result.returncode == 2
    assert "site.yaml:6: exits.0.door: points [(400, 70)] are outside the 320x240 frame of camera cam-1" \
        in result.stderr
    too_few = site_config(tmp_path, str(video), region, door="[[130, 70], [190, 70]]")
    result = safeguard("agent", "check-config", str(too_few))
    assert result.returncode == 2
    assert "exits.0.door: List should have at least 3 items" in result.stderr
