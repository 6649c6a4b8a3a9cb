"""The notifier's SQL: the outbox of deliveries, their claims and attempts, and the channels' record.

:mod:`gateway.notify.outbox` decides (routing, retries, the channels' health) and says how the
notifier processes share the work; here are the reads and writes it runs, and :func:`claim`,
which decides nothing and makes its own transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.rows import DictRow

from gateway.store import alerts as alert_store
from gateway.store.db import Conn, from_epoch, rfc3339
from protocol import AlertKind

PLAN_LOCK = 0x5A_FE_6A_10
HEALTH_LOCK = 0x5A_FE_6A_11
PLAN_BATCH = 500
_HEALTH_WINDOW = 100  # attempts per channel looked at


def try_lock(conn: Conn, key: int) -> bool:
    """Take the advisory lock ``key`` until the transaction ends, unless another session holds it."""
    got = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (key,)).fetchone()
    return bool(got and got["ok"])


# --- planning -----------------------------------------------------------------------------------


def unplanned_changes(conn: Conn) -> list[DictRow]:
    """Up to ``PLAN_BATCH`` alert changes not yet notified, in id order, each with its site's county and city."""
    return conn.execute(
        "SELECT h.id, h.alert_id, h.site, h.at, h.action, h.alert, s.county, s.city"
        " FROM alert_history h LEFT JOIN sites s ON s.id = h.site"
        " WHERE NOT h.notified ORDER BY h.id LIMIT %s",
        (PLAN_BATCH,),
    ).fetchall()


def told(conn: Conn, alert_id: int) -> list[DictRow]:
    """The channel, route and step of each alert delivery of ``alert_id`` sent, being sent, or due first."""
    return conn.execute(
        "SELECT channel, route, step FROM notifications WHERE alert_id = %s AND purpose = 'alert'"
        " AND (state IN ('sent', 'sending') OR (state = 'pending' AND step = 0)) ORDER BY id",
        (alert_id,),
    ).fetchall()


class Delivery(NamedTuple):
    """A delivery to schedule; ``suppressed`` says why a quiet hour or a maintenance window holds it back."""

    alert_id: int
    site: str
    purpose: str
    route: str
    step: int
    channel: str
    due_at: float
    suppressed: str | None


def insert_deliveries(conn: Conn, planned: Sequence[Delivery], now: float) -> None:
    """Schedule ``planned`` (a suppressed one is done at once); one already there is left alone."""
    if not planned:
        return
    at = from_epoch(now)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO notifications (alert_id, site, purpose, route, step, channel, due_at, state, next_at,"
            " created_at, done_at, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (alert_id, purpose, channel) DO NOTHING",
            [(p.alert_id, p.site, p.purpose, p.route, p.step, p.channel, from_epoch(p.due_at),
              "suppressed" if p.suppressed else "pending", from_epoch(p.due_at), at,
              at if p.suppressed else None, p.suppressed) for p in planned],
        )


def stop_steps(conn: Conn, alert_id: int, action: str, now: float) -> int:
    """Cancel the escalation steps of ``alert_id`` not yet sent; how many."""
    return conn.execute(
        "UPDATE notifications SET state = 'cancelled', done_at = %s, note = %s"
        " WHERE alert_id = %s AND purpose = 'alert' AND step > 0 AND state = 'pending'",
        (from_epoch(now), f"not sent: the alert was {action} first", alert_id),
    ).rowcount


def mark_notified(conn: Conn, history_ids: list[int]) -> None:
    """The alert changes ``history_ids`` are planned."""
    conn.execute("UPDATE alert_history SET notified = true WHERE id = ANY(%s)", (history_ids,))


# --- delivering ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    alert_id: int
    site: str
    purpose: str
    route: str
    step: int
    channel: str
    attempts: int
    attempt_id: int
    alert: dict[str, Any]  # as the API shows it, at the claim
    site_info: dict[str, Any]  # the registry's name, city, county, address


_ALERT_COLUMNS = ", ".join(f"a.{c.strip()}" for c in alert_store.COLUMNS.split(","))


def claim(conn: Conn, now: float, limit: int, lease_s: float, targets: Mapping[str, str]) -> list[Claimed]:
    """Take up to ``limit`` due deliveries (none another process holds) for this process, each with
    its alert and site: the sender needs the database again only for the outcome."""
    if limit <= 0:
        return []
    at = from_epoch(now)
    with conn.transaction():
        # Later steps of an alert acknowledged meanwhile are not sent (the planner may not have
        # seen the acknowledgement yet).
        conn.execute(
            "UPDATE notifications n SET state = 'cancelled', done_at = %(at)s,"
            " note = 'not sent: the alert was ' || a.state || ' first'"
            " FROM alerts a WHERE a.id = n.alert_id AND n.state = 'pending' AND n.purpose = 'alert'"
            " AND n.step > 0 AND a.state <> 'open' AND n.next_at <= %(at)s",
            {"at": at},
        )
        rows = conn.execute(
            "WITH due AS (SELECT id FROM notifications WHERE state IN ('pending', 'sending') AND next_at <= %(at)s"
            "  ORDER BY next_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
            " taken AS (UPDATE notifications n SET state = 'sending', attempts = n.attempts + 1, next_at = %(lease)s"
            "  FROM due WHERE n.id = due.id"
            "  RETURNING n.id AS nid, n.purpose, n.route, n.step, n.channel, n.attempts, n.alert_id AS nalert)"
            f" SELECT t.*, {_ALERT_COLUMNS}, s.name AS site_name, s.city AS site_city, s.county AS site_county,"
            "  s.address AS site_address"
            " FROM taken t JOIN alerts a ON a.id = t.nalert LEFT JOIN sites s ON s.id = a.site ORDER BY t.nid",
            {"at": at, "limit": limit, "lease": from_epoch(now + lease_s)},
        ).fetchall()
        if not rows:
            return []
        ids = [r["nid"] for r in rows]
        # Attempts still 'sending' belong to a claim whose notifier stopped before it knew the outcome.
        conn.execute(
            "UPDATE notification_attempts SET result = 'interrupted',"
            " error = 'the notifier stopped before the outcome was known'"
            " WHERE notification_id = ANY(%s) AND result = 'sending'",
            (ids,),
        )
        attempts = {a["notification_id"]: a["id"] for a in conn.execute(
            "INSERT INTO notification_attempts (notification_id, alert_id, channel, target, attempt, at, result)"
            " SELECT n, a, c, t, k, %s, 'sending'"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::int[]) AS u(n, a, c, t, k)"
            " RETURNING id, notification_id",
            (at, ids, [r["nalert"] for r in rows], [r["channel"] for r in rows],
             [targets.get(r["channel"], "(not configured)") for r in rows], [r["attempts"] for r in rows]),
        )}
        return [
            Claimed(r["nid"], r["nalert"], r["site"], r["purpose"], r["route"], r["step"], r["channel"], r["attempts"],
                    attempts[r["nid"]], alert_store.alert_json(r),
                    {"id": r["site"], "name": r["site_name"], "city": r["site_city"], "county": r["site_county"],
                     "address": r["site_address"]})
            for r in rows
        ]


def record_outcome(conn: Conn, claimed: Sequence[Claimed], at: datetime, *, result: str, code: int | None,
                   error: str | None, latency_ms: float, states: list[str], next_ats: list[datetime],
                   notes: list[str | None]) -> None:
    """The attempts of ``claimed`` get the send's result, the deliveries their next state, next_at and note
    (one each, in order), in one statement (a burst's bottleneck is round trips)."""
    conn.execute(
        "WITH attempt AS (UPDATE notification_attempts SET result = %(result)s, response_code = %(code)s,"
        "  latency_ms = %(latency)s, error = %(error)s WHERE id = ANY(%(attempts)s) AND result = 'sending')"
        " UPDATE notifications n SET state = u.state, next_at = u.next_at, note = u.note,"
        "  done_at = CASE WHEN u.state IN ('sent', 'failed') THEN %(at)s::timestamptz END"
        " FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(next_ats)s::timestamptz[], %(notes)s::text[])"
        "  AS u(id, state, next_at, note)"
        " WHERE n.id = u.id AND n.state = 'sending'",
        {"result": result, "code": code, "latency": latency_ms, "error": error,
         "attempts": [c.attempt_id for c in claimed], "at": at, "ids": [c.id for c in claimed], "states": states,
         "next_ats": next_ats, "notes": notes},
    )


def next_due(conn: Conn) -> float | None:
    """When the next delivery is due or its lease ends (epoch seconds); None if none is left."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(next_at))::float8 AS t FROM notifications WHERE state IN ('pending', 'sending')"
    ).fetchone()
    return row["t"] if row else None


# --- the channels' health -----------------------------------------------------------------------


def recent_attempts(conn: Conn, channel: str) -> list[DictRow]:
    """The last finished attempts through ``channel``, newest first: at (epoch seconds), ok, site."""
    return conn.execute(
        "SELECT extract(epoch FROM a.at)::float8 AS at, a.result = 'ok' AS ok, n.site"
        " FROM notification_attempts a JOIN notifications n ON n.id = a.notification_id"
        " WHERE a.channel = %s AND a.result IN ('ok', 'error', 'timeout') ORDER BY a.id DESC LIMIT %s",
        (channel, _HEALTH_WINDOW),
    ).fetchall()


def failing_channel_alerts(conn: Conn) -> list[DictRow]:
    """The site and device (the channel) of each unresolved ``notifier_failing`` alert."""
    return conn.execute(
        "SELECT site, device FROM alerts WHERE kind = %s AND state <> 'resolved'",
        (AlertKind.NOTIFIER_FAILING.value,),
    ).fetchall()


# --- the API ------------------------------------------------------------------------------------


def deliveries(conn: Conn, alert_id: int) -> list[dict[str, Any]]:
    """Who was told when about ``alert_id``: its deliveries, each with its attempts (the API's shape)."""
    rows = conn.execute(
        "SELECT id, purpose, route, step, channel, due_at, state, attempts, created_at, done_at, note"
        " FROM notifications WHERE alert_id = %s ORDER BY due_at, id",
        (alert_id,),
    ).fetchall()
    attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in conn.execute(
        "SELECT notification_id, attempt, at, target, result, response_code, latency_ms, error"
        " FROM notification_attempts WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    ):
        attempts[a["notification_id"]].append({
            "attempt": a["attempt"], "at": rfc3339(a["at"]), "target": a["target"], "result": a["result"],
            "response_code": a["response_code"],
            "latency_ms": None if a["latency_ms"] is None else round(a["latency_ms"], 1), "error": a["error"],
        })
    return [
        {"id": r["id"], "event": r["purpose"], "route": r["route"], "step": r["step"], "channel": r["channel"],
         "due_at": rfc3339(r["due_at"]), "state": r["state"], "attempts": attempts.get(r["id"], []),
         "created_at": rfc3339(r["created_at"]), "done_at": rfc3339(r["done_at"]), "note": r["note"]}
        for r in rows
    ]
