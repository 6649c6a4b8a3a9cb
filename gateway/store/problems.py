"""The problem list in PostgreSQL: the condition queries, the lock, and the reads and writes of problems.

The store decides nothing: :mod:`gateway.problems.actions` runs the sweep and the hand actions in
their transactions, under :func:`lock_problem_list`, and :func:`gateway.problems.rules.evaluate`
decides each change that :func:`apply_change` writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb

from gateway.problems.rules import (
    Change,
    Clearing,
    Condition,
    Holding,
    MarkOverdue,
    Open,
    OpenProblem,
    ProblemKey,
    ProblemKind,
    ProblemStatus,
    Rectify,
    month_start,
)
from gateway.store.db import Conn, rfc3339

SYSTEM = "system"
_LOCK = (2, 0x9B_1E_57)  # pg_advisory_xact_lock(int, int): the problem list (alerts use class 1 per site)

# GB 50440: smoke detectors get a simulated alarm at least twice a month. ``test`` readings less
# than an hour after the previous one belong to the same test (a detector repeats its state).
TESTS_PER_MONTH = 2
TEST_MERGE_WITHIN = timedelta(hours=1)

ALERT_KINDS = (ProblemKind.EXIT_BLOCKED, ProblemKind.DETECTOR_FAULT, ProblemKind.DETECTOR_OFFLINE,
               ProblemKind.CAMERA_OFFLINE)

COLUMNS = (
    "id, site, device, kind, status, opened_at, since, deadline, clear_since, by_hand, rectified_at, closed_by,"
    " updated_at, detail"
)
# Overdue is stored by the sweep, and also computed in reads so that the API is right between sweeps.
_STATUS = "CASE WHEN p.status = 'open' AND p.deadline <= %(now)s THEN 'overdue' ELSE p.status END"
_SELECT = "SELECT " + ", ".join(f"p.{c.strip()}" for c in COLUMNS.split(",") if c.strip() != "status") + (
    f", {_STATUS} AS status FROM problems p"
)


class ProblemNotFound(LookupError):
    pass


def problem_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A problem as the API shows it (docs/problems.md); ``row["status"]`` is the effective status."""
    return {
        "id": row["id"],
        "site": row["site"],
        "device": row["device"],
        "kind": row["kind"],
        "status": row["status"],
        "opened_at": rfc3339(row["opened_at"]),
        "deadline": rfc3339(row["deadline"]),
        "rectified_at": rfc3339(row["rectified_at"]),
        "closed_by": row["closed_by"],
        "detail": {**row["detail"], "since": rfc3339(row["since"])},
    }


def lock_problem_list(conn: Conn) -> None:
    """Take the problem-list lock until the transaction ends (sweeps and hand actions take it)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _LOCK)


# --- conditions -------------------------------------------------------------------------------

_ALERT_CONDITIONS = """
SELECT id, site, device, kind, opened_at FROM alerts
WHERE state <> 'resolved' AND opened_at <= %(now)s
  AND (kind = ANY(%(kinds)s) OR (kind = 'camera_offline' AND opened_at <= %(offline_before)s))
"""

_UNTESTED_DETECTORS = """
WITH t AS (
    SELECT site, device, ts, ts - lag(ts) OVER (PARTITION BY site, device ORDER BY ts) AS gap
    FROM readings
    WHERE kind = 'smoke' AND status = 'test' AND ts >= %(month)s AND ts < %(now)s
)
SELECT d.site, d.id AS device,
       count(t.ts) FILTER (WHERE t.gap IS NULL OR t.gap >= %(merge)s)::int AS tests, max(t.ts) AS last_test
FROM devices d LEFT JOIN t ON t.site = d.site AND t.device = d.id
WHERE d.kind = 'smoke'
GROUP BY d.site, d.id
HAVING count(t.ts) FILTER (WHERE t.gap IS NULL OR t.gap >= %(merge)s) < %(required)s
"""


def alert_conditions(conn: Conn, at: datetime, camera_offline_after: timedelta) -> list[Condition]:
    """exit_blocked, detector_fault, detector_offline: an unresolved alert; camera_offline: one open
    longer than ``camera_offline_after``. Since: the alert's opening."""
    rows = conn.execute(
        _ALERT_CONDITIONS,
        {"now": at, "offline_before": at - camera_offline_after,
         "kinds": [k.value for k in ALERT_KINDS if k is not ProblemKind.CAMERA_OFFLINE]},
    ).fetchall()
    return [
        Condition(ProblemKey(r["site"], r["device"], ProblemKind(r["kind"])), r["opened_at"], {"alert_id": r["id"]})
        for r in rows
    ]


def untested_detectors(conn: Conn, at: datetime, tz: ZoneInfo) -> list[Condition]:
    """Smoke detectors with fewer than two tests since local midnight starting the month."""
    month = month_start(at, tz)
    rows = conn.execute(
        _UNTESTED_DETECTORS,
        {"month": month, "now": at, "merge": TEST_MERGE_WITHIN, "required": TESTS_PER_MONTH},
    ).fetchall()
    return [
        Condition(
            ProblemKey(r["site"], r["device"], ProblemKind.DETECTOR_UNTESTED),
            month,
            {"tests": r["tests"], "required": TESTS_PER_MONTH, "last_test": rfc3339(r["last_test"])},
        )
        for r in rows
    ]


# --- the sweep's reads and writes ---------------------------------------------------------------


def _open_problem(row: Mapping[str, Any]) -> OpenProblem:
    return OpenProblem(
        row["id"], ProblemKey(row["site"], row["device"], ProblemKind(row["kind"])), ProblemStatus(row["status"]),
        row["deadline"], row["clear_since"], row["by_hand"],
    )


def unrectified(conn: Conn) -> list[OpenProblem]:
    """The problems not rectified, as the rules take them."""
    return [_open_problem(r) for r in conn.execute(f"SELECT {COLUMNS} FROM problems WHERE status <> 'rectified'")]


def closed_by_hand(conn: Conn) -> dict[ProblemKey, datetime]:
    """For each key whose last problem an inspector closed by hand, when it was closed."""
    return {
        ProblemKey(r["site"], r["device"], ProblemKind(r["kind"])): r["rectified_at"]
        for r in conn.execute(
            "SELECT DISTINCT ON (site, coalesce(device, ''), kind) site, device, kind, rectified_at"
            " FROM problems WHERE closed_by IS NOT NULL AND status = 'rectified'"
            " ORDER BY site, coalesce(device, ''), kind, rectified_at DESC"
        )
    }


def add_history(conn: Conn, problem_id: int, at: datetime, action: str, status: str, by: str,
                note: str | None) -> None:
    """One problem_history row."""
    conn.execute(
        "INSERT INTO problem_history (problem_id, at, action, status, by, note) VALUES (%s, %s, %s, %s, %s, %s)",
        (problem_id, at, action, status, by, note),
    )


def apply_change(conn: Conn, change: Change, at: datetime) -> None:
    """Write one change the rules decided at ``at``, with its history row if a person would want to see it."""
    match change:
        case Open():
            row = conn.execute(
                "INSERT INTO problems (site, device, kind, status, opened_at, since, deadline, updated_at, detail)"
                " VALUES (%s, %s, %s, 'open', %s, %s, %s, %s, %s) RETURNING id",
                (change.key.site, change.key.device, change.key.kind.value, at, change.since, change.deadline, at,
                 Jsonb(dict(change.detail))),
            ).fetchone()
            assert row is not None
            add_history(conn, row["id"], at, "opened", "open", SYSTEM, None)
        case MarkOverdue():
            conn.execute("UPDATE problems SET status = 'overdue', updated_at = %s WHERE id = %s", (at, change.id))
            add_history(conn, change.id, at, "overdue", "overdue", SYSTEM, None)
        case Clearing():
            conn.execute("UPDATE problems SET clear_since = %s WHERE id = %s", (change.at, change.id))
        case Holding():
            conn.execute("UPDATE problems SET clear_since = NULL WHERE id = %s", (change.id,))
        case Rectify():
            conn.execute(
                "UPDATE problems SET status = 'rectified', rectified_at = %s, updated_at = %s WHERE id = %s",
                (at, at, change.id),
            )
            add_history(conn, change.id, at, "rectified", "rectified", SYSTEM,
                        f"condition clear since {rfc3339(change.clear_since)}")


# --- reads and hand actions' writes -------------------------------------------------------------


def list_problems(
    conn: Conn,
    now: datetime,
    *,
    site: str | None = None,
    status: ProblemStatus | None = None,
    kind: ProblemKind | None = None,
    city: str | None = None,
    county: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Rows (with the effective status), newest first, ids below ``before``; at most ``limit``."""
    return conn.execute(
        f"{_SELECT} JOIN sites s ON s.id = p.site"
        " WHERE (%(site)s::text IS NULL OR p.site = %(site)s) AND (%(kind)s::text IS NULL OR p.kind = %(kind)s)"
        " AND (%(city)s::text IS NULL OR s.city = %(city)s) AND (%(county)s::text IS NULL OR s.county = %(county)s)"
        f" AND (%(status)s::text IS NULL OR {_STATUS} = %(status)s)"
        " AND (%(before)s::bigint IS NULL OR p.id < %(before)s) ORDER BY p.id DESC LIMIT %(limit)s",
        {"now": now, "site": site, "kind": kind, "city": city, "county": county, "status": status,
         "before": before, "limit": limit},
    ).fetchall()


def problem_row(conn: Conn, problem_id: int, now: datetime) -> Mapping[str, Any]:
    """One problem's row with its effective status at ``now``; ProblemNotFound if there is none."""
    row = conn.execute(f"{_SELECT} WHERE p.id = %(id)s", {"id": problem_id, "now": now}).fetchone()
    if row is None:
        raise ProblemNotFound(f"problem {problem_id} not found")
    return row


def site_of(conn: Conn, problem_id: int) -> str:
    """The site of a problem; ProblemNotFound if there is none."""
    row = conn.execute("SELECT site FROM problems WHERE id = %s", (problem_id,)).fetchone()
    if row is None:
        raise ProblemNotFound(f"problem {problem_id} not found")
    site: str = row["site"]
    return site


def get(conn: Conn, problem_id: int, now: datetime) -> dict[str, Any]:
    """One problem with its history, oldest first."""
    row = problem_row(conn, problem_id, now)
    history = conn.execute(
        "SELECT at, action, status, by, note FROM problem_history WHERE problem_id = %s ORDER BY id", (problem_id,)
    ).fetchall()
    return {
        **problem_json(row),
        "history": [
            {"at": rfc3339(h["at"]), "action": h["action"], "status": h["status"], "by": h["by"], "note": h["note"]}
            for h in history
        ],
    }


def open_alert(conn: Conn, problem: Mapping[str, Any]) -> int | None:
    """The unresolved alert behind an alert-kind problem (same site, device and kind), if any."""
    if ProblemKind(problem["kind"]) not in ALERT_KINDS:
        return None
    found = conn.execute(
        "SELECT id FROM alerts WHERE site = %s AND coalesce(device, '') = coalesce(%s, '') AND kind = %s"
        " AND state <> 'resolved' ORDER BY id DESC LIMIT 1",
        (problem["site"], problem["device"], problem["kind"]),
    ).fetchone()
    return None if found is None else int(found["id"])


def mark_closed(conn: Conn, problem_id: int, at: datetime, by: str) -> None:
    """Rectified by hand at ``at``: ``closed_by`` is who."""
    conn.execute(
        "UPDATE problems SET status = 'rectified', rectified_at = %s, closed_by = %s, by_hand = false,"
        " clear_since = NULL, updated_at = %s WHERE id = %s",
        (at, by, at, problem_id),
    )


def mark_reopened(conn: Conn, problem_id: int, status: ProblemStatus, at: datetime) -> None:
    """Back to ``status`` (open or overdue) at ``at``, only closed by hand from then on; UniqueViolation if
    another problem of the same key is not rectified."""
    conn.execute(
        "UPDATE problems SET status = %s, rectified_at = NULL, closed_by = NULL, by_hand = true,"
        " clear_since = NULL, updated_at = %s WHERE id = %s",
        (status.value, at, problem_id),
    )
