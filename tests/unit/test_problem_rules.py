"""The problem list's pure rules (gateway/problems/rules.py): no clock, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.config import DEFAULT_PROBLEM_DEADLINE_DAYS
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
    evaluate,
    month_start,
)

T0 = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
EXIT = ProblemKey("s1", "exit-1", ProblemKind.EXIT_BLOCKED)
SITE = ProblemKey("s1", None, ProblemKind.NOT_COMPLIANT)
ALL = frozenset(ProblemKind)


def run(
    conditions: list[Condition],
    problems: list[OpenProblem],
    closed: dict[ProblemKey, datetime] | None = None,
    *,
    now: datetime = T0,
    evaluated: frozenset[ProblemKind] = ALL,
) -> list[Change]:
    return evaluate(conditions, problems, closed or {}, now=now, evaluated=evaluated,
                    deadline_days=DEFAULT_PROBLEM_DEADLINE_DAYS, clear_after=HOUR)


def problem(key: ProblemKey = EXIT, *, status: ProblemStatus = ProblemStatus.OPEN, deadline: datetime = T0 + HOUR,
            clear_since: datetime | None = None, by_hand: bool = False, id_: int = 7) -> OpenProblem:
    return OpenProblem(id_, key, status, deadline, clear_since, by_hand)


def test_a_new_condition_opens_a_problem_with_the_kinds_deadline() -> None:
    since = T0 - timedelta(minutes=5)
    changes = run([Condition(EXIT, since, {"alert_id": 3})], [])
    assert changes == [Open(EXIT, since, T0 + timedelta(days=1), {"alert_id": 3})]


@pytest.mark.parametrize(("kind", "days"), sorted(DEFAULT_PROBLEM_DEADLINE_DAYS.items()))
def test_deadline_per_kind(kind: str, days: int) -> None:
    key = ProblemKey("s1", None if kind == "not_compliant" else "d1", ProblemKind(kind))
    (change,) = run([Condition(key, T0)], [])
    assert isinstance(change, Open)
    assert change.deadline == T0 + timedelta(days=days)


def test_one_problem_per_key_while_the_condition_holds() -> None:
    assert run([Condition(EXIT, T0 - HOUR)], [problem()]) == []


def test_site_level_and_device_problems_together_sorted_and_distinct() -> None:
    other = ProblemKey("s0", "smoke-1", ProblemKind.DETECTOR_FAULT)
    changes = run([Condition(SITE, T0), Condition(other, T0), Condition(EXIT, T0)], [])
    assert [c.key for c in changes if isinstance(c, Open)] == [other, SITE, EXIT]  # site-level first


def test_open_past_deadline_becomes_overdue_once() -> None:
    assert run([Condition(EXIT, T0)], [problem(deadline=T0)]) == [MarkOverdue(7)]
    assert run([Condition(EXIT, T0)], [problem(deadline=T0, status=ProblemStatus.OVERDUE)]) == []
    assert run([Condition(EXIT, T0)], [problem(deadline=T0 + timedelta(microseconds=1))]) == []


def test_clear_condition_starts_the_clear_clock_then_rectifies_after_the_period() -> None:
    assert run([], [problem()]) == [Clearing(7, T0)]
    started = T0 - HOUR + timedelta(seconds=1)
    assert run([], [problem(clear_since=started)]) == []
    assert run([], [problem(clear_since=T0 - HOUR)]) == [Rectify(7, T0 - HOUR)]


def test_condition_back_before_the_period_resets_the_clock() -> None:
    assert run([Condition(EXIT, T0)], [problem(clear_since=T0 - timedelta(minutes=30))]) == [Holding(7)]


def test_zero_clear_period_rectifies_at_once() -> None:
    changes = evaluate([], [problem()], {}, now=T0, evaluated=ALL, deadline_days=DEFAULT_PROBLEM_DEADLINE_DAYS,
                       clear_after=timedelta(0))
    assert changes == [Rectify(7, T0)]


def test_rectified_overdue_problem_is_not_also_marked_overdue() -> None:
    overdue = problem(deadline=T0 - HOUR, clear_since=T0 - 2 * HOUR)
    assert run([], [overdue]) == [Rectify(7, T0 - 2 * HOUR)]


def test_clearing_and_overdue_in_one_sweep() -> None:
    assert run([], [problem(deadline=T0)]) == [Clearing(7, T0), MarkOverdue(7)]


def test_reopened_by_hand_is_not_rectified_automatically_but_still_goes_overdue() -> None:
    assert run([], [problem(by_hand=True, clear_since=None)]) == []
    assert run([], [problem(by_hand=True, deadline=T0 - HOUR)]) == [MarkOverdue(7)]


def test_kinds_not_evaluated_are_left_alone_except_overdue() -> None:
    fast = frozenset(ProblemKind) - {ProblemKind.NOT_COMPLIANT}
    site_problem = problem(SITE)
    assert run([], [site_problem], evaluated=fast) == []
    assert run([], [problem(SITE, deadline=T0)], evaluated=fast) == [MarkOverdue(7)]
    assert run([Condition(SITE, T0)], [], evaluated=fast) == []  # a stale condition is ignored too


def test_closed_by_hand_holds_back_the_same_condition_but_not_a_new_one() -> None:
    closed_at = T0 - HOUR
    assert run([Condition(EXIT, T0 - 2 * HOUR)], [], {EXIT: closed_at}) == []
    assert run([Condition(EXIT, closed_at)], [], {EXIT: closed_at}) == []
    later = closed_at + timedelta(seconds=1)
    assert run([Condition(EXIT, later)], [], {EXIT: closed_at}) == [
        Open(EXIT, later, T0 + timedelta(days=1), {})
    ]


def test_month_start_is_local_midnight() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    # 2025-03-31 20:00 UTC is already 1 April in Shanghai.
    start = month_start(datetime(2025, 3, 31, 20, 0, tzinfo=UTC), shanghai)
    assert start == datetime(2025, 4, 1, tzinfo=shanghai)
    assert start.astimezone(UTC) == datetime(2025, 3, 31, 16, 0, tzinfo=UTC)
    assert month_start(datetime(2025, 3, 31, 15, 59, tzinfo=UTC), shanghai) == datetime(2025, 3, 1, tzinfo=shanghai)
