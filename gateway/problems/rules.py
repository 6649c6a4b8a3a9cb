"""The problem list's rules as pure functions (issue 6 point 2; docs/problems.md).

Input: the conditions that hold now (one per (site, device, kind), with the time it has held
since), the problems not yet rectified, and when each condition was last closed by hand.
Output: the changes to make. No clock, no database: ``now`` is an argument.

- A condition with no unrectified problem opens one, deadline = now + the kind's days, unless an
  inspector closed that key's last problem by hand after the condition began (closing by hand
  overrides the sensors until the condition clears and starts again).
- An open problem past its deadline becomes overdue.
- A problem whose condition no longer holds is rectified automatically once the condition has
  stayed clear for ``clear_after``; if it holds again before that, the clock starts over. A problem
  reopened by hand is not rectified automatically (the inspector overrides the sensors).
- Only kinds in ``evaluated`` are judged present or absent: the compliance kind is evaluated less
  often than the others, and its problems are left alone between evaluations.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo


class ProblemKind(StrEnum):
    EXIT_BLOCKED = "exit_blocked"
    DETECTOR_FAULT = "detector_fault"
    DETECTOR_OFFLINE = "detector_offline"
    CAMERA_OFFLINE = "camera_offline"
    NOT_COMPLIANT = "not_compliant"
    DETECTOR_UNTESTED = "detector_untested"


class ProblemStatus(StrEnum):
    OPEN = "open"
    OVERDUE = "overdue"
    RECTIFIED = "rectified"


class ProblemKey(NamedTuple):
    site: str
    device: str | None  # None for site-level problems (not_compliant)
    kind: ProblemKind


@dataclass(frozen=True, slots=True)
class Condition:
    """A hazard that holds now, and since when."""

    key: ProblemKey
    since: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OpenProblem:
    """A problem not yet rectified (status open or overdue)."""

    id: int
    key: ProblemKey
    status: ProblemStatus
    deadline: datetime
    clear_since: datetime | None = None  # condition seen clear since then; None while it holds
    by_hand: bool = False  # reopened by hand: only closed by hand


@dataclass(frozen=True, slots=True)
class Open:
    key: ProblemKey
    since: datetime
    deadline: datetime
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MarkOverdue:
    id: int


@dataclass(frozen=True, slots=True)
class Clearing:
    """The condition was seen clear for the first time at ``at`` (no history entry)."""

    id: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Holding:
    """The condition holds again before the clear period ran out (no history entry)."""

    id: int


@dataclass(frozen=True, slots=True)
class Rectify:
    id: int
    clear_since: datetime


Change = Open | MarkOverdue | Clearing | Holding | Rectify


def deadline_for(kind: ProblemKind, opened_at: datetime, deadline_days: Mapping[str, int]) -> datetime:
    return opened_at + timedelta(days=deadline_days[kind.value])


def month_start(now: datetime, tz: ZoneInfo) -> datetime:
    """Local midnight starting ``now``'s month in ``tz`` (an aware datetime)."""
    local = now.astimezone(tz)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _order(item: tuple[ProblemKey, object]) -> tuple[str, str, str]:
    key = item[0]
    return key.site, key.device or "", key.kind.value


def evaluate(
    conditions: Iterable[Condition],
    problems: Iterable[OpenProblem],
    closed_by_hand: Mapping[ProblemKey, datetime],
    *,
    now: datetime,
    evaluated: Collection[ProblemKind],
    deadline_days: Mapping[str, int],
    clear_after: timedelta,
) -> list[Change]:
    """The changes that bring the problem list in line with ``conditions`` at ``now``."""
    holding = {c.key: c for c in conditions if c.key.kind in evaluated}
    current = {p.key: p for p in problems}
    changes: list[Change] = []
    for key, condition in sorted(holding.items(), key=_order):
        if key in current:
            continue
        closed_at = closed_by_hand.get(key)
        if closed_at is not None and condition.since <= closed_at:
            continue
        changes.append(Open(key, condition.since, deadline_for(key.kind, now, deadline_days), condition.detail))
    for key, problem in sorted(current.items(), key=_order):
        if key.kind in evaluated:
            if key in holding:
                if problem.clear_since is not None:
                    changes.append(Holding(problem.id))
            elif not problem.by_hand:
                clear_since = problem.clear_since or now
                if now - clear_since >= clear_after:
                    changes.append(Rectify(problem.id, clear_since))
                    continue
                if problem.clear_since is None:
                    changes.append(Clearing(problem.id, now))
        if problem.status is ProblemStatus.OPEN and problem.deadline <= now:
            changes.append(MarkOverdue(problem.id))
    return changes
