"""Snapshot route: the latest JPEG an exit camera sent (``sg/v1/{site}/{device}/snapshot``)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response

from gateway.api.deps import ConnDep, PrincipalDep, check_site
from gateway.api.inputs import DeviceId, SiteId
from gateway.store import snapshots as snapshot_store
from gateway.store.db import rfc3339

router = APIRouter(prefix="/api/v1", tags=["snapshots"])


@router.get(
    "/sites/{site}/devices/{device}/snapshot",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The latest JPEG; `X-Snapshot-At` says when it arrived"},
        404: {"description": "Unknown site or device, or no snapshot yet"},
    },
)
def latest_snapshot(site: SiteId, device: DeviceId, conn: ConnDep, principal: PrincipalDep) -> Response:
    """The device's latest snapshot (``image/jpeg``, not cached), with ``X-Snapshot-At: <RFC 3339>``."""
    check_site(principal, site)
    row = snapshot_store.latest_snapshot(conn, site, device)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no snapshot of device {device!r} at site {site!r}")
    return Response(
        content=bytes(row["jpeg"]),
        media_type="image/jpeg",
        headers={"Cache-Control": "no-store", "X-Snapshot-At": rfc3339(row["received_at"]) or ""},
    )
