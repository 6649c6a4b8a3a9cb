"""The edge agent's one validated config tree (``site.yaml``), with errors that name the key and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from protocol import DEFAULT_HEARTBEAT_S
from protocol.configfile import ConfigFileError, at, read_yaml, validation_problems
from protocol.mqtt import MqttEndpoint, MqttVersion

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Strict):
    url: str  # mqtt://user:pass@host:port, mqtts:// for TLS
    version: MqttVersion = MqttVersion.V5
    client_id: str | None = None  # default: safeguard-agent-{site}
    ca_file: Path | None = None  # mqtts: the broker's CA (default: the system's trust store)
    cert_file: Path | None = None  # mqtts: a client certificate (PEM), when the broker requires one
    key_file: Path | None = None  # its private key (default: in cert_file)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        MqttEndpoint.parse(value)
        return value


class OutboxConfig(_Strict):
    path: Path = Path("/var/lib/safeguard/outbox.db")
    max_messages: int = Field(100_000, ge=100)
    max_in_flight: int = Field(100, ge=1, le=65_535)
    # Keep each reading until the gateway confirms it (sg/v1/{site}/agent/ack, issue 15); a reading
    # the broker took but the gateway did not confirm is sent again after ack_timeout_s, doubled per
    # attempt up to ack_timeout_max_s. false: done at the broker's PUBACK, for a gateway that predates
    # confirmations (a broker crash then loses what it held in memory; docs/edge-agent-publisher.md).
    gateway_ack: bool = True
    ack_timeout_s: float = Field(60.0, gt=0, le=86_400)
    ack_timeout_max_s: float = Field(900.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _timeouts(self) -> OutboxConfig:
        if self.ack_timeout_max_s < self.ack_timeout_s:
            raise ValueError("ack_timeout_max_s must be at least ack_timeout_s")
        return self


class CameraConfig(_Strict):
    id: Id
    source: str | int  # RTSP/HTTP URL, a video file, or a device index
    name: str = ""
    location: str = ""


class ExitConfig(_Strict):
    id: Id
    camera: Id
    region: list[tuple[int, int]] = Field(min_length=3)  # polygon in the camera's pixels
    # Optional: the door leaf's picture (the doorway) inside the region. A change there alone is the
    # door's state (propped open, closed) and is absorbed; see docs/edge-agent-vision.md.
    door: list[tuple[int, int]] | None = Field(None, min_length=3)
    persistence_s: float = Field(30.0, gt=0)
    reference: Path | None = None  # a clear-reference image; learnt at start and saved when absent
    name: str = ""
    location: str = ""


class SmokeConfig(_Strict):
    id: Id
    adapter: Literal["zigbee2mqtt", "dry_contact", "simulated"]
    # zigbee2mqtt: the device's friendly name (topic zigbee2mqtt/<address>); dry_contact: a file/GPIO path.
    address: str = ""
    broker: str | None = None  # zigbee2mqtt: the local broker (default mqtt://127.0.0.1:1883)
    active: str = "1"  # dry_contact: the value that means "alarm"
    name: str = ""
    location: str = ""

    @model_validator(mode="after")
    def _address_needed(self) -> SmokeConfig:
        if self.adapter != "simulated" and not self.address:
            raise ValueError(f"adapter {self.adapter} needs an address")
        return self


class AgentConfig(_Strict):
    site: Id
    broker: BrokerConfig
    heartbeat_s: int = Field(DEFAULT_HEARTBEAT_S, ge=1, le=3600)
    outbox: OutboxConfig = OutboxConfig()
    cameras: list[CameraConfig] = []
    exits: list[ExitConfig] = []
    smoke: list[SmokeConfig] = []

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> AgentConfig:
        if not (info.context or {}).get("defer_references"):  # the file loader reports them with lines
            problems = self.reference_problems()
            if problems:
                raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        return self

    def reference_problems(self, folder: Path = Path()) -> list[tuple[tuple[int | str, ...], str]]:
        """What is wrong between sections (unique ids, an exit's camera, a video file: relative ones
        are read from ``folder``), each at its key."""
        problems: list[tuple[tuple[int | str, ...], str]] = []
        seen: set[str] = set()
        sections: list[tuple[str, Sequence[CameraConfig | ExitConfig | SmokeConfig]]] = [
            ("cameras", self.cameras), ("exits", self.exits), ("smoke", self.smoke)]
        for section, devices in sections:
            for index, device in enumerate(devices):
                if device.id in seen:
                    problems.append(((section, index, "id"), f"device id {device.id!r} is used twice in the site"))
                seen.add(device.id)
        cameras = {c.id for c in self.cameras}
        for index, exit_ in enumerate(self.exits):
            if exit_.camera not in cameras:
                problems.append((("exits", index, "camera"),
                                 f"exit {exit_.id!r} watches camera {exit_.camera!r}, which is not configured"))
        for index, camera in enumerate(self.cameras):
            if _is_file_source(camera.source) and not (folder / str(camera.source)).is_file():
                problems.append((("cameras", index, "source"),
                                 f"{camera.source!r} is neither a stream URL (rtsp://, http://) nor an existing"
                                 " video file"))
        return problems


class AgentConfigError(ValueError):
    """A bad agent config; each line names the key and the line of the file."""


def load_agent_config(path: Path) -> AgentConfig:
    try:
        data, root = read_yaml(path)
    except ConfigFileError as exc:
        raise AgentConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise AgentConfigError(f"{path}:1: expected the agent's settings (site:, broker:, cameras:, ...) as a mapping")
    try:
        config = AgentConfig.model_validate(data, context={"defer_references": True})
    except ValidationError as exc:
        raise AgentConfigError("\n".join(validation_problems(path, root, exc))) from None
    references = [at(path, root, loc, msg) for loc, msg in config.reference_problems(path.parent)]
    if references:
        raise AgentConfigError("\n".join(references))
    return _relative_to(config, path.parent)


def _is_file_source(source: str | int) -> bool:
    return isinstance(source, str) and "://" not in source


def _relative_to(config: AgentConfig, folder: Path) -> AgentConfig:
    """Video files named relative to the config are read from its folder, wherever the agent runs."""
    cameras = [c.model_copy(update={"source": str(folder.resolve() / str(c.source))}) if _is_file_source(c.source)
               else c for c in config.cameras]
    return config.model_copy(update={"cameras": cameras})


def located(path: Path, loc: tuple[int | str, ...], message: str) -> str:
    """``message`` about the key at ``loc`` of the config file ``path``, with the key's line."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        root = None
    return at(path, root, loc, message)
