"""The problem list's sweep and hand actions, each in one transaction under the problem-list lock.

The sweep runs the condition queries (one per group of kinds: unresolved alerts, detector tests,
compliance), then under the problem-list lock loads the unrectified problems, asks
:func:`gateway.problems.rules.evaluate` what to change and writes it, with a history row for every
change a person would want to see (opened, overdue, rectified). Hand actions (note, close,
reopen) take the same lock, so a sweep and an inspector never step on each other. The SQL is in
:mod:`gateway.store.problems`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.errors import UniqueViolation

from gateway.compliance.verdicts import compliance_by_site
from gateway.config import Settings
from gateway.problems.rules import (
    Condition,
    MarkOverdue,
    Open,
    ProblemKey,
    ProblemKind,
    ProblemStatus,
    Rectify,
    evaluate,
)
from gateway.store import problems as store
from gateway.store.db import Conn, from_epoch

FAST_KINDS = frozenset({*store.ALERT_KINDS, ProblemKind.DETECTOR_UNTESTED})


class ProblemConflict(Exception):
    """A hand action that the problem's status does not allow (HTTP 409); ``code`` names why
    (docs/api.md), ``params`` what a translation needs."""

    def __init__(self, message: str, code: str = "conflict", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


def non_compliant_sites(conn: Conn, at: datetime, settings: Settings) -> list[Condition]:
    """Sites failing the real-time interface requirement (DESIGN section 5) over [at - 1 day, at)."""
    start = at - timedelta(days=1)
    figures = compliance_by_site(conn, start, at, thresholds=settings.compliance, heartbeats=settings.liveness)
    return [
        Condition(ProblemKey(site, None, ProblemKind.NOT_COMPLIANT), start,
                  {"reasons": list(c.verdict.reasons), "reason_codes": [dict(r) for r in c.verdict.codes]})
        for site, c in sorted(figures.items())
        if c.verdict.compliant is False  # None: not reporting yet, no verdict
    ]


# --- the sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepResult:
    opened: int = 0
    overdue: int = 0
    rectified: int = 0


def sweep(conn: Conn, now: float, settings: Settings, *, compliance: bool) -> SweepResult:
    """Bring the problem list in line with the conditions at ``now``; ``compliance`` also evaluates
    not_compliant (a day of heartbeats of every site, so the caller does it less often)."""
    at = from_epoch(now)
    with conn.transaction():
        conditions = store.alert_conditions(conn, at, timedelta(seconds=settings.problems.camera_offline_after_s))
        conditions += store.untested_detectors(conn, at, ZoneInfo(settings.timezone))
        evaluated = set(FAST_KINDS)
        if compliance:
            conditions += non_compliant_sites(conn, at, settings)
            evaluated.add(ProblemKind.NOT_COMPLIANT)
        store.lock_problem_list(conn)
        problems = store.unrectified(conn)
        closed = store.closed_by_hand(conn)
        changes = evaluate(
            conditions, problems, closed, now=at, evaluated=evaluated,
            deadline_days=settings.problems.deadline_days,
            clear_after=timedelta(seconds=settings.problems.clear_after_s),
        )
        for change in changes:
            store.apply_change(conn, change, at)
    return SweepResult(
        opened=sum(isinstance(c, Open) for c in changes),
        overdue=sum(isinstance(c, MarkOverdue) for c in changes),
        rectified=sum(isinstance(c, Rectify) for c in changes),
    )


# --- hand actions -------------------------------------------------------------------------------


def add_note(conn: Conn, problem_id: int, at: datetime, by: str, note: str | None) -> None:
    with conn.transaction():
        store.lock_problem_list(conn)
        row = store.problem_row(conn, problem_id, at)
        if not note:
            raise ValueError("a note needs text: {\"note\": \"...\"}")
        store.add_history(conn, problem_id, at, "note", row["status"], by, note)


def close(conn: Conn, problem_id: int, at: datetime, by: str, note: str | None) -> None:
    """Rectified by hand: ``closed_by`` is who. While the same condition lasts, no new problem opens."""
    with conn.transaction():
        store.lock_problem_list(conn)
        row = store.problem_row(conn, problem_id, at)
        if row["status"] == ProblemStatus.RECTIFIED:
            raise ProblemConflict(f"problem {problem_id} is already rectified", "already_rectified")
        alert = store.open_alert(conn, row)
        if alert is not None and not (note and note.strip()):
            # Closing while the alert that raised it is still open is allowed, but only with a written
            # reason (e.g. checked on site, the sensor is wrong): the history says why.
            raise ProblemConflict(
                f"problem {problem_id}: its alert {alert} is still open; closing it needs a note saying why",
                "alert_still_open", alert_id=alert)
        store.mark_closed(conn, problem_id, at, by)
        store.add_history(conn, problem_id, at, "closed", "rectified", by, note)


def reopen(conn: Conn, problem_id: int, at: datetime, by: str, note: str | None) -> None:
    """Back to open (overdue if past its deadline, which stays); only closed by hand from then on."""
    with conn.transaction():
        store.lock_problem_list(conn)
        row = store.problem_row(conn, problem_id, at)
        if row["status"] != ProblemStatus.RECTIFIED:
            raise ProblemConflict(f"problem {problem_id} is not rectified", "not_rectified")
        status = ProblemStatus.OVERDUE if row["deadline"] <= at else ProblemStatus.OPEN
        try:
            with conn.transaction():
                store.mark_reopened(conn, problem_id, status, at)
        except UniqueViolation:
            where = "/".join(filter(None, (row["site"], row["device"])))
            raise ProblemConflict(f"another {row['kind']} problem of {where} is not rectified",
                                  "duplicate_open") from None
        store.add_history(conn, problem_id, at, "reopened", status.value, by, note)
