"""The notifier's SQL: route alert changes into scheduled deliveries (the outbox), claim due ones,
record each attempt, and the channels' health.

- Planning reads ``alert_history`` rows not yet ``notified`` in id order, under a transaction-level
  advisory lock (one planner at a time, whichever notifier process gets it; the others skip): each
  change's deliveries are inserted and the row marked in one transaction, so a notifier killed at
  any point plans each change exactly once.
- Delivering claims due rows with ``FOR UPDATE SKIP LOCKED`` (any number of notifier processes),
  marks them ``sending`` with a lease and writes an attempt row ``sending``; the outcome updates
  both. A claim whose notifier died is taken again when its lease ends; its attempt is then
  recorded as ``interrupted``. ``UNIQUE (alert_id, purpose, channel)`` keeps a step from doubling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.notify.channels.base import Outcome
from gateway.notify.config import NotifyConfig
from gateway.notify.routing import AlertEvent, Planned, Told, backoff_s, failing_since, plan
from gateway.rules import engine
from gateway.store import alerts as alert_store
from gateway.store.db import Conn, from_epoch, lock_sites, rfc3339
from protocol import AlertKind

PLAN_LOCK = 0x5A_FE_6A_10
HEALTH_LOCK = 0x5A_FE_6A_11
PLAN_BATCH = 500
_HEALTH_WINDOW = 100  # attempts per channel looked at


def _event(row: Mapping[str, Any]) -> AlertEvent:
    alert = row["alert"]
    opened = datetime.fromisoformat(alert["opened_at"].replace("Z", "+00:00")).timestamp()
    return AlertEvent(
        history_id=row["id"], alert_id=row["alert_id"], action=row["action"], at=row["at"].timestamp(),
        site=row["site"], device=alert.get("device"), kind=alert["kind"], severity=alert["severity"],
        opened_at=opened, county=row["county"] or "", city=row["city"] or "",
    )


def _told(conn: Conn, alert_id: int) -> list[Told]:
    rows = conn.execute(
        "SELECT channel, route, step FROM notifications WHERE alert_id = %s AND purpose = 'alert'"
        " AND (state IN ('sent', 'sending') OR (state = 'pending' AND step = 0)) ORDER BY id",
        (alert_id,),
    ).fetchall()
    return [Told(r["channel"], r["route"], r["step"]) for r in rows]


def _insert(conn: Conn, planned: Sequence[Planned], now: float) -> None:
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


def _stop_steps(conn: Conn, alert_id: int, action: str, now: float) -> int:
    return conn.execute(
        "UPDATE notifications SET state = 'cancelled', done_at = %s, note = %s"
        " WHERE alert_id = %s AND purpose = 'alert' AND step > 0 AND state = 'pending'",
        (from_epoch(now), f"not sent: the alert was {action} first", alert_id),
    ).rowcount


def plan_pending(conn: Conn, config: NotifyConfig, now: float) -> int | None:
    """Route the alert changes not yet notified; the number planned, or None when another
    notifier process is planning right now."""
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (PLAN_LOCK,)).fetchone()
        if not (got and got["ok"]):
            return None
        rows = conn.execute(
            "SELECT h.id, h.alert_id, h.site, h.at, h.action, h.alert, s.county, s.city"
            " FROM alert_history h LEFT JOIN sites s ON s.id = h.site"
            " WHERE NOT h.notified ORDER BY h.id LIMIT %s",
            (PLAN_BATCH,),
        ).fetchall()
        if not rows:
            return 0
        for row in rows:
            event = _event(row)
            told = _told(conn, event.alert_id) if event.action == "resolved" else []
            decided = plan(config, event, told, now=now)
            if decided.stop_steps:
                _stop_steps(conn, event.alert_id, event.action, now)
            _insert(conn, decided.deliveries, now)
        conn.execute("UPDATE alert_history SET notified = true WHERE id = ANY(%s)", ([r["id"] for r in rows],))
        return len(rows)


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


def finish(conn: Conn, claimed: Sequence[Claimed], outcome: Outcome, now: float, config: NotifyConfig) -> None:
    """Record the outcome of one send (a digest is one send for several deliveries): the attempts
    and the deliveries in one statement (a burst's bottleneck is round trips)."""
    at = from_epoch(now)
    states, next_ats, notes = [], [], []
    for c in claimed:
        if outcome.ok:
            state, next_at, note = "sent", at, None
        elif c.attempts >= config.max_attempts:
            state, next_at, note = "failed", at, f"gave up after {c.attempts} attempts: {outcome.error}"
        else:
            state, note = "pending", outcome.error
            next_at = from_epoch(now + backoff_s(c.attempts, config.retry_backoff_s, config.retry_max_s))
        states.append(state)
        next_ats.append(next_at)
        notes.append(note)
    conn.execute(
        "WITH attempt AS (UPDATE notification_attempts SET result = %(result)s, response_code = %(code)s,"
        "  latency_ms = %(latency)s, error = %(error)s WHERE id = ANY(%(attempts)s) AND result = 'sending')"
        " UPDATE notifications n SET state = u.state, next_at = u.next_at, note = u.note,"
        "  done_at = CASE WHEN u.state IN ('sent', 'failed') THEN %(at)s::timestamptz END"
        " FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(next_ats)s::timestamptz[], %(notes)s::text[])"
        "  AS u(id, state, next_at, note)"
        " WHERE n.id = u.id AND n.state = 'sending'",
        {"result": outcome.result, "code": outcome.code, "latency": outcome.latency_ms, "error": outcome.error,
         "attempts": [c.attempt_id for c in claimed], "at": at, "ids": [c.id for c in claimed], "states": states,
         "next_ats": next_ats, "notes": notes},
    )


def next_due(conn: Conn) -> float | None:
    row = conn.execute(
        "SELECT extract(epoch FROM min(next_at))::float8 AS t FROM notifications WHERE state IN ('pending', 'sending')"
    ).fetchone()
    return row["t"] if row else None


def check_health(conn: Conn, channels: Sequence[str], now: float, after_s: float) -> int:
    """Raise ``notifier_failing`` for the sites whose deliveries through a channel have failed for
    ``after_s`` with no success since; resolve it once the channel delivers again. The number of
    alert changes made, or 0 when another notifier process checks right now."""
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (HEALTH_LOCK,)).fetchone()
        if not (got and got["ok"]):
            return 0
        verdicts: dict[tuple[str, str], tuple[bool, float | None]] = {}
        for channel in channels:
            rows = conn.execute(
                "SELECT extract(epoch FROM a.at)::float8 AS at, a.result = 'ok' AS ok, n.site"
                " FROM notification_attempts a JOIN notifications n ON n.id = a.notification_id"
                " WHERE a.channel = %s AND a.result IN ('ok', 'error', 'timeout') ORDER BY a.id DESC LIMIT %s",
                (channel, _HEALTH_WINDOW),
            ).fetchall()
            since = failing_since([(r["at"], r["ok"]) for r in rows])
            failing = since is not None and now - since >= after_s
            run_sites = set()
            for r in rows:
                if r["ok"]:
                    break
                run_sites.add(r["site"])
            for site in run_sites if failing else ():
                verdicts[(site, channel)] = (True, since)
        open_rows = conn.execute(
            "SELECT site, device FROM alerts WHERE kind = %s AND state <> 'resolved'",
            (AlertKind.NOTIFIER_FAILING.value,),
        ).fetchall()
        for r in open_rows:
            verdicts.setdefault((r["site"], r["device"]), (False, None))
        if not verdicts:
            return 0
        sites = sorted({site for site, _ in verdicts})
        registered = lock_sites(conn, sites)
        alerts = alert_store.load_open(conn, sites)
        changes = []
        for (site, channel), (failing, since) in sorted(verdicts.items()):
            if site not in registered:
                continue
            step = engine.evaluate_notifier(site, channel, failing=failing, since=since, alerts=alerts)
            alerts = engine.apply(alerts, step)
            changes += step
        alert_store.persist(conn, changes, from_epoch(now))
        return len(changes)


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
