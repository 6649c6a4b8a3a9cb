"""Spot-check sample by the plan's rules (issue 6): JSON, or the inspection list as CSV."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from gateway.api.deps import ConnDep, require
from gateway.api.inputs import OptionalText
from gateway.auth import Role
from gateway.inspection.registry import sample_from_db
from gateway.inspection.sampler import Level, SamplingError, inspection_csv

router = APIRouter(prefix="/api/v1")


@router.get("/inspections/sample", dependencies=[require(Role.INSPECTOR, Role.ADMIN)], response_model=None)
def inspection_sample(
    conn: ConnDep,
    level: Level,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)],
    city: OptionalText = None,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | Response:
    try:
        sample = sample_from_db(conn, level=level, city=city, seed=seed)
    except SamplingError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    if format == "csv":
        return Response(inspection_csv(sample), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="inspection-{level}-{seed}.csv"'})
    result: dict[str, Any] = sample.json()
    return result
