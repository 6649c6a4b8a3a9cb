"""The edge agent: cameras, exits and smoke detectors of one site, published through the outbox.

``safeguard agent --config site.yaml`` builds an :class:`Agent` from the validated config
and runs it until SIGINT/SIGTERM. Every reading goes through the :class:`Publisher` (and so
through the durable outbox): a state change at once, the current state again every
``heartbeat_s``; an exit that becomes blocked also sends a JPEG snapshot with the region
outlined.

Each exit is analysed on a thread of its own (:class:`~edge_agent.exit_worker.ExitWorker`):
the camera's thread only decides which frames are due (``EXIT_ANALYSIS_FPS``) and hands them
over, the latest frame winning when the analysis falls behind.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.config import AgentConfig, ExitConfig, SmokeConfig
from edge_agent.exit_worker import ExitWorker, ExitWorkerStats
from edge_agent.outbox import Kind, Outbox
from edge_agent.publisher import Publisher
from edge_agent.sources.smoke import (
    DryContactDetector,
    SimulatedDetector,
    SmokeAdapter,
    SmokeStatus,
    Zigbee2MqttDetector,
)
from edge_agent.vision import ExitBlockageDetector, ExitObservation, FramePacer, draw_observation
from protocol import DeclaredDevice, DeviceKind, ExitState, MessageType, SmokeState
from protocol.mqtt import MqttEndpoint

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
EXIT_ANALYSIS_FPS = 5.0  # frames per second given to each exit detector (issue 3: >= 5 fps)


def make_smoke_adapter(config: SmokeConfig) -> SmokeAdapter:
    if config.adapter == "zigbee2mqtt":
        return Zigbee2MqttDetector(config.address, config.broker or "mqtt://127.0.0.1:1883")
    if config.adapter == "dry_contact":
        return DryContactDetector(Path(config.address), config.active)
    return SimulatedDetector()


def outline_snapshot(frame: np.ndarray, region: list[tuple[int, int]],
                     observation: ExitObservation | None = None) -> bytes:
    """The frame as JPEG with the exit region outlined in red and the blocking object's box in
    yellow (sent when an exit becomes blocked)."""
    if observation is not None:
        image = draw_observation(frame, region, observation)
    else:
        image = frame.copy()
        cv2.polylines(image, [np.asarray(region, np.int32)], isClosed=True, color=(0, 0, 255), thickness=3)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("could not encode the snapshot")
    return bytes(jpeg.tobytes())


class ExitWatch:
    """One exit: its detector, fed at most EXIT_ANALYSIS_FPS frames/s from its camera."""

    def __init__(self, config: ExitConfig) -> None:
        self.config = config
        self.detector: ExitBlockageDetector | None = None
        self.last: ExitObservation | None = None
        self._pacer = FramePacer(EXIT_ANALYSIS_FPS)
        self._save_learnt = False

    @property
    def accept_request(self) -> Path | None:
        """The file an operator creates (``safeguard agent accept-clear``) to have the running agent take
        the exit's current view as clear: ``<reference>.accept`` beside the reference picture."""
        ref = self.config.reference
        return ref.with_name(ref.name + ".accept") if ref is not None else None

    def feed(self, frame: np.ndarray, ts: float) -> tuple[ExitObservation, bool] | None:
        """Analyse the frame if it is time; return the observation and whether the state changed."""
        if not self.due(ts):
            return None
        return self.analyse(frame, ts)

    def due(self, ts: float) -> bool:
        """Whether the frame of ``ts`` is to be analysed (at most EXIT_ANALYSIS_FPS a second); cheap,
        called on the camera's thread for every frame."""
        return self._pacer.take(ts)

    def analyse(self, frame: np.ndarray, ts: float) -> tuple[ExitObservation, bool]:
        """Analyse a due frame; return the observation and whether the state changed."""
        if self.detector is None:
            height, width = frame.shape[:2]
            reference = self._reference(frame)
            self.detector = ExitBlockageDetector(self.config.region, (width, height), self.config.persistence_s,
                                                 reference=reference, door=self.config.door)
            self._save_learnt = reference is None and self.config.reference is not None
        request = self.accept_request
        if request is not None and request.exists():
            self._accept(frame, request)
        observation = self.detector.update(frame, ts)
        if self._save_learnt and self.detector.learnt_frame is not None:
            self._save_learnt = False
            self._save(self.detector.learnt_frame, "learnt the clear view (median of the first seconds)")
        changed = self.last is None or observation.state != self.last.state
        self.last = observation
        return observation, changed

    def _accept(self, frame: np.ndarray, request: Path) -> None:
        """An operator says the exit is clear now: the current view becomes the empty scene and the
        reference (whatever was at rest is forgotten)."""
        assert self.detector is not None
        self.detector.accept_clear(frame)
        self._save_learnt = False
        self._save(frame, "accepted the current view as clear (operator request)")
        try:
            request.unlink()
        except OSError as exc:
            log.warning("exit %s: could not remove %s: %s", self.config.id, request, exc)

    def _save(self, image: np.ndarray, what: str) -> None:
        path = self.config.reference
        if path is None:
            return
        if cv2.imwrite(str(path), image):
            log.info("exit %s: %s, saved to %s", self.config.id, what, path)
        else:
            log.warning("exit %s: %s, but could not save it to %s", self.config.id, what, path)

    def _reference(self, first: np.ndarray) -> np.ndarray | None:
        """The configured clear-exit picture. When the file does not exist yet, the detector learns the
        empty scene (the median of its first seconds, so people in view are not in it) and that is
        saved there, so the next start uses the same reference."""
        path = self.config.reference
        if path is None or not path.exists():
            return None
        image = cv2.imread(str(path))
        if image is None or image.shape != first.shape:
            log.warning("exit %s: reference %s is unreadable or of another size; learning the view instead",
                        self.config.id, path)
            return None
        return np.asarray(image, dtype=np.uint8)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.outbox = Outbox(config.outbox.path, max_messages=config.outbox.max_messages)
        devices = [DeclaredDevice(id=c.id, kind=DeviceKind.CAMERA, name=c.name, location=c.location)
                   for c in config.cameras]
        devices += [DeclaredDevice(id=e.id, kind=DeviceKind.EXIT, name=e.name, location=e.location)
                    for e in config.exits]
        devices += [DeclaredDevice(id=s.id, kind=DeviceKind.SMOKE, name=s.name, location=s.location)
                    for s in config.smoke]
        self.publisher = Publisher(
            dataclasses.replace(MqttEndpoint.parse(config.broker.url),
                                ca_file=str(config.broker.ca_file) if config.broker.ca_file else None,
                                cert_file=str(config.broker.cert_file) if config.broker.cert_file else None,
                                key_file=str(config.broker.key_file) if config.broker.key_file else None),
            config.site, config.broker.version, self.outbox,
            heartbeat_s=config.heartbeat_s, devices=devices,
            client_id=config.broker.client_id or f"safeguard-agent-{config.site}",
            max_in_flight=config.outbox.max_in_flight, agent_version=AGENT_VERSION,
            gateway_ack=config.outbox.gateway_ack, ack_timeout_s=config.outbox.ack_timeout_s,
            ack_timeout_max_s=config.outbox.ack_timeout_max_s,
        )
        self.smoke = {s.id: make_smoke_adapter(s) for s in config.smoke}
        self.exits = {e.id: ExitWatch(e) for e in config.exits}
        self.workers = {device: ExitWorker(device, functools.partial(self._analyse, watch))
                        for device, watch in self.exits.items()}
        self._cameras: list[Any] = []
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="agent-heartbeats", daemon=True)

    def start(self) -> None:
        self.outbox.open()
        self.publisher.start()
        for device, adapter in self.smoke.items():
            adapter.start(functools.partial(self._smoke_changed, device))
        for worker in self.workers.values():
            worker.start()
        if self.config.cameras:
            from edge_agent.sources.camera import CameraWatcher  # noqa: PLC0415 - OpenCV capture threads

            for camera in self.config.cameras:
                watcher = CameraWatcher(camera.id, camera.source, heartbeat_s=self.config.heartbeat_s,
                                        report=self._camera_heartbeat, frame_sink=self._frame)
                watcher.start()
                self._cameras.append(watcher)
        self._ticker.start()
        log.info("agent for site %s started: %d cameras, %d exits, %d smoke detectors", self.config.site,
                 len(self.config.cameras), len(self.exits), len(self.smoke))

    def stop(self) -> None:
        self._stopping.set()
        for watcher in self._cameras:
            watcher.stop()
        for worker in self.workers.values():  # after the cameras: nothing is offered any more
            worker.stop(timeout=5.0)
        for adapter in self.smoke.values():
            adapter.stop()
        if self._ticker.is_alive():
            self._ticker.join(timeout=5)
        self.publisher.stop(drain_s=2.0)
        self.outbox.close()

    def exit_stats(self) -> dict[str, ExitWorkerStats]:
        """Per exit: the frames handed to its analysis thread, analysed and dropped."""
        return {device: worker.stats() for device, worker in self.workers.items()}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every exit has analysed the frames handed over so far (for tests)."""
        return all(worker.wait_idle(timeout) for worker in self.workers.values())

    # sources -> publisher ------------------------------------------------------------------

    def _smoke_changed(self, device: str, status: SmokeStatus) -> None:
        self.publisher.send(device, MessageType.SMOKE, status.fields())

    def _camera_heartbeat(self, camera: str, fields: dict[str, Any]) -> None:
        self.publisher.send(camera, MessageType.HEARTBEAT, fields)

    def _frame(self, camera: str, frame: np.ndarray, ts: float) -> None:
        """The camera thread's sink: hand the due frames to the exits' threads and return."""
        for device, watch in self.exits.items():
            if watch.config.camera == camera and watch.due(ts):
                self.workers[device].offer(frame, ts)

    def _analyse(self, watch: ExitWatch, frame: np.ndarray, ts: float) -> None:
        """On the exit's thread: detect, and on a change send the state (and a snapshot if blocked)."""
        observation, changed = watch.analyse(frame, ts)
        if changed:
            self._send_exit(watch.config.id, observation, kind=None)
            if observation.state is ExitState.BLOCKED:
                self.publisher.send_snapshot(watch.config.id,
                                             outline_snapshot(frame, watch.config.region, observation))

    def _send_exit(self, device: str, observation: ExitObservation, kind: Kind | None) -> None:
        self.publisher.send(device, MessageType.EXIT, {
            "state": observation.state.value, "blocked_ratio": round(min(1.0, observation.blocked_ratio), 4),
            "blocked_since": observation.blocked_since,
        }, kind=kind)

    def _tick(self) -> None:
        """The current state of every detector and exit again every heartbeat_s (contract section 3)."""
        while not self._stopping.wait(self.config.heartbeat_s):
            for device, adapter in self.smoke.items():
                status = adapter.current()
                if status is not None:
                    repeat = None if status.state is SmokeState.ALARM else Kind.HEARTBEAT
                    self.publisher.send(device, MessageType.SMOKE, status.fields(), kind=repeat)
            for device, watch in self.exits.items():
                if watch.last is not None:
                    self._send_exit(device, watch.last, kind=Kind.HEARTBEAT)


def run_agent(config: AgentConfig, stop: threading.Event) -> int:
    agent = Agent(config)
    agent.start()
    try:
        while not stop.wait(1.0):
            if agent.publisher.error is not None:
                log.error("%s", agent.publisher.error)
                return 1
    finally:
        agent.stop()
    return 0


