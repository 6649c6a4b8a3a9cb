"""The notifier's outbox: route alert changes into scheduled deliveries, record each send's outcome,
and watch the channels' health. The SQL is in :mod:`gateway.store.notify`.

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

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.notify.channels.base import Outcome
from gateway.notify.config import NotifyConfig
from gateway.notify.routing import AlertEvent, Told, backoff_s, failing_since, plan
from gateway.rules import engine
from gateway.store import alerts as alert_store
from gateway.store import notify as store
from gateway.store.db import Conn, from_epoch, lock_sites


def _event(row: Mapping[str, Any]) -> AlertEvent:
    alert = row["alert"]
    opened = datetime.fromisoformat(alert["opened_at"].replace("Z", "+00:00")).timestamp()
    return AlertEvent(
        history_id=row["id"], alert_id=row["alert_id"], action=row["action"], at=row["at"].timestamp(),
        site=row["site"], device=alert.get("device"), kind=alert["kind"], severity=alert["severity"],
        opened_at=opened, county=row["county"] or "", city=row["city"] or "",
    )


def _told(conn: Conn, alert_id: int) -> list[Told]:
    return [Told(r["channel"], r["route"], r["step"]) for r in store.told(conn, alert_id)]


def plan_pending(conn: Conn, config: NotifyConfig, now: float) -> int | None:
    """Route the alert changes not yet notified; the number planned, or None when another
    notifier process is planning right now."""
    with conn.transaction():
        if not store.try_lock(conn, store.PLAN_LOCK):
            return None
        rows = store.unplanned_changes(conn)
        if not rows:
            return 0
        for row in rows:
            event = _event(row)
            told = _told(conn, event.alert_id) if event.action == "resolved" else []
            decided = plan(config, event, told, now=now)
            if decided.stop_steps:
                store.stop_steps(conn, event.alert_id, event.action, now)
            store.insert_deliveries(conn, [
                store.Delivery(p.alert_id, p.site, p.purpose, p.route, p.step, p.channel, p.due_at, p.suppressed)
                for p in decided.deliveries
            ], now)
        store.mark_notified(conn, [r["id"] for r in rows])
        return len(rows)


def finish(conn: Conn, claimed: Sequence[store.Claimed], outcome: Outcome, now: float, config: NotifyConfig) -> None:
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
    store.record_outcome(conn, claimed, at, result=outcome.result, code=outcome.code, error=outcome.error,
                         latency_ms=outcome.latency_ms, states=states, next_ats=next_ats, notes=notes)


def check_health(conn: Conn, channels: Sequence[str], now: float, after_s: float) -> int:
    """Raise ``notifier_failing`` for the sites whose deliveries through a channel have failed for
    ``after_s`` with no success since; resolve it once the channel delivers again. The number of
    alert changes made, or 0 when another notifier process checks right now."""
    with conn.transaction():
        if not store.try_lock(conn, store.HEALTH_LOCK):
            return 0
        verdicts: dict[tuple[str, str], tuple[bool, float | None]] = {}
        for channel in channels:
            rows = store.recent_attempts(conn, channel)
            since = failing_since([(r["at"], r["ok"]) for r in rows])
            failing = since is not None and now - since >= after_s
            run_sites = set()
            for r in rows:
                if r["ok"]:
                    break
                run_sites.add(r["site"])
            for site in run_sites if failing else ():
                verdicts[(site, channel)] = (True, since)
        for r in store.failing_channel_alerts(conn):
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
