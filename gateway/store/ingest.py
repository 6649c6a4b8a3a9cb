"""The ingest batch's SQL: what a batch loads and what it writes, each a fixed handful of statements.

Every function here is set-based (one statement or one COPY, whatever the number of devices) and
takes plain rows, so the deciding code in ``gateway/ingest/batch.py`` holds no SQL and this module
holds no rules. Rows are tuples in the column order named beside each function: they are built
once per message on the hot path, and a tuple is the cheapest thing to build and to COPY.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from gateway.rules.model import DeviceStatus
from gateway.store.db import Conn

READING_COLUMNS = ("ts", "received_at", "site", "device", "kind", "boot", "seq", "status", "payload")
_READING_TYPES = ("timestamptz", "timestamptz", "text", "text", "text", "text", "int8", "text", "jsonb")
STATE_COLUMNS = ("site", "device", "last_seen", "last_ts", "boot", "seq", "status", "reading", "deadline")
_STATE_TYPES = ("text", "text", "timestamptz", "timestamptz", "text", "int8", "text", "jsonb", "timestamptz")
DEAD_LETTER_COLUMNS = ("received_at", "topic", "code", "reason", "payload_excerpt", "payload_size")

ReadingKey = tuple[str, str, str, int]  # (site, device, boot, seq): a reading's exactly-once key
DeviceKey = tuple[str, str]


def json_text(text: str) -> Jsonb:
    """Already-serialised JSON for a jsonb column (no second dump)."""
    return Jsonb(text, dumps=_as_is)


def _as_is(text: Any) -> str:
    return str(text)


# load ----------------------------------------------------------------------------------------


def load_devices(conn: Conn, pairs: Sequence[DeviceKey]) -> tuple[dict[DeviceKey, str], dict[DeviceKey, DeviceStatus]]:
    """Each known device's kind and latest stored state, of ``pairs`` (site, device), in one query."""
    kinds: dict[DeviceKey, str] = {}
    states: dict[DeviceKey, DeviceStatus] = {}
    if not pairs:
        return kinds, states
    # Binary parameters and tuple rows: a batch sends two arrays of ~1,000 ids and reads a row
    # per device, and text arrays are quoted element by element (a regex each) in psycopg.
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "SELECT d.site, d.id, d.kind, s.status, extract(epoch FROM s.last_ts)::float8,"
            " (s.reading->>'battery_pct')::float8 FROM devices d"
            " JOIN unnest(%s::text[], %s::text[]) AS p(site, id) USING (site, id)"
            " LEFT JOIN device_state s ON s.site = d.site AND s.device = d.id",
            ([s for s, _ in pairs], [d for _, d in pairs]), binary=True,
        )
        for site, device, kind, status, ts, battery in cur:
            kinds[(site, device)] = kind
            if status is not None:
                states[(site, device)] = DeviceStatus(status, ts, battery)
    return kinds, states


def load_agents(conn: Conn, sites: Collection[str]) -> dict[str, dict[str, Any]]:
    """The agents' rows (online, boot, version, heartbeat, status time) of ``sites``, by site."""
    return {r["site"]: dict(r) for r in conn.execute(
        "SELECT site, online, boot, agent_version, heartbeat_s, status_at FROM agents WHERE site = ANY(%s)",
        (list(sites),),
    )}


def load_clocks(conn: Conn, sites: Collection[str]) -> dict[str, float]:
    """Each agent's stored smoothed clock skew, of ``sites``."""
    if not sites:
        return {}
    return {r["site"]: r["skew_s"] for r in conn.execute(
        "SELECT site, skew_s FROM agent_clocks WHERE site = ANY(%s)", (list(sites),)
    )}


# write ---------------------------------------------------------------------------------------


def upsert_agents(conn: Conn, rows: Iterable[dict[str, Any]]) -> None:
    """An agent row per site (keys as :func:`load_agents` returns), replacing the stored one."""
    for row in rows:  # at most one per site that sent a status in the batch: rare
        conn.execute(
            "INSERT INTO agents (site, online, boot, agent_version, heartbeat_s, status_at)"
            " VALUES (%(site)s, %(online)s, %(boot)s, %(agent_version)s, %(heartbeat_s)s, %(status_at)s)"
            " ON CONFLICT (site) DO UPDATE SET online = excluded.online, boot = excluded.boot,"
            " agent_version = excluded.agent_version, heartbeat_s = excluded.heartbeat_s,"
            " status_at = excluded.status_at",
            row,
        )


def declare_devices(conn: Conn, rows: Sequence[tuple[str, str, str, str | None, str | None]]) -> None:
    """Devices an agent's status lists: (site, id, kind, name, location); a listed device is ``declared``."""
    if not rows:
        return
    last = {(row[0], row[1]): row for row in rows}  # listed twice in one status: the last listing wins
    columns = list(zip(*last.values(), strict=True))
    conn.execute(
        "INSERT INTO devices (site, id, kind, name, location, declared)"
        " SELECT *, true FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
        " ON CONFLICT (site, id) DO UPDATE SET kind = excluded.kind, name = excluded.name,"
        " location = excluded.location, declared = true",
        [list(c) for c in columns],
    )


def add_devices(conn: Conn, kinds: dict[DeviceKey, str]) -> None:
    """Devices first seen in a reading, by their kind; a device already stored is left as it is."""
    if not kinds:
        return
    items = list(kinds.items())
    conn.execute(
        "INSERT INTO devices (site, id, kind) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])"
        " ON CONFLICT DO NOTHING",
        ([s for (s, _), _ in items], [d for (_, d), _ in items], [k for _, k in items]),
    )


_STAGED_ON: dict[str, weakref.WeakSet[Conn]] = {}  # staging table -> the connections that have it


def forget_staging(conn: Conn) -> None:
    """After a rollback: a staging table created in a rolled-back transaction is gone."""
    for having in _STAGED_ON.values():
        having.discard(conn)


def _staging(conn: Conn, name: str, like: str) -> None:
    """A session's temp staging table, created once per connection (not a statement per batch)."""
    having = _STAGED_ON.setdefault(name, weakref.WeakSet())
    if conn not in having:
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {like} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        having.add(conn)


def insert_readings(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> set[ReadingKey]:
    """Readings (rows in :data:`READING_COLUMNS` order) whose key is new; the keys this stored."""
    if not rows:
        return set()
    _staging(conn, "readings_in", "readings")
    columns = ", ".join(READING_COLUMNS)
    with conn.cursor() as cur:
        with cur.copy(f"COPY readings_in ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_READING_TYPES))
            for row in rows:
                copy.write_row(row)
        # The key first (once per (site, device, boot, seq), whatever the ts), then the readings
        # whose key was new: reading_keys is the one unique index a reading costs.
        stored = cur.execute(
            "WITH fresh AS (INSERT INTO reading_keys (site, device, boot, seq, received_at)"
            " SELECT site, device, boot, seq, received_at FROM readings_in"
            " ON CONFLICT DO NOTHING RETURNING site, device, boot, seq)"
            f" INSERT INTO readings ({columns}) SELECT {', '.join('r.' + c for c in READING_COLUMNS)}"
            " FROM readings_in r JOIN fresh USING (site, device, boot, seq)"
            " RETURNING site, device, boot, seq"
        ).fetchall()
    return {(r["site"], r["device"], r["boot"], r["seq"]) for r in stored}


def write_states(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
    """Once per device per batch (rows in :data:`STATE_COLUMNS` order), one statement: the newest
    state by ``ts``, ``last_seen`` and the deadline by arrival, and the device back online."""
    if not rows:
        return
    _staging(conn, "device_state_in", "device_state")
    columns = ", ".join(STATE_COLUMNS)
    newer = "excluded.last_ts >= device_state.last_ts"
    kept = ", ".join(
        f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE device_state.{c} END"
        for c in ("last_ts", "boot", "seq", "status", "reading")
    )
    with conn.cursor() as cur:
        with cur.copy(f"COPY device_state_in ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_STATE_TYPES))
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO device_state ({columns}) SELECT {columns} FROM device_state_in"
            " ON CONFLICT (site, device) DO UPDATE SET"
            " last_seen = greatest(device_state.last_seen, excluded.last_seen),"
            " deadline = greatest(device_state.deadline, excluded.deadline),"
            f" offline = false, {kept}"
        )


def write_clocks(conn: Conn, clocks: dict[str, float], at: datetime) -> None:
    """Each agent's smoothed clock skew, as of ``at``."""
    if clocks:
        conn.execute(
            "INSERT INTO agent_clocks (site, skew_s, updated_at) SELECT s, k, %s FROM unnest(%s::text[], %s::float8[])"
            " AS c(s, k) ON CONFLICT (site) DO UPDATE SET skew_s = excluded.skew_s, updated_at = excluded.updated_at",
            (at, list(clocks), list(clocks.values())),
        )


def write_snapshots(conn: Conn, rows: Sequence[tuple[str, str | None, datetime, bytes]]) -> None:
    """Exit snapshots: (site, device, received_at, jpeg)."""
    if rows:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO snapshots (site, device, received_at, jpeg) VALUES (%s, %s, %s, %s)", rows)


def write_dead_letters(conn: Conn, rows: Iterable[tuple[Any, ...]]) -> None:
    """Refused messages, rows in :data:`DEAD_LETTER_COLUMNS` order (one COPY)."""
    with conn.cursor().copy(f"COPY dead_letters ({', '.join(DEAD_LETTER_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
