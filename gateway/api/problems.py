"""The problem list (docs/problems.md): list, one problem with its history, and inspectors' hand actions."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, status

from gateway.api.deps import ConnDep, PrincipalDep, check_site
from gateway.api.errors import CodedError
from gateway.api.inputs import OptionalText, RowId, SiteFilter
from gateway.api.routes import Limit, Note, decode_int_cursor, page
from gateway.auth import Principal, Role
from gateway.problems import actions as problem_actions
from gateway.problems.rules import ProblemKind, ProblemStatus
from gateway.store import problems as problem_store
from gateway.store.db import Conn, from_epoch

router = APIRouter(prefix="/api/v1", tags=["problems"])

# Issue 6: inspectors keep the ledger; admins may do everything.
MAY_ACT_ON_PROBLEMS = frozenset({Role.INSPECTOR, Role.ADMIN})


@router.get("/problems")
def list_problems(
    conn: ConnDep,
    principal: PrincipalDep,
    site: SiteFilter = None,
    status: ProblemStatus | None = None,
    kind: ProblemKind | None = None,
    city: OptionalText = None,
    county: OptionalText = None,
    limit: Limit = 100,
    cursor: OptionalText = None,
) -> dict[str, Any]:
    """Problems, newest first; ``status`` overdue means open past its deadline."""
    if site is not None:
        check_site(principal, site)
    rows = problem_store.list_problems(
        conn, _now(), site=site or principal.site, status=status, kind=kind, city=city, county=county,
        before=decode_int_cursor(cursor), limit=limit + 1,
    )
    return page(rows, limit, "id", problem_store.problem_json)


def _now() -> datetime:
    return from_epoch(time.time())


def _visible(conn: Conn, principal: Principal, problem_id: int) -> dict[str, Any]:
    try:
        problem = problem_store.get(conn, problem_id, _now())
    except problem_store.ProblemNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if not principal.sees(problem["site"]):  # do not reveal that other sites' problems exist
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"problem {problem_id} not found")
    return problem


@router.get("/problems/{problem_id}")
def get_problem(problem_id: RowId, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    """One problem with its history (oldest first: at, action, status, by, note)."""
    return _visible(conn, principal, problem_id)


def _act(
    step: Callable[[Conn, int, datetime, str, str | None], None],
    problem_id: int,
    conn: Conn,
    principal: Principal,
    body: Note | None,
) -> dict[str, Any]:
    _visible(conn, principal, problem_id)
    if principal.role not in MAY_ACT_ON_PROBLEMS:
        raise CodedError(status.HTTP_403_FORBIDDEN, "forbidden", f"role {principal.role} may not change problems")
    try:
        step(conn, problem_id, _now(), principal.name, body.note if body else None)
    except problem_actions.ProblemConflict as exc:
        raise CodedError(status.HTTP_409_CONFLICT, exc.code, str(exc), **exc.params) from None
    except ValueError as exc:  # a note without text
        raise CodedError(status.HTTP_400_BAD_REQUEST, "note_required", str(exc)) from None
    return problem_store.get(conn, problem_id, _now())


@router.post("/problems/{problem_id}/note")
def note_problem(
    problem_id: RowId, conn: ConnDep, principal: PrincipalDep, body: Annotated[Note | None, Body()] = None
) -> dict[str, Any]:
    """Add a note (``{"note": "..."}``, required) to the problem's history."""
    return _act(problem_actions.add_note, problem_id, conn, principal, body)


@router.post("/problems/{problem_id}/close")
def close_problem(
    problem_id: RowId, conn: ConnDep, principal: PrincipalDep, body: Annotated[Note | None, Body()] = None
) -> dict[str, Any]:
    """Rectified by hand (``closed_by`` is the token's name); 409 when already rectified."""
    return _act(problem_actions.close, problem_id, conn, principal, body)


@router.post("/problems/{problem_id}/reopen")
def reopen_problem(
    problem_id: RowId, conn: ConnDep, principal: PrincipalDep, body: Annotated[Note | None, Body()] = None
) -> dict[str, Any]:
    """Back to open (or overdue); 409 unless rectified, or when the same problem is open again."""
    return _act(problem_actions.reopen, problem_id, conn, principal, body)
