"""Alerts in PostgreSQL: load the open ones, persist the changes the rules decided.

The store decides nothing: every change (a rule's, or an operator's acknowledge or resolve,
decided by ``rules.engine.acknowledge`` / ``resolve_by_hand``) comes in as a ``Change``.

Every change writes one ``alert_history`` row holding the alert as the API shows it
and notifies ``sg_alert_changes`` with that row's id: API processes push it over SSE,
the supervisor leader relays it to ``sg/v1/alerts/{site}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from gateway.rules.engine import StepRefused
from gateway.rules.model import (
    SEVERITY,
    Acknowledge,
    AlertKey,
    Change,
    OpenAlert,
    OpenAlerts,
    Raise,
    Repeat,
    Resolve,
    Update,
)
from gateway.store.db import ALERT_CHANNEL, Conn, lock_sites, rfc3339
from protocol import Alert, AlertKind, AlertState, Severity, alert_key

SYSTEM = "system"

COLUMNS = (
    "id, site, device, kind, severity, state, opened_at, updated_at, acknowledged_at, acknowledged_by,"
    " resolved_at, resolved_by, count, detail"
)
_BY_KEY = (
    "site = %(site)s AND coalesce(device, '') = coalesce(%(device)s, '') AND kind = %(kind)s"
    " AND state <> 'resolved'"
)


class AlertConflict(Exception):
    """A lifecycle step that the alert's state does not allow (HTTP 409); ``code`` as StepRefused's."""

    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message)
        self.code = code


class AlertNotFound(LookupError):
    pass


def alert(row: Mapping[str, Any]) -> Alert:
    """An ``alerts`` row (``COLUMNS``) as the contract's alert message."""
    return Alert(
        id=row["id"],
        key=alert_key(row["site"], row["device"], row["kind"]),
        site=row["site"],
        device=row["device"],
        kind=AlertKind(row["kind"]),
        severity=Severity(row["severity"]),
        state=AlertState(row["state"]),
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        count=row["count"],
        detail=row["detail"],
    )


def alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """An alert as the API and ``sg/v1/alerts/{site}`` carry it (DESIGN section 7): ``protocol.Alert``'s JSON."""
    return alert(row).model_dump(mode="json")


def open_alert(row: Mapping[str, Any]) -> OpenAlert:
    key = AlertKey(row["site"], row["device"], AlertKind(row["kind"]))
    return OpenAlert(key, AlertState(row["state"]), row["count"], row["detail"])


def load_open(conn: Conn, sites: Iterable[str]) -> dict[AlertKey, OpenAlert]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM alerts WHERE site = ANY(%s) AND state <> 'resolved'", (list(set(sites)),)
    ).fetchall()
    return {alert.key: alert for alert in map(open_alert, rows)}


@dataclass(frozen=True, slots=True)
class Recorded:
    """One persisted change: its history id (the SSE event id) and the alert after it."""

    change_id: int
    alert: dict[str, Any]


def _key_params(key: AlertKey) -> dict[str, Any]:
    return {"site": key.site, "device": key.device, "kind": key.kind.value}


def _write(conn: Conn, change: Change, at: datetime, by: str, note: str | None) -> Mapping[str, Any] | None:
    params = {**_key_params(change.key), "at": at, "by": by}
    if isinstance(change, Raise):
        return conn.execute(
            f"INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at, detail)"
            f" VALUES (%(site)s, %(device)s, %(kind)s, %(severity)s, 'open', %(at)s, %(at)s, %(detail)s)"
            f" RETURNING {COLUMNS}",
            {**params, "severity": SEVERITY[change.key.kind].value, "detail": Jsonb(dict(change.detail))},
        ).fetchone()
    if isinstance(change, Acknowledge):
        return conn.execute(
            f"UPDATE alerts SET state = 'acknowledged', acknowledged_at = %(at)s, acknowledged_by = %(by)s,"
            f" updated_at = %(at)s WHERE {_BY_KEY} RETURNING {COLUMNS}",
            params,
        ).fetchone()
    if isinstance(change, Repeat | Update):
        bump = "count = count + 1," if isinstance(change, Repeat) else ""
        return conn.execute(
            f"UPDATE alerts SET {bump} detail = detail || %(detail)s, updated_at = %(at)s WHERE {_BY_KEY}"
            f" RETURNING {COLUMNS}",
            {**params, "detail": Jsonb(dict(change.detail))},
        ).fetchone()
    return conn.execute(
        f"UPDATE alerts SET state = 'resolved', resolved_at = %(at)s, resolved_by = %(by)s, updated_at = %(at)s,"
        f" detail = detail || jsonb_build_object('resolution', %(reason)s::text) WHERE {_BY_KEY}"
        f" RETURNING {COLUMNS}",
        {**params, "reason": change.reason},
    ).fetchone()


def _action(change: Change) -> str:
    match change:
        case Raise():
            return "opened"
        case Repeat():
            return "repeated"
        case Update():
            return change.action
        case Acknowledge():
            return "acknowledged"
        case Resolve():
            return "resolved"


def record_history(
    conn: Conn, row: Mapping[str, Any], action: str, at: datetime, by: str, note: str | None
) -> Recorded:
    alert = alert_json(row)
    history = conn.execute(
        "INSERT INTO alert_history (alert_id, site, at, state, action, by, note, alert)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (row["id"], row["site"], at, row["state"], action, by, note, Jsonb(alert)),
    ).fetchone()
    assert history is not None
    conn.execute("SELECT pg_notify(%s, %s)", (ALERT_CHANNEL, str(history["id"])))
    return Recorded(history["id"], alert)


def _by_operator(change: Change) -> bool:
    return isinstance(change, Acknowledge) or (isinstance(change, Resolve) and change.by_hand)


def persist(
    conn: Conn, changes: Iterable[Change], at: datetime, *, by: str = SYSTEM, note: str | None = None
) -> list[Recorded]:
    """Write changes (inside the caller's transaction, with the site locked).

    ``by`` and ``note`` are the operator's, for the operator's own steps; what follows from them
    (a fire alarm resolving, the compound rule) is the system's.
    """
    recorded = []
    for change in changes:
        actor, said = (by, note) if _by_operator(change) else (SYSTEM, None)
        row = _write(conn, change, at, actor, said)
        if row is None:  # the alert changed under us; the site lock makes this a bug, not a race
            raise AlertConflict(f"no unresolved alert for {change.key}")
        reason = change.reason if isinstance(change, Resolve) else None
        recorded.append(record_history(conn, row, _action(change), at, actor, said or reason))
    return recorded


def _locked_alert(conn: Conn, alert_id: int) -> tuple[OpenAlert, dict[AlertKey, OpenAlert]]:
    """The unresolved alert ``alert_id`` and its site's open alerts, with the site locked."""
    row = conn.execute("SELECT site FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    if row is None:
        raise AlertNotFound(f"alert {alert_id} not found")
    lock_sites(conn, [row["site"]])
    row = conn.execute(f"SELECT {COLUMNS} FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    assert row is not None
    if row["state"] == AlertState.RESOLVED:
        raise AlertConflict(f"alert {alert_id} is already resolved", "already_resolved")
    return open_alert(row), load_open(conn, [row["site"]])


Step = Callable[[OpenAlert, OpenAlerts], list[Change]]


def operator_step(conn: Conn, alert_id: int, decide: Step, at: datetime, by: str, note: str | None) -> list[Recorded]:
    """Load the alert and its site's open alerts, let ``decide`` (``rules.engine.acknowledge`` or
    ``resolve_by_hand``) say what changes, write them: one transaction, the site locked."""
    with conn.transaction():
        alert, alerts = _locked_alert(conn, alert_id)
        try:
            changes = decide(alert, alerts)
        except StepRefused as exc:
            raise AlertConflict(f"alert {alert_id}: {exc}", exc.code) from None
        return persist(conn, changes, at, by=by, note=note)


def get(conn: Conn, alert_id: int) -> dict[str, Any]:
    row = conn.execute(f"SELECT {COLUMNS} FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    if row is None:
        raise AlertNotFound(f"alert {alert_id} not found")
    history = conn.execute(
        "SELECT id, at, state, action, by, note FROM alert_history WHERE alert_id = %s ORDER BY id", (alert_id,)
    ).fetchall()
    return {
        **alert_json(row),
        "history": [
            {"at": rfc3339(h["at"]), "state": h["state"], "action": h["action"], "by": h["by"], "note": h["note"]}
            for h in history
        ],
    }


def list_alerts(
    conn: Conn, *, site: str | None, state: AlertState | None, kind: AlertKind | None, severity: Severity | None,
    since: datetime | None, before: int | None, limit: int,
) -> list[DictRow]:
    """Up to ``limit`` alerts (``COLUMNS``), newest first, ids below ``before``; each filter None matches all."""
    return conn.execute(
        f"SELECT {COLUMNS} FROM alerts"
        " WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(state)s::text IS NULL OR state = %(state)s)"
        " AND (%(kind)s::text IS NULL OR kind = %(kind)s) AND (%(sev)s::text IS NULL OR severity = %(sev)s)"
        " AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s)"
        " AND (%(before)s::bigint IS NULL OR id < %(before)s) ORDER BY id DESC LIMIT %(limit)s",
        {"site": site, "state": state, "kind": kind, "sev": severity, "since": since, "before": before,
         "limit": limit},
    ).fetchall()


def open_counts(conn: Conn) -> dict[str, int]:
    """The number of unresolved alerts per kind (kinds with none are absent)."""
    return {
        r["kind"]: r["n"]
        for r in conn.execute("SELECT kind, count(*) AS n FROM alerts WHERE state <> 'resolved' GROUP BY kind")
    }


def escalation_due(conn: Conn, cutoff: datetime, sites: list[str] | None) -> list[DictRow]:
    """Open critical alerts (``COLUMNS``) opened by ``cutoff`` and not yet escalated, of ``sites`` (None: all)."""
    return conn.execute(
        f"SELECT {COLUMNS} FROM alerts WHERE state = 'open' AND severity = 'critical'"
        " AND opened_at <= %(cutoff)s AND NOT (detail ? 'escalated')"
        " AND site = ANY(coalesce(%(sites)s, ARRAY[site]))",
        {"cutoff": cutoff, "sites": sites},
    ).fetchall()
