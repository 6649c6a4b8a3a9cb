"""The agent's ExitWatch: frame pacing, the learnt reference, the operator's accept-clear request."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.agent import ExitWatch
from edge_agent.config import ExitConfig
from safeguard.cli import main

REGION = [(50, 40), (110, 40), (110, 100), (50, 100)]


def floor(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.kron(rng.uniform(70, 190, (15, 20)), np.ones((8, 8)))
    noise = np.random.default_rng(seed + 100).normal(0, 2.0, base.shape)
    grey = np.clip(base + noise, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def test_a_10_fps_camera_is_analysed_at_5_fps_from_its_first_frame_at_t_0(tmp_path: Path) -> None:
    # Before: `ts - last < 1/5` with last = 0.0 skipped t = 0 and took 10 fps down to ~3.3 fps.
    watch = ExitWatch(ExitConfig(id="exit-1", camera="cam-1", region=REGION))
    frame = floor()
    taken = [k / 10 for k in range(100) if watch.feed(frame, k / 10) is not None]
    assert taken[0] == 0.0
    assert len(taken) == 50


def test_the_learnt_view_is_saved_and_an_accept_request_resets_the_exit(tmp_path: Path) -> None:
    reference = tmp_path / "exit-1.png"
    watch = ExitWatch(ExitConfig(id="exit-1", camera="cam-1", region=REGION, reference=reference, persistence_s=3))
    frame = floor()
    for k in range(30):  # 6 s at 5 fps: past the first seconds' median
        watch.feed(frame, k / 5)
    assert reference.exists(), "the learnt empty scene is saved as the reference"
    box = frame.copy()
    box[55:80, 65:95] = 30  # a box left in the exit ...
    for k in range(30, 80):
        result = watch.feed(box, k / 5)
    assert result is not None
    assert result[0].state.value == "blocked"
    request = watch.accept_request
    assert request is not None
    request.touch()  # ... that the operator says is fine (safeguard agent accept-clear)
    result = watch.feed(box, 80 / 5)
    assert result is not None
    assert result[0].state.value == "clear"
    assert not request.exists()


def test_accept_clear_command_leaves_the_request_for_the_running_agent(tmp_path: Path) -> None:
    reference = tmp_path / "exit-1.png"
    config = tmp_path / "site.yaml"
    config.write_text(f"""\
site: s-1
broker: {{url: "mqtt://127.0.0.1:1883"}}
cameras: [{{id: cam-1, source: 0}}]
exits:
  - {{id: exit-1, camera: cam-1, region: [[10, 10], [100, 10], [100, 100]], reference: "{reference}"}}
""", encoding="utf-8")
    assert main(["agent", "accept-clear", str(config), "--exit", "exit-1"]) == 0
    watch = ExitWatch(ExitConfig(id="exit-1", camera="cam-1", region=REGION, reference=reference))
    assert watch.accept_request is not None
    assert watch.accept_request.exists()
