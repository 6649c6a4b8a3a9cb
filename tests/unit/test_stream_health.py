"""Stream health on synthetic numpy frames (issue 3, point 2): no camera, no clock.

Frames are 160x120 (some 1280x720): a textured room with Gaussian sensor noise, as a live
camera gives even when nothing moves. Timestamps are epoch-like seconds fed by the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest

from edge_agent.vision.stream_health import StreamHealth
from protocol.messages import StreamState

W, H = 160, 120
T0 = 1_700_000_000.0


def _room(width: int = W, height: int = H, seed: int = 1) -> np.ndarray:
    """A static scene with structure: tiles, a wall, a dark doorway (BGR float)."""
    rng = np.random.default_rng(seed)
    grey = cv2.resize(rng.uniform(60, 200, (12, 16)).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_NEAREST)
    grey[: height // 3] = 170
    grey[height // 4: height // 2, width // 3: width // 2] = 40
    return np.repeat(grey[:, :, None], 3, axis=2)


ROOM = _room()


def live(sigma: float = 2.5, base: np.ndarray = ROOM, seed: int = 0) -> Iterator[np.ndarray]:
    """A live camera on a still room: the same scene, fresh sensor noise on every frame."""
    rng = np.random.default_rng(seed)
    while True:
        yield np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)


def feed(health: StreamHealth, frames: Iterator[np.ndarray] | Callable[[int], np.ndarray], *, seconds: float,
         fps: float = 10.0, start: float = T0) -> float:
    """Feed ``seconds`` of frames at ``fps`` from ``start``; return the last frame's ts."""
    ts = start
    for i in range(round(seconds * fps)):
        ts = start + i / fps
        frame = frames(i) if callable(frames) else next(frames)
        health.update(frame, ts)
    return ts


def test_no_frames_is_lost() -> None:
    health = StreamHealth()
    assert health.state(T0) is StreamState.LOST
    assert health.fps(T0) == 0.0
    assert health.last_frame_ts is None
    health.update(None, T0)  # a read that gave nothing is not a frame
    assert health.state(T0) is StreamState.LOST
    assert health.frames == 0


def test_noisy_static_scene_is_ok_and_never_frozen() -> None:
    health = StreamHealth(frozen_after_s=10.0)
    frames = live()
    for second in range(60):  # a minute of a quiet room, checked every second
        last = feed(health, frames, seconds=1.0, start=T0 + second)
        assert health.state(last) is StreamState.OK, f"not ok after {second + 1} s: {health.last_stats}"
    assert health.last_stats is not None
    assert health.last_stats.diff is not None
    assert health.last_stats.diff > 0.1  # noise keeps every frame unlike the ones before


def test_quiet_scene_with_little_noise_is_still_ok() -> None:
    """A good sensor in a bright room (noise sigma 1) is still well above the frozen threshold."""
    health = StreamHealth(frozen_after_s=10.0)
    last = feed(health, live(sigma=1.0), seconds=30)
    assert health.state(last) is StreamState.OK


def test_identical_frames_become_frozen_after_the_time() -> None:
    health = StreamHealth(frozen_after_s=10.0)
    still = next(live())
    last = feed(health, lambda _i: still, seconds=9.5)
    assert health.state(last) is StreamState.OK  # 9.4 s unchanged: not yet
    assert health.state(T0 + 10.0) is StreamState.FROZEN  # frames arrive, nothing changes
    feed(health, lambda _i: still, seconds=2, start=T0 + 9.5)
    assert health.state(T0 + 11.4) is StreamState.FROZEN
    assert health.fps(T0 + 11.4) == pytest.approx(10.0, rel=0.05)  # frozen is not lost


def test_frozen_recovers_when_the_picture_moves_again() -> None:
    health = StreamHealth(frozen_after_s=5.0)
    still = next(live())
    last = feed(health, lambda _i: still, seconds=6)
    assert health.state(last) is StreamState.FROZEN
    last = feed(health, live(seed=3), seconds=0.5, start=last + 0.1)
    assert health.state(last) is StreamState.OK


def test_frozen_picture_re_encoded_in_a_cycle_is_frozen() -> None:
    """An encoder that keeps re-encoding one frozen picture gives a few slightly different
    decodings in turn (here JPEG at three qualities); each differs from the previous frame by
    more than the threshold, but the same few come back, so it is still frozen."""
    still = next(live())
    decodings: list[np.ndarray] = []
    for quality in (95, 60, 30):
        _ok, data = cv2.imencode(".jpg", still, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        assert decoded is not None
        decodings.append(np.asarray(decoded, np.uint8))
    single = StreamHealth(frozen_after_s=5.0, frozen_memory=1, analyse_every_s=0.0)
    health = StreamHealth(frozen_after_s=5.0, analyse_every_s=0.0)
    for h in (single, health):
        last = feed(h, lambda i: decodings[i % 3], seconds=8)
    assert single.last_stats is not None
    assert single.last_stats.diff is not None
    assert single.last_stats.diff > single.frozen_diff  # one remembered picture is not enough
    assert single.state(last) is StreamState.OK
    assert health.state(last) is StreamState.FROZEN


def test_picture_creeping_in_tiny_steps_is_not_frozen() -> None:
    """Steps each smaller than the threshold still add up to a change (e.g. daylight)."""
    health = StreamHealth(frozen_after_s=5.0, analyse_every_s=0.0)
    base = next(live()).astype(np.float32)
    last = feed(health, lambda i: np.clip(base + 0.04 * i, 0, 255).astype(np.uint8), seconds=20)
    assert health.state(last) is StreamState.OK


def test_black_frames_are_dark() -> None:
    health = StreamHealth(dark_after_s=2.0)
    black = np.zeros((H, W, 3), np.uint8)
    last = feed(health, lambda _i: black, seconds=1.5)
    assert health.state(last) is StreamState.OK  # a moment of black (a light switch): not yet
    last = feed(health, lambda _i: black, seconds=1.0, start=last + 0.1)
    assert health.state(last) is StreamState.DARK


def test_covered_lens_with_gain_noise_is_dark() -> None:
    """A covered lens is not perfectly black: the camera raises its gain and the noise shows."""
    health = StreamHealth(dark_after_s=0.0)
    last = feed(health, live(sigma=4.0, base=np.full((H, W, 3), 8.0)), seconds=3)
    assert health.state(last) is StreamState.DARK


def test_dark_wins_over_frozen() -> None:
    """A black "no video" screen is dark and unchanging; dark says more."""
    health = StreamHealth(frozen_after_s=2.0, dark_after_s=0.5)
    last = feed(health, lambda _i: np.zeros((H, W, 3), np.uint8), seconds=5)
    assert health.state(last) is StreamState.DARK


def test_bright_uniform_white_is_not_dark() -> None:
    health = StreamHealth(dark_after_s=0.0)
    last = feed(health, live(sigma=1.0, base=np.full((H, W, 3), 250.0)), seconds=3)
    assert health.state(last) is StreamState.OK


def test_dim_room_with_structure_is_not_dark() -> None:
    """Mean below dark_mean but a visible picture (variance): a dim room lit by its exit sign,
    not a covered lens."""
    dim = ROOM * 0.1
    dim[10:22, 60:100] = 200  # the lit EXIT sign
    health = StreamHealth(dark_after_s=0.0)
    last = feed(health, live(base=dim), seconds=3)
    assert health.last_stats is not None
    assert health.last_stats.mean < health.dark_mean
    assert health.state(last) is StreamState.OK


def test_dark_clears_when_the_picture_returns() -> None:
    health = StreamHealth(dark_after_s=0.0)
    last = feed(health, lambda _i: np.zeros((H, W, 3), np.uint8), seconds=1)
    assert health.state(last) is StreamState.DARK
    last = feed(health, live(), seconds=0.5, start=last + 0.1)
    assert health.state(last) is StreamState.OK


def test_frames_stopping_become_lost_after_the_time() -> None:
    health = StreamHealth(lost_after_s=5.0)
    last = feed(health, live(), seconds=2)
    assert health.last_frame_ts == last
    assert health.state(last + 4.9) is StreamState.OK
    assert health.state(last + 5.0) is StreamState.LOST
    assert health.last_frame_ts == last  # still the last frame's time, for the heartbeat


@pytest.mark.parametrize("fps", [2.0, 10.0, 25.0])
def test_fps_is_measured_over_the_window(fps: float) -> None:
    health = StreamHealth(fps_window_s=5.0)
    last = feed(health, live(), seconds=12, fps=fps)
    assert health.fps(last) == pytest.approx(fps, rel=0.03)
    assert health.frames == round(12 * fps)


def test_fps_follows_a_change_of_rate_and_falls_to_zero() -> None:
    health = StreamHealth(fps_window_s=5.0)
    last = feed(health, live(), seconds=10, fps=20.0)
    last = feed(health, live(), seconds=10, fps=5.0, start=last + 0.2)
    assert health.fps(last) == pytest.approx(5.0, rel=0.05)
    assert health.fps(last + 2.0) < 5.0  # fewer frames in the window
    assert health.fps(last + 10.0) == 0.0


def test_fps_at_the_start_is_not_inflated() -> None:
    health = StreamHealth(fps_window_s=5.0)
    last = feed(health, live(), seconds=1.0, fps=10.0)  # 10 frames over 0.9 s
    assert health.fps(last) == pytest.approx(10.0, rel=0.05)


def test_only_some_frames_are_analysed_but_all_are_counted() -> None:
    """At 25 frames/s with analyse_every_s=0.2 a fifth of the frames are looked at; frozen
    and fps are unaffected."""
    health = StreamHealth(frozen_after_s=3.0, analyse_every_s=0.2)
    still = next(live())
    last = feed(health, lambda _i: still, seconds=4, fps=25.0)
    assert health.frames == 100
    assert health.fps(last) == pytest.approx(25.0, rel=0.03)
    assert health.state(last) is StreamState.FROZEN


def test_large_frames_and_other_layouts_are_accepted() -> None:
    hd = StreamHealth(frozen_after_s=2.0)
    last = feed(hd, live(base=_room(1280, 720)), seconds=1)
    assert hd.state(last) is StreamState.OK
    grey = StreamHealth(dark_after_s=0.0)
    last = feed(grey, lambda _i: np.zeros((H, W), np.uint8), seconds=1)
    assert grey.state(last) is StreamState.DARK
    bgra = StreamHealth(dark_after_s=0.0)
    last = feed(bgra, lambda _i: np.zeros((H, W, 4), np.uint8), seconds=1)
    assert bgra.state(last) is StreamState.DARK
    deep = StreamHealth(dark_after_s=0.0)
    last = feed(deep, lambda _i: np.full((H, W, 3), 60000, np.uint16), seconds=1)
    assert deep.state(last) is StreamState.OK


def test_a_change_of_resolution_is_a_change() -> None:
    health = StreamHealth(frozen_after_s=3.0)
    small, big = next(live()), next(live(base=_room(320, 240)))
    last = feed(health, lambda i: small if i < 25 else big, seconds=5)
    assert health.state(last) is StreamState.OK  # frozen for 2.5 s, then 2.5 s of another size


@pytest.mark.parametrize("bad", [
    np.zeros((0, 0, 3), np.uint8),
    np.zeros((H, W, 2), np.uint8),
    np.zeros((2, H, W, 3), np.uint8),
    np.zeros((H, W, 3), np.float64),
])
def test_a_bad_frame_is_refused_and_changes_nothing(bad: np.ndarray) -> None:
    health = StreamHealth()
    last = feed(health, live(), seconds=1)
    with pytest.raises(ValueError, match=r"empty|not an image|pixel type"):
        health.update(bad, last + 0.1)
    assert health.last_frame_ts == last
    assert health.frames == 10
    assert health.state(last + 0.1) is StreamState.OK


def test_the_clock_stepping_back_does_not_report_frozen() -> None:
    health = StreamHealth(frozen_after_s=5.0)
    still = next(live())
    feed(health, lambda _i: still, seconds=3)
    last = feed(health, lambda _i: still, seconds=3, start=T0 - 100)  # NTP set the clock back
    assert health.state(last) is StreamState.OK
    assert health.fps(last) == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize("kwargs", [
    {"frozen_after_s": 0}, {"lost_after_s": -1}, {"fps_window_s": 0}, {"frozen_diff": -0.1},
    {"work_width": 4}, {"frozen_memory": 0},
])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        StreamHealth(**kwargs)  # type: ignore[arg-type]
