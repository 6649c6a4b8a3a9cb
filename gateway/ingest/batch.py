"""One ingest batch: load what it needs, decide in pure code, write it, in one transaction.

The shape is load → decide → write:

* **load** (a fixed handful of statements, whatever the number of devices): the batch's
  known sites, locked; the kinds, latest states, agents and open alerts of what it touches;
  then the readings staged by COPY and inserted, so that only new ones reach the rules;
* **decide** (no SQL): device kinds, agent status, the alert rules, each device's newest
  state — the :class:`Decision`;
* **write** (again set-based): new devices, agents, ``device_state`` from a staged COPY,
  snapshots, alert changes, dead letters.

The statements themselves are in ``gateway/store/ingest.py`` (and the alerts' in
``gateway/store/alerts.py``): this module decides and shapes rows, and holds no SQL.

The batch is acknowledged to the broker only after this commits, so a gateway killed at any
instant loses nothing; readings are idempotent on ``(site, device, boot, seq)`` (``reading_keys``,
whatever the ts), so a redelivered batch is stored once and raises no alert twice (the rules
only see readings inserted by this transaction). A ``ts`` too far ahead of its arrival is
refused before it can stand as a device's latest state (``future_timestamp``); the readings'
``ts - arrival`` per agent feed its smoothed clock skew and the ``clock_skew`` alert. Each
payload is serialised once (pydantic's JSON) and that text goes to both ``readings`` and
``device_state``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import Field

from gateway import metrics
from gateway.rules import engine
from gateway.rules.model import AlertKey, Change, DeviceStatus, OpenAlert, OpenAlerts
from gateway.store import alerts as alert_store
from gateway.store import ingest as batch_store
from gateway.store.db import Conn, from_epoch, lock_sites
from gateway.store.ingest import DeviceKey as _DeviceKey
from gateway.store.ingest import ReadingKey, json_text
from protocol import (
    FUTURE_TOLERANCE_S,
    AgentStatus,
    DeviceKind,
    ExitReading,
    Heartbeat,
    Reading,
    Rejection,
    RejectReason,
    SmokeReading,
    Snapshot,
    Topic,
    check_not_ahead,
    decode,
)

log = logging.getLogger(__name__)

EXCERPT_BYTES = 1024
# An agent's stored clock skew is rewritten only when it moved this much: the figure is for a
# tolerance of minutes, and a province's batches would otherwise upsert every agent's row each time.
_CLOCK_WRITE_STEP_S = 1.0


class Inbound(NamedTuple):
    """A message as the paho callback handed it off (a tuple: the cheapest object to build there)."""

    topic: str
    payload: bytes
    received_at: float
    mid: int = 0
    qos: int = 0
    generation: int = 0  # MQTT connection it came on: a mid is only valid on that connection


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Inbound
    code: str
    reason: str


@dataclass
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    alerts: list[alert_store.Recorded] = field(default_factory=list)
    # (site, device, boot, seq) of every reading the batch durably dealt with (stored now or
    # before): what the agents are told (gateway/ingest/confirm.py), without parsing it again.
    stored_keys: list[ReadingKey] = field(default_factory=list)


class Rules(engine.Heartbeats):
    """The thresholds the batch's rules apply; the gateway's ``liveness`` settings are one (gateway/config.py)."""

    battery_low_pct: float = Field(engine.BATTERY_LOW_PCT, ge=0, le=100)
    # A ts this far ahead of its arrival is refused (future_timestamp); an agent whose clock runs
    # ahead by more than this has a clock_skew alert (docs/wire-contract.md).
    future_ts_tolerance_s: float = Field(FUTURE_TOLERANCE_S, gt=0)


@dataclass(slots=True)
class _Staged:
    """A decoded reading on its way to the tables; ``json`` is its one serialisation."""

    message: Inbound
    site: str
    device: str
    reading: Reading
    json: str
    ts: datetime = field(init=False)  # timestamptz keeps microseconds: compare at that precision, as stored
    status: str = field(init=False)  # stream (camera) or state (smoke, exit)

    def __post_init__(self) -> None:
        r = self.reading
        self.ts = from_epoch(r.ts)
        self.status = r.stream.value if isinstance(r, Heartbeat) else r.state.value

    @property
    def key(self) -> ReadingKey:
        return (self.site, self.device, self.reading.boot, self.reading.seq)

    def row(self) -> tuple[Any, ...]:
        """Its ``readings`` row (``gateway.store.ingest.READING_COLUMNS``)."""
        r = self.reading
        return (self.ts, from_epoch(self.message.received_at), self.site, self.device, r.kind.value,
                r.boot, r.seq, self.status, json_text(self.json))


@dataclass
class _Loaded:
    """Everything the deciding step may read, loaded once per batch."""

    sites: set[str]
    kinds: dict[_DeviceKey, str]
    agents: dict[str, dict[str, Any]]
    open_alerts: dict[AlertKey, OpenAlert]
    states: dict[_DeviceKey, DeviceStatus]  # latest stored state per device, before this batch
    clocks: dict[str, float]  # each agent's smoothed clock skew, before this batch


@dataclass
class Decision:
    """What one batch writes, decided without touching the database."""

    new_devices: dict[_DeviceKey, str] = field(default_factory=dict)
    declared: list[tuple[str, str, str, str | None, str | None]] = field(default_factory=list)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    readings: list[_Staged] = field(default_factory=list)
    snapshots: list[tuple[Inbound, Topic, Snapshot]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    states: list[tuple[Any, ...]] = field(default_factory=list)
    clocks: dict[str, float] = field(default_factory=dict)


def excerpt(payload: bytes) -> str:
    text = payload[:EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\\u0000")
    return text + ("…" if len(payload) > EXCERPT_BYTES else "")


def store_dead_letters(conn: Conn, dead: Sequence[DeadLetter]) -> None:
    if dead:
        batch_store.write_dead_letters(conn, (
            (from_epoch(d.message.received_at), d.message.topic.replace("\x00", "\\u0000"), d.code, d.reason,
             excerpt(d.message.payload), len(d.message.payload))
            for d in dead
        ))


_Decoded = tuple[Inbound, Topic, AgentStatus | Reading | Snapshot]


class BatchProcessor:
    """Turns a list of inbound messages into stored rows, dead letters and alert changes."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules

    def process(self, conn: Conn, messages: Sequence[Inbound]) -> BatchResult:
        result = BatchResult()
        decoded: list[_Decoded] = []
        skews: dict[str, list[float]] = {}  # per site: the readings' ts - arrival, refused ones too
        tolerance = self._rules.future_ts_tolerance_s
        for message in messages:
            try:
                topic, payload = decode(message.topic, message.payload)
                if isinstance(payload, Heartbeat | SmokeReading | ExitReading):
                    skews.setdefault(topic.site, []).append(payload.ts - message.received_at)
                check_not_ahead(payload, message.received_at, tolerance)
            except Rejection as exc:
                result.dead.append(DeadLetter(message, exc.code.value, exc.detail))
                continue
            decoded.append((message, topic, payload))
        try:
            with conn.transaction():
                if decoded or skews:
                    self._store(conn, decoded, skews, result)
                store_dead_letters(conn, result.dead)
        except BaseException:
            batch_store.forget_staging(conn)  # a staging table created in a rolled-back transaction is gone
            raise
        return result

    def _store(
        self, conn: Conn, decoded: list[_Decoded], skews: dict[str, list[float]], result: BatchResult
    ) -> None:
        loaded = _load(conn, decoded, skews)
        decision = Decision()
        repeated = _classify(decoded, loaded, decision, result)
        batch_store.upsert_agents(conn, ({**row, "site": site} for site, row in decision.agents.items()))
        batch_store.declare_devices(conn, decision.declared)
        batch_store.add_devices(conn, decision.new_devices)
        inserted = batch_store.insert_readings(conn, [s.row() for s in decision.readings])
        fresh = _first_inserted(decision.readings, inserted)
        result.duplicates = repeated + len(decision.readings) - len(fresh)
        result.accepted = len(fresh) + len(decision.snapshots) + sum(
            isinstance(p, AgentStatus) for _, t, p in decoded if t.site in loaded.sites
        )
        self._decide_readings(fresh, loaded, decision)
        self._decide_clocks(skews, loaded, decision)
        batch_store.write_states(conn, decision.states)
        batch_store.write_snapshots(conn, [
            (t.site, t.device, from_epoch(m.received_at), s.jpeg) for m, t, s in decision.snapshots
        ])
        at = from_epoch(max(m.received_at for m in _arrivals(decoded, result)))
        batch_store.write_clocks(conn, decision.clocks, at)
        result.alerts = alert_store.persist(conn, decision.changes, at)

    # decide (pure) ------------------------------------------------------------------------

    def _decide_clocks(self, skews: dict[str, list[float]], loaded: _Loaded, decision: Decision) -> None:
        """Each registered agent's smoothed clock skew after this batch, and its clock_skew alert."""
        tolerance = self._rules.future_ts_tolerance_s
        alerts = loaded.open_alerts
        for site, samples in skews.items():
            if site not in loaded.sites:
                continue
            before = loaded.clocks.get(site)
            skew = engine.smooth_skew(before, samples, tolerance)
            assert skew is not None
            if before is None or abs(skew - before) >= _CLOCK_WRITE_STEP_S:  # not a row per site per batch
                decision.clocks[site] = skew
            step = engine.evaluate_clock_skew(site, skew_s=skew, tolerance_s=tolerance, alerts=alerts)
            alerts = engine.apply(alerts, step)
            decision.changes += step
        loaded.open_alerts = alerts

    def _decide_readings(self, fresh: list[_Staged], loaded: _Loaded, decision: Decision) -> None:
        """The rules over the new readings in arrival order, then each device's newest state."""
        states = dict(loaded.states)
        alerts: OpenAlerts = loaded.open_alerts
        latest: dict[_DeviceKey, _Staged] = {}
        last_seen: dict[_DeviceKey, float] = {}
        for s in fresh:
            device_key = (s.site, s.device)
            before = states.get(device_key)
            step, alerts = engine.evaluate(
                s.site, s.device, s.reading, before, alerts, battery_low_pct=self._rules.battery_low_pct
            )
            decision.changes += step
            if before is None or s.reading.ts >= before.ts:
                states[device_key] = DeviceStatus(s.status, s.reading.ts, getattr(s.reading, "battery_pct", None))
            if device_key not in latest or s.reading.ts >= latest[device_key].reading.ts:
                latest[device_key] = s
            last_seen[device_key] = max(last_seen.get(device_key, 0.0), s.message.received_at)
            metrics.INGEST_LAG.observe(max(0.0, s.message.received_at - s.reading.ts))
        agents = {**loaded.agents, **decision.agents}
        for device_key, s in latest.items():
            agent = agents.get(s.site)
            heartbeat_s = (agent["heartbeat_s"] if agent else None) or self._rules.default_heartbeat_s
            seen = last_seen[device_key]
            r = s.reading
            decision.states.append((
                s.site, s.device, from_epoch(seen), s.ts, r.boot, r.seq, s.status, json_text(s.json),
                from_epoch(seen + heartbeat_s * self._rules.missed_heartbeats),
            ))


def _arrivals(decoded: list[_Decoded], result: BatchResult) -> list[Inbound]:
    return [m for m, _, _ in decoded] or [d.message for d in result.dead]


def _classify(decoded: list[_Decoded], loaded: _Loaded, decision: Decision, result: BatchResult) -> int:
    """Sort each message: unknown site or wrong kind (dead), agent status, reading or snapshot.

    Returns how many readings repeat the key of an earlier one in this batch (duplicates, not staged)."""
    kinds = loaded.kinds
    keys: set[ReadingKey] = set()
    repeated = 0
    for message, topic, payload in decoded:
        if topic.site not in loaded.sites:
            result.dead.append(
                DeadLetter(message, RejectReason.UNKNOWN_SITE.value, f"site {topic.site!r} is not registered")
            )
        elif isinstance(payload, AgentStatus):
            _decide_agent_status(topic.site, payload, message, loaded, decision)
        else:
            assert topic.device is not None
            device_key = (topic.site, topic.device)
            expected = DeviceKind.EXIT if isinstance(payload, Snapshot) else payload.kind
            kind = kinds.get(device_key)
            if kind is not None and kind != expected and not isinstance(payload, Snapshot):
                result.dead.append(DeadLetter(
                    message, RejectReason.WRONG_DEVICE_KIND.value,
                    f"device {topic.device!r} of site {topic.site!r} is a {kind}, it cannot send {topic.type}",
                ))
                continue
            if kind is None:
                kinds[device_key] = decision.new_devices[device_key] = expected.value
            if isinstance(payload, Snapshot):
                decision.snapshots.append((message, topic, payload))
                continue
            key = (topic.site, topic.device, payload.boot, payload.seq)
            result.stored_keys.append(key)  # confirmed once the batch commits
            if key in keys:
                repeated += 1
                continue
            keys.add(key)
            decision.readings.append(_Staged(message, topic.site, topic.device, payload,
                                             payload.model_dump_json()))
    return repeated


def _decide_agent_status(
    site: str, status: AgentStatus, message: Inbound, loaded: _Loaded, decision: Decision
) -> None:
    """Agent status in arrival order: its alert changes and the agent row it leaves."""
    current = decision.agents.get(site) or loaded.agents.get(site)
    changes = engine.evaluate_agent_status(
        site,
        online=status.online,
        boot=status.boot,
        current_boot=current["boot"] if current else None,
        currently_online=current["online"] if current else None,
        alerts=loaded.open_alerts,
    )
    loaded.open_alerts = engine.apply(loaded.open_alerts, changes)
    decision.changes += changes
    stale_will = not status.online and current is not None and current["online"] and current["boot"] != status.boot
    if stale_will:
        return
    decision.agents[site] = {
        "site": site,
        "online": status.online,
        "boot": status.boot,
        "agent_version": status.agent_version or (current["agent_version"] if current else None),
        "heartbeat_s": status.heartbeat_s or (current["heartbeat_s"] if current else None),
        "status_at": from_epoch(status.ts if status.ts is not None else message.received_at),
    }
    for d in status.devices or ():
        decision.declared.append((site, d.id, d.kind.value, d.name, d.location))
        loaded.kinds[(site, d.id)] = d.kind.value
        decision.new_devices.pop((site, d.id), None)


def _first_inserted(staged: list[_Staged], inserted: set[ReadingKey]) -> list[_Staged]:
    """Readings this transaction stored, each once, in arrival order."""
    fresh = []
    remaining = set(inserted)
    for s in staged:
        key = s.key
        if key in remaining:
            remaining.discard(key)
            fresh.append(s)
    return fresh


# load (the store's queries, then the batch's shape) ------------------------------------------


def _load(conn: Conn, decoded: list[_Decoded], skews: dict[str, list[float]]) -> _Loaded:
    known = lock_sites(conn, {*(topic.site for _, topic, _ in decoded), *skews})
    pairs = sorted({(t.site, t.device) for _, t, _ in decoded if t.device is not None and t.site in known})
    kinds, states = batch_store.load_devices(conn, pairs)
    return _Loaded(
        known, kinds, batch_store.load_agents(conn, known), alert_store.load_open(conn, known), states,
        batch_store.load_clocks(conn, [s for s in skews if s in known]),
    )
