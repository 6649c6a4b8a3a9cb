"""Synthetic exit-camera clips: the ground truth matches what is drawn, files read back, seeds reproduce.

Clips are rendered small (160x120) and at a low frame rate to stay fast; the scripts are the
standard ones. For the ground-truth checks, noise, light changes, people and the door are
switched off so the only difference from the empty corridor is the object itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from simulators.video import RenderOptions, main, make_clip
from simulators.video.camera import Camera, exit_region
from simulators.video.clips import STANDARD_CLIPS
from simulators.video.motion import Path as FloorPath
from simulators.video.motion import PathBuilder
from simulators.video.output import metadata, read_frames, video_info, write_clip
from simulators.video.scene import Renderer
from simulators.video.timeline import Timeline

SMALL = Camera(160, 120)
FPS = 4.0
OBJECTS_ONLY = RenderOptions(noise=False, lighting=False, people=False, door=False)
CLEAN = RenderOptions(noise=False, lighting=False)
OBJECT_CLIPS = ["box_left", "box_removed", "chair_left_lights_drift", "cart_left_lights_switch",
                "bicycle_among_people", "box_beside_exit", "cart_brief_stop"]


def region_mask(camera: Camera) -> np.ndarray:
    mask = np.zeros((camera.height, camera.width), np.uint8)
    cv2.fillPoly(mask, [np.array(exit_region(camera), np.int32)], (255,))
    return mask > 0


def render(
    name: str, options: RenderOptions, seed: int = 0, camera: Camera = SMALL, fps: float = FPS
) -> tuple[Timeline, Renderer, list[np.ndarray]]:
    timeline, renderer = make_clip(name, seed, fps, camera, options)
    return timeline, renderer, [renderer.frame(k) for k in range(timeline.frames)]


def truth_mismatches(frames: list[np.ndarray], empty: np.ndarray, region: np.ndarray,
                     blocked: list[bool] | tuple[bool, ...]) -> list[int]:
    """Frames whose label disagrees with the picture (objects only, nothing else drawn).

    Blocked: something differs from the empty corridor, mostly inside the exit region, it is
    standing still (pixel-for-pixel equal to a neighbouring frame), and unchanged since the
    previous frame if that one was blocked too.
    Not blocked: nothing drawn, or mostly outside the region, or it is moving on (differs from
    the next frame): an object that stops at frame k is blocked from frame k.
    """
    bad = []
    n = len(frames)
    for k, frame in enumerate(frames):
        drawn = np.any(frame != empty, axis=2)
        total, inside = int(drawn.sum()), int((drawn & region).sum())
        same_as_previous = k > 0 and np.array_equal(frame, frames[k - 1])
        same_as_next = k + 1 < n and np.array_equal(frame, frames[k + 1])
        if blocked[k]:
            ok = total > 0 and inside >= 0.2 * total and (same_as_previous or same_as_next)
            if k > 0 and blocked[k - 1]:
                ok = ok and same_as_previous
        else:
            ok = total == 0 or inside < 0.3 * total or not same_as_next
        if not ok:
            bad.append(k)
    return bad


@pytest.mark.parametrize("name", OBJECT_CLIPS)
def test_ground_truth_matches_the_drawn_object(name: str) -> None:
    timeline, renderer, frames = render(name, OBJECTS_ONLY)
    assert truth_mismatches(frames, renderer.background, region_mask(SMALL), timeline.blocked) == []
    drawn = [bool(np.any(f != renderer.background)) for f in frames]
    assert any(drawn), "the object is never drawn"
    if name == "box_beside_exit":
        assert not any(timeline.blocked)
        assert drawn[-1], "the box stays, beside the exit"
    else:
        assert any(timeline.blocked)


def test_the_check_catches_wrong_labels() -> None:
    timeline, renderer, frames = render("box_removed", OBJECTS_ONLY)
    region = region_mask(SMALL)
    first = timeline.blocked.index(True)
    last = len(timeline.blocked) - 1 - timeline.blocked[::-1].index(True)
    early = list(timeline.blocked)
    early[first - 3] = True  # box still being pushed in
    late = list(timeline.blocked)
    late[last + 2] = True  # box already taken away
    missed = list(timeline.blocked)
    missed[first + 5] = False  # box standing there
    one_late = list(timeline.blocked)
    one_late[first] = False  # the frame it stops on counts
    one_long = list(timeline.blocked)
    one_long[last + 1] = True  # the frame it moves off does not
    for labels in (early, late, missed, one_late, one_long):
        assert truth_mismatches(frames, renderer.background, region, labels) != []


def test_box_removed_is_blocked_for_ten_seconds_from_the_frame_it_stops() -> None:
    timeline, _, _ = render("box_removed", OBJECTS_ONLY, fps=10.0)
    runs = "".join("1" if b else "0" for b in timeline.blocked).strip("0")
    assert set(runs) == {"1"}
    assert 100 <= len(runs) <= 101
    prop = timeline.spec.props[0]
    (t0, t1), = prop.rests()
    assert timeline.blocked.index(True) == math.ceil(t0 * 10 - 1e-9)
    assert t1 - t0 == pytest.approx(10.0)


@pytest.mark.parametrize("name", ["people_passing", "person_pausing"])
def test_people_in_the_exit_are_never_blocked(name: str) -> None:
    timeline, renderer, frames = render(name, CLEAN)
    region = region_mask(SMALL)
    in_region = [int((np.any(f != renderer.background, axis=2) & region).sum()) for f in frames]
    assert not any(timeline.blocked)
    assert sum(1 for n in in_region if n > 20) >= 3 * FPS, "people should be seen in the exit region"
    if name == "person_pausing":  # standing 15 s in the exit region, still not blocked
        longest = run = 0
        for n in in_region:
            run = run + 1 if n > 20 else 0
            longest = max(longest, run)
        assert longest >= 15 * FPS


def test_the_door_opening_is_never_blocked() -> None:
    timeline, renderer, frames = render("door_opening", RenderOptions(noise=False, lighting=False, people=False))
    region = region_mask(SMALL)
    assert not any(timeline.blocked)
    open_frames = [k for k, a in enumerate(timeline.door_angle) if a > 30]
    assert len(open_frames) >= 8 * FPS  # held open 8 s, plus the people going through
    for k in open_frames:
        assert (np.any(frames[k] != renderer.background, axis=2) & region).sum() > 100
    assert np.array_equal(frames[0], renderer.background)


def test_lights_switching_off_darkens_but_the_cart_stays_blocked() -> None:
    timeline, _, frames = render("cart_left_lights_switch", RenderOptions())
    before, off = frames[round(25 * FPS)], frames[round(40 * FPS)]
    assert float(off.mean()) < 0.7 * float(before.mean())
    assert all(timeline.blocked[round(25 * FPS):])


def test_daylight_drift_changes_brightness_slowly() -> None:
    _, _, frames = render("chair_left_lights_drift", RenderOptions(noise=False))
    means = np.array([float(f.mean()) for f in frames])
    assert means.max() - means.min() > 15  # a strong drift over the minute...
    step = np.abs(np.diff(means[round(20 * FPS):]))  # ...but gradual once the chair stands
    assert step.max() < 4


def test_json_round_trips_and_video_reads_back(tmp_path: Path) -> None:
    files = write_clip(tmp_path, "box_removed", seed=3, fps=FPS, camera=SMALL)
    timeline, _ = make_clip("box_removed", 3, FPS, SMALL)
    meta = json.loads(files.metadata.read_text(encoding="utf-8"))
    assert meta == json.loads(json.dumps(metadata(timeline, SMALL, 3)))
    assert {"name", "fps", "width", "height", "exit_region", "frames", "blocked", "events", "seed"} <= meta.keys()
    assert (meta["name"], meta["fps"], meta["width"], meta["height"], meta["seed"]) == ("box_removed", FPS, 160, 120, 3)
    assert len(meta["blocked"]) == meta["frames"] == timeline.frames
    assert len(meta["exit_region"]) >= 3
    assert all(len(p) == 2 for p in meta["exit_region"])
    assert [e["frame"] for e in meta["events"]] == sorted(e["frame"] for e in meta["events"])
    assert any("set down in the exit region" in e["what"] for e in meta["events"])
    decoded = list(read_frames(files.video))
    assert len(decoded) == timeline.frames
    assert all(f.shape == (120, 160, 3) for f in decoded)
    info = video_info(files.video)
    assert (info.frames, info.width, info.height) == (timeline.frames, 160, 120)
    assert info.fps == pytest.approx(FPS)


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    a_tl, a = make_clip("bicycle_among_people", 7, FPS, SMALL)
    b_tl, b = make_clip("bicycle_among_people", 7, FPS, SMALL)
    c_tl, c = make_clip("bicycle_among_people", 8, FPS, SMALL)
    picks = [0, a_tl.frames // 3, a_tl.frames // 2, a_tl.frames - 1]
    for k in picks:
        assert np.array_equal(a.frame(k), b.frame(k))
    assert a_tl.blocked == b_tl.blocked
    assert a_tl.events == b_tl.events
    assert any(not np.array_equal(a.frame(k), c.frame(k)) for k in picks)
    assert a_tl.events != c_tl.events


def test_a_clip_does_not_depend_on_the_others() -> None:
    timeline, renderer = make_clip("box_left", 5, FPS, SMALL)
    again, renderer2 = make_clip("box_left", 5, FPS, SMALL)
    assert np.array_equal(renderer.frame(40), renderer2.frame(40))
    assert timeline.blocked == again.blocked


def test_paths_rest_and_move() -> None:
    path = PathBuilder(1.0, (0.0, 0.0)).walk((0.0, 2.0), 1.0).wait(3.0).walk((1.0, 2.0), 0.5).build()
    assert [path.at(t) for t in (0.0, 2.0, 9.0)] == [(0.0, 0.0), (0.0, 1.0), (1.0, 2.0)]
    assert path.rests() == [(3.0, 6.0)]
    assert [path.moving(t) for t in (2.0, 4.0, 6.5)] == [True, False, True]
    assert [path.heading(t) for t in (4.0, 7.0)] == [(0.0, 1.0), (1.0, 0.0)]
    assert path.distance(8.0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="must not decrease"):
        FloorPath((1.0, 0.5), ((0.0, 0.0), (1.0, 0.0)))


def test_command_writes_clips_and_rejects_unknown_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--fps", "2", "--width", "160", "--height", "120", "--jobs", "1"]
    assert main([str(tmp_path), "--only", "empty_corridor", *args]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_corridor.json", "empty_corridor.mp4"]
    assert "empty_corridor" in capsys.readouterr().err
    assert main([str(tmp_path), "--only", "no_such_clip"]) == 2
    assert "unknown clip" in capsys.readouterr().err
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(STANDARD_CLIPS)
