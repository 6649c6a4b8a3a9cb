"""Scripted incidents with expectations: ``safeguard simulate --scenario FILE --check``.

A scenario (YAML, see ``simulators/scenarios/``) declares virtual sites, timed events
and the alerts they must cause (kind, site, device, within how many seconds) and must
not cause. The runner plays it over MQTT like real agents would; the checker listens
to the gateway's ``sg/v1/alerts/#`` and measures each expected alert's delay.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import paho.mqtt.client as mqtt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol import ALERTS_FILTER, Alert, AlertKind, AlertState, DeviceKind, SmokeState, StreamState
from protocol.mqtt import BrokerUnavailable, BrokerUnreachable, MqttEndpoint, MqttVersion, connect_and_wait, new_client
from simulators.agent import VirtualAgent, VirtualDevice

log = logging.getLogger(__name__)

_CONNECT_S = 10.0  # how long the sites may take to come online
_LEAVE_S = 10.0  # how long, in all, to wait for the broker's last acknowledgements

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
DEMO_SCENARIO = Path(__file__).resolve().parent / "demo.yaml"
Seconds = Annotated[float, Field(ge=0)]


class Action(StrEnum):
    CAMERA_SILENT = "camera_silent"  # the camera stops sending heartbeats
    CAMERA_RESUME = "camera_resume"
    STREAM = "stream"  # value: ok | frozen | dark | lost
    SMOKE = "smoke"  # value: normal | alarm | fault | test | tamper
    BATTERY = "battery"  # value: percent
    DETECTOR_SILENT = "detector_silent"
    DETECTOR_RESUME = "detector_resume"
    EXIT_BLOCKED = "exit_blocked"
    EXIT_CLEAR = "exit_clear"
    AGENT_CRASH = "agent_crash"  # connection dropped: the broker fires the Last Will
    AGENT_RESTART = "agent_restart"  # new boot, reconnect, birth
    PARTITION = "partition"  # messages held back until `until`, then delivered in order
    CLOCK_SKEW = "clock_skew"  # value: seconds added to the agent's clock


_NEEDS_DEVICE = {Action.CAMERA_SILENT, Action.CAMERA_RESUME, Action.STREAM, Action.SMOKE, Action.BATTERY,
                 Action.DETECTOR_SILENT, Action.DETECTOR_RESUME, Action.EXIT_BLOCKED, Action.EXIT_CLEAR}


_STATES: dict[Action, type[StrEnum]] = {Action.STREAM: StreamState, Action.SMOKE: SmokeState}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSpec(_Strict):
    id: Id
    name: str = ""
    city: str = "杭州市"
    county: str = "西湖区"
    category: str = "arts"
    address: str = ""
    cameras: list[Id] = ["cam-1"]
    smoke: list[Id] = ["smoke-1"]
    exits: list[Id] = ["exit-1"]


class Event(_Strict):
    at: Seconds
    site: Id
    do: Action
    device: Id | None = None
    value: str | float | None = None
    until: Seconds | None = None  # partition end

    @model_validator(mode="after")
    def _complete(self) -> Event:
        if self.do in _NEEDS_DEVICE and self.device is None:
            raise ValueError(f"{self.do} needs a device")
        if self.do in (Action.STREAM, Action.SMOKE, Action.BATTERY, Action.CLOCK_SKEW) and self.value is None:
            raise ValueError(f"{self.do} needs a value")
        if self.do is Action.PARTITION and (self.until is None or self.until <= self.at):
            raise ValueError("partition needs until > at")
        # The virtual agent sends the contract's models: a value the contract has not is refused here.
        states = _STATES.get(self.do)
        if states is not None and self.value not in set(states):
            raise ValueError(f"{self.do} value must be one of {', '.join(states)}, not {self.value!r}")
        if self.do is Action.BATTERY and not (isinstance(self.value, float | int) and 0 <= self.value <= 100):
            raise ValueError(f"battery value must be a percent from 0 to 100, not {self.value!r}")
        return self


class Expect(_Strict):
    """An alert that must reach ``state`` between ``at`` and ``at + within`` seconds."""

    kind: AlertKind
    site: Id
    device: Id | None = None  # None: a site-level alert (agent_offline, fire_alarm_exit_blocked)
    at: Seconds = 0.0
    within: Annotated[float, Field(gt=0)]
    state: Literal["open", "resolved"] = "open"


class Forbid(_Strict):
    """No alert of ``kind`` ("any": of any kind) may open at ``site`` (None: any) during the run."""

    kind: AlertKind | Literal["any"]
    site: Id | None = None
    device: Id | None = None


class Scenario(_Strict):
    name: str
    description: str = ""
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    duration: Annotated[float, Field(gt=0, le=86_400)]
    # Occasional network delay: this share of readings arrives up to max_delay_s late.
    delay_probability: Annotated[float, Field(ge=0, le=1)] = 0.0
    max_delay_s: Annotated[float, Field(ge=0, le=600)] = 0.0
    sites: list[SiteSpec]
    events: list[Event] = []
    expect: list[Expect] = []
    forbid: list[Forbid] = []

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        devices = {(s.id, d) for s in self.sites for d in (*s.cameras, *s.smoke, *s.exits)}
        sites = {s.id for s in self.sites}
        for i, event in enumerate(self.events):
            if event.site not in sites:
                raise ValueError(f"events[{i}]: unknown site {event.site!r}")
            if event.device is not None and (event.site, event.device) not in devices:
                raise ValueError(f"events[{i}]: site {event.site!r} has no device {event.device!r}")
        for i, expect in enumerate(self.expect):
            if expect.site not in sites:
                raise ValueError(f"expect[{i}]: unknown site {expect.site!r}")
            if expect.at + expect.within > self.duration:
                raise ValueError(f"expect[{i}]: at + within ({expect.at + expect.within:g} s) is past the "
                                 f"duration ({self.duration:g} s)")
        return self


    def scaled(self, speed: float) -> Scenario:
        """The same scenario with every time divided by ``speed`` (a speed-up when > 1)."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        if speed == 1:
            return self
        return self.model_copy(update={
            "heartbeat_s": self.heartbeat_s / speed,
            "duration": self.duration / speed,
            "max_delay_s": self.max_delay_s / speed,
            "events": [e.model_copy(update={"at": e.at / speed,
                                            "until": None if e.until is None else e.until / speed})
                       for e in self.events],
            "expect": [x.model_copy(update={"at": x.at / speed, "within": x.within / speed}) for x in self.expect],
        })


class ScenarioError(ValueError):
    """A scenario file that does not validate; the message names the file and the key."""


def load_scenario(path: Path) -> Scenario:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Scenario.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'scenario'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ScenarioError(f"{path}: {problems}") from None


@dataclass(frozen=True, slots=True)
class SeenAlert:
    t: float  # seconds after the scenario started, when the change arrived on MQTT
    alert: Alert


@dataclass
class AlertWatch:
    """Collects the gateway's alert changes for the scenario's sites (sg/v1/alerts/#)."""

    sites: set[str]
    started: float = 0.0
    seen: list[SeenAlert] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            alert = Alert.model_validate_json(message.payload)
        except ValidationError:
            log.warning("not an alert on %s: ignored", message.topic)
            return
        if alert.site in self.sites:
            with self._lock:
                self.seen.append(SeenAlert(time.time() - self.started, alert))

    def snapshot(self) -> list[SeenAlert]:
        with self._lock:
            return list(self.seen)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    what: str
    detail: str
    delay_s: float | None = None


def _matches(alert: Alert, kind: str, site: str | None, device: str | None, any_device: bool) -> bool:
    return (
        kind in ("any", alert.kind)
        and (site is None or alert.site == site)
        and (any_device or alert.device == device)
    )


def judge(scenario: Scenario, seen: list[SeenAlert]) -> list[Verdict]:
    """Pure: the verdict on each expectation and prohibition, from the alert changes seen."""
    verdicts = []
    for e in scenario.expect:
        where = f"{e.site}/{e.device}" if e.device else e.site
        what = f"{e.kind} {e.state} at {where} within {e.within:g} s of {e.at:g} s"
        hits = [s for s in seen if _matches(s.alert, e.kind, e.site, e.device, False)
                and s.alert.state == e.state and s.t >= e.at - 0.5]  # 0.5 s: clocks of two processes
        first = min(hits, key=lambda s: s.t, default=None)
        if first is None:
            verdicts.append(Verdict(False, what, "never happened"))
        else:
            delay = max(0.0, first.t - e.at)
            verdicts.append(Verdict(delay <= e.within, what, f"after {delay:.2f} s", delay))
    for f in scenario.forbid:
        what = f"no {f.kind} alert at {f.site or 'any site'}" + (f"/{f.device}" if f.device else "")
        opened = [s for s in seen if s.alert.state is AlertState.OPEN and s.alert.count == 1
                  and _matches(s.alert, f.kind, f.site, f.device, f.device is None)]
        detail = ", ".join(sorted({f"{s.alert.kind}@{s.alert.site}/{s.alert.device}" for s in opened}))
        verdicts.append(Verdict(not opened, what, f"raised: {detail}" if opened else "none raised"))
    return verdicts


class ScenarioRunner:
    def __init__(self, scenario: Scenario, mqtt_url: str, version: MqttVersion, *, seed: int = 0) -> None:
        self.scenario = scenario
        self._endpoint = MqttEndpoint.parse(mqtt_url)
        self._version = version
        self._rng = random.Random(seed)
        self.agents = {s.id: self._agent(s) for s in scenario.sites}

    def _agent(self, spec: SiteSpec) -> VirtualAgent:
        devices = [VirtualDevice(d, DeviceKind.CAMERA) for d in spec.cameras]
        devices += [VirtualDevice(d, DeviceKind.SMOKE) for d in spec.smoke]
        devices += [VirtualDevice(d, DeviceKind.EXIT) for d in spec.exits]
        return VirtualAgent(self._endpoint, self._version, spec.id, devices, heartbeat_s=self.scenario.heartbeat_s,
                            rng=random.Random(self._rng.random()), delay_probability=self.scenario.delay_probability,
                            max_delay_s=self.scenario.max_delay_s)

    def run(self, watch: AlertWatch | None = None, stop: threading.Event | None = None) -> list[SeenAlert]:
        """Play the scenario; return the alert changes seen (empty without a watch)."""
        stop = stop or threading.Event()
        watcher = self._watch(watch) if watch else None
        pending = sorted(self.scenario.events, key=lambda e: e.at)
        partitions: list[tuple[float, VirtualAgent]] = []
        for agent in self.agents.values():
            agent.start()
        self._await_connections()
        started = time.time()  # the scenario's clock starts once the sites are online
        if watch:
            watch.started = started
        try:
            while not stop.is_set():
                elapsed = time.time() - started
                if elapsed >= self.scenario.duration:
                    break
                while pending and pending[0].at <= elapsed:
                    partitions += self._apply(pending.pop(0))
                for until, agent in [p for p in partitions if p[0] <= elapsed]:
                    agent.end_partition()
                    partitions.remove((until, agent))
                now = time.time()
                for agent in self.agents.values():
                    agent.tick(now)
                stop.wait(0.05)
        finally:
            deadline = time.monotonic() + _LEAVE_S  # one wait for all sites, not one per site
            for agent in self.agents.values():
                agent.leave(deadline)
            if watcher is not None:
                watcher.disconnect()
                watcher.loop_stop()
        return watch.snapshot() if watch else []

    def _await_connections(self) -> None:
        """Wait until every site is online; raise :class:`BrokerUnavailable` if none got in."""
        deadline = time.monotonic() + _CONNECT_S
        for agent in self.agents.values():  # each answers: connected, refused, or nobody there
            agent.answered.wait(max(0.0, deadline - time.monotonic()))
        offline = [a for a in self.agents.values() if not a.connected.is_set()]
        if len(offline) == len(self.agents):
            for agent in self.agents.values():
                agent.leave(time.monotonic())
            first = offline[0]
            if first.unreachable:
                raise BrokerUnreachable(f"{first.connect_error}")
            reason = first.connect_error or f"no answer within {_CONNECT_S:g} s"
            raise BrokerUnavailable(f"MQTT broker at {self._endpoint} (MQTT {self._version}): no site could "
                                    f"connect: {reason}")
        if offline:
            log.warning("%d of %d sites are not connected yet (paho keeps trying): %s", len(offline),
                        len(self.agents), ", ".join(a.site for a in offline[:5]))

    def _watch(self, watch: AlertWatch) -> mqtt.Client:
        client = new_client(self._endpoint, f"sim-check-{int(time.time() * 1000)}", self._version)
        subscribed = threading.Event()
        client.on_connect = lambda c, *_a: c.subscribe(ALERTS_FILTER, qos=1)
        client.on_subscribe = lambda *_a: subscribed.set()
        client.on_message = watch.on_message
        connect_and_wait(client, self._endpoint)
        if not subscribed.wait(10):
            raise BrokerUnavailable(f"could not subscribe to {ALERTS_FILTER} on {self._endpoint}")
        return client

    def _apply(self, event: Event) -> list[tuple[float, VirtualAgent]]:
        agent = self.agents[event.site]
        log.info("t=%.1f %s %s %s %s", event.at, event.site, event.device or "", event.do, event.value or "")
        match event.do:
            case Action.AGENT_CRASH:
                agent.crash()
            case Action.AGENT_RESTART:
                agent.start()
            case Action.PARTITION:
                agent.partitioned = True
                assert event.until is not None
                return [(event.until, agent)]
            case Action.CLOCK_SKEW:
                agent.clock_offset_s = float(event.value or 0)
            case _:
                assert event.device is not None
                device = agent.device(event.device)
                _switch(device, event)
                if event.do not in (Action.CAMERA_SILENT, Action.DETECTOR_SILENT):
                    agent.changed(device)
        return []


def _switch(device: VirtualDevice, event: Event) -> None:
    match event.do:
        case Action.CAMERA_SILENT | Action.DETECTOR_SILENT:
            device.silent = True
        case Action.CAMERA_RESUME | Action.DETECTOR_RESUME:
            device.silent = False
        case Action.STREAM:
            device.stream = str(event.value)
        case Action.SMOKE:
            device.smoke_state = str(event.value)
        case Action.BATTERY:
            device.battery_pct = float(event.value or 0)
        case Action.EXIT_BLOCKED:
            device.exit_state, device.blocked_since = "blocked", time.time()
        case Action.EXIT_CLEAR:
            device.exit_state, device.blocked_since = "clear", None
        case _:
            raise ValueError(f"{event.do} is not a device action")


def format_table(scenario: Scenario, verdicts: list[Verdict]) -> str:
    width = max((len(v.what) for v in verdicts), default=10)
    lines = [f"scenario: {scenario.name}"]
    lines += [f"  {'PASS' if v.ok else 'FAIL'}  {v.what:<{width}}  {v.detail}" for v in verdicts]
    passed = sum(v.ok for v in verdicts)
    lines.append(f"{passed} passed, {len(verdicts) - passed} failed")
    return "\n".join(lines)


def fleet(
    sites: int, *, cameras: int = 2, smoke: int = 2, exits: int = 1, heartbeat_s: float = 60.0,
    duration: float = 3600.0, prefix: str = "sim", delay_probability: float = 0.0, max_delay_s: float = 0.0,
) -> Scenario:
    """N healthy virtual sites with no incident (``safeguard simulate --sites N``)."""
    if sites < 1:
        raise ValueError("--sites must be at least 1")
    return Scenario(
        name=f"{sites} virtual sites", heartbeat_s=heartbeat_s, duration=duration,
        delay_probability=delay_probability, max_delay_s=max_delay_s,
        sites=[SiteSpec(id=f"{prefix}-{i:04d}", name=f"{prefix} {i}",
                        cameras=[f"cam-{c + 1}" for c in range(cameras)],
                        smoke=[f"smoke-{d + 1}" for d in range(smoke)],
                        exits=[f"exit-{e + 1}" for e in range(exits)]) for i in range(1, sites + 1)],
    )
