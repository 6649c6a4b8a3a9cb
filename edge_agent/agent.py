"""The edge agent: cameras, exits and smoke detectors of one site, published through the outbox.

``safeguard agent --config site.yaml`` builds an :class:`Agent` from the validated config
and runs it until SIGINT/SIGTERM. Every reading goes through the :class:`Publisher` (and so
through the durable outbox): a state change at once, the current state again every
``heartbeat_s``; an exit that becomes blocked also sends a JPEG snapshot with the region
outlined.
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
from edge_agent.outbox import Kind, Outbox
from edge_agent.publisher import Publisher
from edge_agent.sources.smoke import (
    DryContactDetector,
    SimulatedDetector,
    SmokeAdapter,
    SmokeStatus,
    Zigbee2MqttDetector,
)
from edge_agent.vision import ExitBlockageDetector, ExitObservation
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


def outline_snapshot(frame: np.ndarray, region: list[tuple[int, int]]) -> bytes:
    """The frame as JPEG with the exit region outlined in red (sent when an exit becomes blocked)."""
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
        self._last_frame_ts = 0.0

    def feed(self, frame: np.ndarray, ts: float) -> tuple[ExitObservation, bool] | None:
        """Analyse the frame if it is time; return the observation and whether the state changed."""
        if ts - self._last_frame_ts < 1.0 / EXIT_ANALYSIS_FPS:
            return None
        self._last_frame_ts = ts
        if self.detector is None:
            height, width = frame.shape[:2]
            reference = self._reference(frame)
            self.detector = ExitBlockageDetector(self.config.region, (width, height), self.config.persistence_s,
                                                 reference=reference)
        observation = self.detector.update(frame, ts)
        changed = self.last is None or observation.state != self.last.state
        self.last = observation
        return observation, changed

    def _reference(self, first: np.ndarray) -> np.ndarray | None:
        """The configured clear-exit picture; when the file does not exist yet, the first frame is
        taken as the clear exit and saved there (so the next start uses the same reference)."""
        path = self.config.reference
        if path is None:
            return None
        if not path.exists():
            if cv2.imwrite(str(path), first):
                log.info("exit %s: learnt the clear view, saved to %s", self.config.id, path)
            else:
                log.warning("exit %s: could not save the learnt clear view to %s", self.config.id, path)
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
        )
        self.smoke = {s.id: make_smoke_adapter(s) for s in config.smoke}
        self.exits = {e.id: ExitWatch(e) for e in config.exits}
        self._cameras: list[Any] = []
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="agent-heartbeats", daemon=True)

    def start(self) -> None:
        self.outbox.open()
        self.publisher.start()
        for device, adapter in self.smoke.items():
            adapter.start(functools.partial(self._smoke_changed, device))
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
        for adapter in self.smoke.values():
            adapter.stop()
        if self._ticker.is_alive():
            self._ticker.join(timeout=5)
        self.publisher.stop(drain_s=2.0)
        self.outbox.close()

    # sources -> publisher ------------------------------------------------------------------

    def _smoke_changed(self, device: str, status: SmokeStatus) -> None:
        self.publisher.send(device, MessageType.SMOKE, status.fields())

    def _camera_heartbeat(self, camera: str, fields: dict[str, Any]) -> None:
        self.publisher.send(camera, MessageType.HEARTBEAT, fields)

    def _frame(self, camera: str, frame: np.ndarray, ts: float) -> None:
        for watch in self.exits.values():
            if watch.config.camera != camera:
                continue
            result = watch.feed(frame, ts)
            if result is None:
                continue
            observation, changed = result
            if changed:
                self._send_exit(watch.config.id, observation, kind=None)
                if observation.state is ExitState.BLOCKED:
                    self.publisher.send_snapshot(watch.config.id, outline_snapshot(frame, watch.config.region))

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


