"""One ingest batch: validate, store, evaluate rules, all in one transaction.

The batch is acknowledged to the broker only after this commits, so a gateway
killed at any instant loses nothing; readings are idempotent on
``(site, device, boot, seq, ts)``, so a redelivered batch is stored once and
raises no alert twice (rules only see readings inserted by this transaction).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from gateway import metrics
from gateway.rules import engine
from gateway.rules.model import AlertKey, Change, DeviceStatus, OpenAlert
from gateway.store import alerts as alert_store
from gateway.store.db import Conn, from_epoch, lock_sites
from protocol import AgentStatus, DeviceKind, Heartbeat, Reading, Rejection, RejectReason, Snapshot, Topic, decode

log = logging.getLogger(__name__)

EXCERPT_BYTES = 1024
_READING_COLUMNS = ("ts", "received_at", "site", "device", "kind", "boot", "seq", "status", "payload")
_Key = tuple[str, str, str, int, datetime]
_READING_TYPES = ("timestamptz", "timestamptz", "text", "text", "text", "text", "int8", "text", "jsonb")


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as the paho callback handed it off."""

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


@dataclass(frozen=True, slots=True)
class _Staged:
    message: Inbound
    topic: Topic
    reading: Reading

    @property
    def device(self) -> str:
        assert self.topic.device is not None
        return self.topic.device

    @property
    def key(self) -> _Key:
        # timestamptz keeps microseconds: compare at that precision, as stored.
        return (self.topic.site, self.device, self.reading.boot, self.reading.seq, from_epoch(self.reading.ts))


@dataclass(frozen=True, slots=True)
class Rules:
    missed_heartbeats: int = 3
    default_heartbeat_s: int = 60
    battery_low_pct: float = 20.0


def _status_of(reading: Reading) -> str:
    return reading.stream.value if isinstance(reading, Heartbeat) else reading.state.value


def _device_status(reading: Reading) -> DeviceStatus:
    battery = getattr(reading, "battery_pct", None)
    return DeviceStatus(_status_of(reading), reading.ts, battery)


def excerpt(payload: bytes) -> str:
    text = payload[:EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\\u0000")
    return text + ("…" if len(payload) > EXCERPT_BYTES else "")


def store_dead_letters(conn: Conn, dead: Sequence[DeadLetter]) -> None:
    if not dead:
        return
    with conn.cursor().copy(
        "COPY dead_letters (received_at, topic, code, reason, payload_excerpt, payload_size) FROM STDIN"
    ) as copy:
        for d in dead:
            topic = d.message.topic.replace("\x00", "\\u0000")
            copy.write_row((from_epoch(d.message.received_at), topic, d.code, d.reason, excerpt(d.message.payload),
                            len(d.message.payload)))


class BatchProcessor:
    """Turns a list of inbound messages into stored rows, dead letters and alert changes."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules

    def process(self, conn: Conn, messages: Sequence[Inbound]) -> BatchResult:
        result = BatchResult()
        decoded: list[tuple[Inbound, Topic, AgentStatus | Reading | Snapshot]] = []
        for message in messages:
            try:
                topic, payload = decode(message.topic, message.payload)
            except Rejection as exc:
                result.dead.append(DeadLetter(message, exc.code.value, exc.detail))
                continue
            decoded.append((message, topic, payload))
        with conn.transaction():
            self._store(conn, decoded, result)
            store_dead_letters(conn, result.dead)
        return result

    def _store(
        self, conn: Conn, decoded: list[tuple[Inbound, Topic, AgentStatus | Reading | Snapshot]], result: BatchResult
    ) -> None:
        sites = sorted({topic.site for _, topic, _ in decoded})
        known = {r["id"] for r in conn.execute("SELECT id FROM sites WHERE id = ANY(%s)", (sites,))}
        sites = [s for s in sites if s in known]
        lock_sites(conn, sites)
        kinds = {
            (r["site"], r["id"]): r["kind"]
            for r in conn.execute("SELECT site, id, kind FROM devices WHERE site = ANY(%s)", (sites,))
        }
        agents = {r["site"]: r for r in conn.execute("SELECT * FROM agents WHERE site = ANY(%s)", (sites,))}
        open_alerts = alert_store.load_open(conn, sites)
        staged: list[_Staged] = []
        snapshots: list[tuple[Inbound, Topic, Snapshot]] = []
        new_devices: dict[tuple[str, str], str] = {}
        changes: list[Change] = []
        for message, topic, payload in decoded:
            if topic.site not in known:
                result.dead.append(
                    DeadLetter(message, RejectReason.UNKNOWN_SITE.value, f"site {topic.site!r} is not registered")
                )
            elif isinstance(payload, AgentStatus):
                status_changes = self._agent_status(conn, topic.site, payload, message, agents, kinds, open_alerts)
                open_alerts = engine.apply(open_alerts, status_changes)
                changes += status_changes
            else:
                assert topic.device is not None
                device_key = (topic.site, topic.device)
                expected = DeviceKind.EXIT if isinstance(payload, Snapshot) else payload.kind
                kind = kinds.get(device_key)
                if kind is not None and kind != expected and not isinstance(payload, Snapshot):
                    result.dead.append(DeadLetter(
                        message, "wrong_device_kind",
                        f"device {topic.device!r} of site {topic.site!r} is a {kind}, it cannot send {topic.type}",
                    ))
                    continue
                if kind is None:
                    kinds[device_key] = new_devices[device_key] = expected.value
                if isinstance(payload, Snapshot):
                    snapshots.append((message, topic, payload))
                else:
                    staged.append(_Staged(message, topic, payload))
        if new_devices:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO devices (site, id, kind) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(s, d, k) for (s, d), k in new_devices.items()],
                )
        inserted = self._insert_readings(conn, staged)
        result.duplicates = len(staged) - len(inserted)
        result.accepted = len(decoded) - len(staged) + len(inserted)
        fresh = self._first_inserted(staged, inserted)
        changes += self._evaluate(conn, fresh, open_alerts)
        self._upsert_device_state(conn, fresh, agents)
        if snapshots:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO snapshots (site, device, received_at, jpeg) VALUES (%s, %s, %s, %s)",
                    [(t.site, t.device, from_epoch(m.received_at), s.jpeg) for m, t, s in snapshots],
                )
        at = from_epoch(max((m.received_at for m, _, _ in decoded), default=0.0))
        result.alerts = alert_store.persist(conn, changes, at)

    def _agent_status(
        self,
        conn: Conn,
        site: str,
        status: AgentStatus,
        message: Inbound,
        agents: dict[str, Any],
        kinds: dict[tuple[str, str], str],
        open_alerts: dict[AlertKey, OpenAlert],
    ) -> list[Change]:
        current = agents.get(site)
        changes = engine.evaluate_agent_status(
            site,
            online=status.online,
            boot=status.boot,
            current_boot=current["boot"] if current else None,
            currently_online=current["online"] if current else None,
            alerts=open_alerts,
        )
        stale_will = not status.online and current is not None and current["online"] and current["boot"] != status.boot
        if stale_will:
            return changes
        at = from_epoch(status.ts if status.ts is not None else message.received_at)
        row = conn.execute(
            "INSERT INTO agents (site, online, boot, agent_version, heartbeat_s, status_at)"
            " VALUES (%(site)s, %(online)s, %(boot)s, %(version)s, %(hb)s, %(at)s)"
            " ON CONFLICT (site) DO UPDATE SET online = excluded.online, boot = excluded.boot,"
            " agent_version = coalesce(excluded.agent_version, agents.agent_version),"
            " heartbeat_s = coalesce(excluded.heartbeat_s, agents.heartbeat_s), status_at = excluded.status_at"
            " RETURNING *",
            {"site": site, "online": status.online, "boot": status.boot, "version": status.agent_version,
             "hb": status.heartbeat_s, "at": at},
        ).fetchone()
        agents[site] = row
        if status.devices:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO devices (site, id, kind, name, location, declared) VALUES (%s, %s, %s, %s, %s, true)"
                    " ON CONFLICT (site, id) DO UPDATE SET kind = excluded.kind, name = excluded.name,"
                    " location = excluded.location, declared = true",
                    [(site, d.id, d.kind.value, d.name, d.location) for d in status.devices],
                )
            for d in status.devices:
                kinds[(site, d.id)] = d.kind.value
        return changes

    @staticmethod
    def _insert_readings(conn: Conn, staged: list[_Staged]) -> set[_Key]:
        if not staged:
            return set()
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS readings_in"
            " (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with conn.cursor() as cur:
            columns = ", ".join(_READING_COLUMNS)
            with cur.copy(f"COPY readings_in ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(_READING_TYPES))
                for s in staged:
                    r = s.reading
                    copy.write_row((
                        from_epoch(r.ts), from_epoch(s.message.received_at), s.topic.site, s.device, r.kind.value,
                        r.boot, r.seq, _status_of(r), Jsonb(r.model_dump(mode="json")),
                    ))
            rows = cur.execute(
                f"INSERT INTO readings ({columns}) SELECT {columns} FROM readings_in"
                " ON CONFLICT DO NOTHING RETURNING site, device, boot, seq, ts"
            ).fetchall()
        return {(r["site"], r["device"], r["boot"], r["seq"], r["ts"]) for r in rows}

    @staticmethod
    def _first_inserted(staged: list[_Staged], inserted: set[_Key]) -> list[_Staged]:
        """Readings this transaction stored, each once, in arrival order."""
        fresh = []
        remaining = set(inserted)
        for s in staged:
            if s.key in remaining:
                remaining.discard(s.key)
                fresh.append(s)
        return fresh

    def _evaluate(self, conn: Conn, fresh: list[_Staged], open_alerts: dict[AlertKey, OpenAlert]) -> list[Change]:
        if not fresh:
            return []
        devices = sorted({(s.topic.site, s.device) for s in fresh})
        prev: dict[tuple[str, str], DeviceStatus] = {
            (r["site"], r["device"]): DeviceStatus(r["status"], r["ts"], r["battery"])
            for r in conn.execute(
                "SELECT site, device, status, extract(epoch FROM last_ts)::float8 AS ts,"
                " (reading->>'battery_pct')::float8 AS battery FROM device_state"
                " WHERE (site, device) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([s for s, _ in devices], [d for _, d in devices]),
            )
        }
        changes: list[Change] = []
        for s in fresh:
            device_key = (s.topic.site, s.device)
            before = prev.get(device_key)
            step, open_alerts = engine.evaluate(
                s.topic.site, s.device, s.reading, before, open_alerts, battery_low_pct=self._rules.battery_low_pct
            )
            changes += step
            if before is None or s.reading.ts >= before.ts:
                prev[device_key] = _device_status(s.reading)
        return changes

    def _upsert_device_state(self, conn: Conn, fresh: list[_Staged], agents: dict[str, Any]) -> None:
        """Once per device per batch: newest state by ``ts``, ``last_seen`` by arrival."""
        latest: dict[tuple[str, str], _Staged] = {}
        for s in fresh:
            key = (s.topic.site, s.device)
            if key not in latest or s.reading.ts >= latest[key].reading.ts:
                latest[key] = s
        if not latest:
            return
        last_seen: dict[tuple[str, str], float] = {}
        for s in fresh:
            key = (s.topic.site, s.device)
            last_seen[key] = max(last_seen.get(key, 0.0), s.message.received_at)
            metrics.INGEST_LAG.observe(max(0.0, s.message.received_at - s.reading.ts))
        rows = []
        for key, s in latest.items():
            agent = agents.get(s.topic.site)
            heartbeat_s = (agent["heartbeat_s"] if agent else None) or self._rules.default_heartbeat_s
            seen = last_seen[key]
            r = s.reading
            rows.append((
                key[0], key[1], from_epoch(seen), from_epoch(r.ts), r.boot, r.seq, _status_of(r),
                Jsonb(r.model_dump(mode="json")), from_epoch(seen + heartbeat_s * self._rules.missed_heartbeats),
            ))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO device_state (site, device, last_seen, last_ts, boot, seq, status, reading, deadline)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (site, device) DO UPDATE SET"
                " last_seen = greatest(device_state.last_seen, excluded.last_seen),"
                " deadline = greatest(device_state.deadline, excluded.deadline),"
                " offline = false,"
                " last_ts = CASE WHEN excluded.last_ts >= device_state.last_ts THEN excluded.last_ts"
                "   ELSE device_state.last_ts END,"
                " boot = CASE WHEN excluded.last_ts >= device_state.last_ts THEN excluded.boot"
                "   ELSE device_state.boot END,"
                " seq = CASE WHEN excluded.last_ts >= device_state.last_ts THEN excluded.seq ELSE device_state.seq END,"
                " status = CASE WHEN excluded.last_ts >= device_state.last_ts THEN excluded.status"
                "   ELSE device_state.status END,"
                " reading = CASE WHEN excluded.last_ts >= device_state.last_ts THEN excluded.reading"
                "   ELSE device_state.reading END",
                rows,
            )
