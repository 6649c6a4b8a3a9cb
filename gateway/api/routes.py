"""REST routes of DESIGN section 7 (sites, devices, alerts, dead letters)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import ConnDep, PrincipalDep, SettingsDep, check_site, require
from gateway.api.errors import CodedError
from gateway.api.inputs import MAX_BIGINT, NO_NUL_PATTERN, Instant, OptionalText, PgText, RowId, SiteFilter, SiteId
from gateway.api.live import AlertHub, EventStreamResponse
from gateway.auth import MAY_ACT_ON_ALERTS, Principal, Role, list_tokens, revoke_token
from gateway.broker_config import ReservedSiteId, check_site_id
from gateway.rules import engine
from gateway.store import alerts as alert_store
from gateway.store import dead_letters as dead_letter_store
from gateway.store import devices as device_store
from gateway.store import notify as notify_store
from gateway.store import sites as site_store
from gateway.store.db import Conn, from_epoch, rfc3339
from gateway.store.sites import SiteFields, SiteRecord, purge_site, upsert_sites
from protocol import AlertKind, AlertState, Severity

router = APIRouter(prefix="/api/v1")

Limit = Annotated[int, Query(ge=1, le=1000)]
_MAX_ID = MAX_BIGINT


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: PgText | None = Field(None, max_length=2000)


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor") from None
    if "\x00" in value:  # the cursor's value goes to PostgreSQL as text
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor")
    return value


def decode_int_cursor(cursor: str | None) -> int | None:
    value = decode_cursor(cursor)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_ID:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor")
    return int(value)


def page(
    rows: Sequence[dict[str, Any]], limit: int, key: str, render: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """``{"items": [...], "next_cursor": ...}`` from ``limit + 1`` fetched rows."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [render(r) for r in rows], "next_cursor": encode_cursor(rows[-1][key]) if more else None}


def _site_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "city": row["city"], "county": row["county"],
        "category": row["category"], "address": row["address"], "cameras_required": row["cameras_required"],
        "contact_name": row.get("contact_name", ""), "contact_phone": row.get("contact_phone", ""),
        "agent": None if row.get("online") is None else {
            "online": row["online"], "boot": row["boot"], "agent_version": row["agent_version"],
            "heartbeat_s": row["heartbeat_s"], "status_at": rfc3339(row["status_at"]),
        },
        "open_alerts": row.get("open_alerts", 0),
        "created_at": rfc3339(row["created_at"]), "updated_at": rfc3339(row["updated_at"]),
    }


@router.get("/me")
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    """The token's name, role and (for institutions) site: what a console shows and allows."""
    return {"name": principal.name, "role": principal.role.value, "site": principal.site}


@router.get("/sites")
def list_sites(
    conn: ConnDep,
    principal: PrincipalDep,
    city: OptionalText = None,
    county: OptionalText = None,
    q: Annotated[str | None, Query(max_length=100, pattern=NO_NUL_PATTERN, description="substring of id or name")]
    = None,
    limit: Limit = 100,
    cursor: OptionalText = None,
) -> dict[str, Any]:
    after = decode_cursor(cursor)
    rows = site_store.list_sites(conn, own=principal.site, city=city, county=county, q=q, after=after,
                                 limit=limit + 1)
    return page(rows, limit, "id", _site_json)


def _get_site(conn: Conn, site: str) -> dict[str, Any]:
    row = site_store.get_site(conn, site)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site!r} is not registered")
    return row


@router.get("/sites/{site}")
def get_site(site: SiteId, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    check_site(principal, site)
    return _site_json(_get_site(conn, site))


@router.put("/sites/{site}", dependencies=[require(Role.ADMIN)])
def put_site(site: SiteId, body: SiteFields, conn: ConnDep, settings: SettingsDep) -> dict[str, Any]:
    try:
        check_site_id(settings, site)  # a service account's name or the gateway's client id (issue 15)
    except ReservedSiteId as exc:
        raise HTTPException(422, str(exc)) from None  # the name of 422 differs across Starlette versions
    upsert_sites(conn, [SiteRecord(id=site, **body.model_dump())])
    conn.commit()
    return _site_json(_get_site(conn, site))


@router.delete("/sites/{site}", dependencies=[require(Role.ADMIN)])
def delete_site(site: SiteId, conn: ConnDep) -> dict[str, Any]:
    """Delete a site and everything recorded of it (for test and scenario sites; see docs/api.md)."""
    deleted = purge_site(conn, site)
    if deleted is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site!r} is not registered")
    conn.commit()
    return {"site": site, "deleted": deleted}


@router.get("/tokens", dependencies=[require(Role.ADMIN)])
def get_tokens(conn: ConnDep) -> dict[str, Any]:
    """Every API token's holder, role, site and life; never the token or its hash."""
    return {"items": [{**row, **{k: rfc3339(row[k]) for k in ("created_at", "expires_at", "revoked_at")}}
                      for row in list_tokens(conn)]}


@router.delete("/tokens/{token_id}", dependencies=[require(Role.ADMIN)])
def delete_token(token_id: Annotated[int, Path(ge=1, le=_MAX_ID)], conn: ConnDep) -> dict[str, Any]:
    """Revoke a token at once; its row stays (who held it, when it was revoked)."""
    if not revoke_token(conn, token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live token {token_id}")
    return {"id": token_id, "status": "revoked"}


@router.get("/sites/{site}/devices")
def list_devices(site: SiteId, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    check_site(principal, site)
    _get_site(conn, site)
    rows = device_store.list_devices(conn, site, from_epoch(time.time()))
    items = [
        {
            "id": r["id"], "kind": r["kind"], "name": r["name"], "location": r["location"],
            "declared": r["declared"], "online": r["online"], "last_seen": rfc3339(r["last_seen"]),
            "status": r["status"], "state": r["reading"], "latest_snapshot_at": rfc3339(r["snapshot_at"]),
        }
        for r in rows
    ]
    return {"items": items, "next_cursor": None}


@router.get("/alerts")
def list_alerts(
    conn: ConnDep,
    principal: PrincipalDep,
    site: SiteFilter = None,
    state: AlertState | None = None,
    kind: AlertKind | None = None,
    severity: Severity | None = None,
    since: Annotated[Instant | None, Query(description="RFC 3339; alerts updated at or after")] = None,
    limit: Limit = 100,
    cursor: OptionalText = None,
) -> dict[str, Any]:
    if site is not None:
        check_site(principal, site)
    site = site or principal.site
    before = decode_int_cursor(cursor)
    rows = alert_store.list_alerts(conn, site=site, state=state, kind=kind, severity=severity, since=since,
                                   before=before, limit=limit + 1)
    return page(rows, limit, "id", alert_store.alert_json)


def _visible_alert(conn: Conn, principal: Principal, alert_id: int) -> dict[str, Any]:
    try:
        alert = alert_store.get(conn, alert_id)
    except alert_store.AlertNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if not principal.sees(alert["site"]):  # do not reveal other sites' alerts exist
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} not found")
    return alert


@router.get("/alerts/stream", response_class=EventStreamResponse, status_code=200)  # its __init__ takes none
async def alert_stream(
    request: Request,
    principal: PrincipalDep,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_BIGINT)] = None,
    since_id: Annotated[
        int | None, Query(ge=0, le=MAX_BIGINT, description="as Last-Event-ID, for clients that cannot set it")
    ] = None,
) -> EventStreamResponse:
    """Server-Sent Events: ``event: alert``, ``id: <change id>``, ``data: <alert JSON>``."""
    hub: AlertHub = request.app.state.hub
    resume = last_event_id if last_event_id is not None else since_id
    return EventStreamResponse(
        hub, hub.open(principal), resume, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/alerts/{alert_id}")
def get_alert(alert_id: RowId, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    return _visible_alert(conn, principal, alert_id)


@router.get("/alerts/{alert_id}/notifications")
def alert_notifications(alert_id: int, conn: ConnDep, principal: PrincipalDep) -> dict[str, Any]:
    """Who was told when: the notifier's deliveries of this alert, each with every attempt."""
    _visible_alert(conn, principal, alert_id)
    return {"items": notify_store.deliveries(conn, alert_id)}


def _act(step: alert_store.Step, alert_id: int, conn: Conn, principal: Principal, body: Note | None) -> dict[str, Any]:
    _visible_alert(conn, principal, alert_id)
    if principal.role not in MAY_ACT_ON_ALERTS:
        raise CodedError(status.HTTP_403_FORBIDDEN, "forbidden", f"role {principal.role} may not change alerts")
    try:
        alert_store.operator_step(conn, alert_id, step, from_epoch(time.time()), principal.name,
                                  body.note if body else None)
    except alert_store.AlertConflict as exc:
        raise CodedError(status.HTTP_409_CONFLICT, exc.code, str(exc)) from None
    return alert_store.get(conn, alert_id)


@router.post("/alerts/{alert_id}/ack")
def ack_alert(
    alert_id: RowId, conn: ConnDep, principal: PrincipalDep, body: Annotated[Note | None, Body()] = None
) -> dict[str, Any]:
    return _act(engine.acknowledge, alert_id, conn, principal, body)


@router.post("/alerts/{alert_id}/resolve")
def resolve_alert(
    alert_id: RowId, conn: ConnDep, principal: PrincipalDep, body: Annotated[Note | None, Body()] = None
) -> dict[str, Any]:
    return _act(engine.resolve_by_hand, alert_id, conn, principal, body)


@router.get("/dead-letters", dependencies=[require(Role.ADMIN)])
def list_dead_letters(
    conn: ConnDep, reason: OptionalText = None, limit: Limit = 100, cursor: OptionalText = None
) -> dict[str, Any]:
    before = decode_int_cursor(cursor)
    rows = dead_letter_store.list_dead_letters(conn, code=reason, before=before, limit=limit + 1)
    return page(rows, limit, "id", lambda r: {
        "id": r["id"], "received_at": rfc3339(r["received_at"]), "topic": r["topic"],
        "reason": f"{r['code']}: {r['reason']}", "code": r["code"],
        "payload_excerpt": r["payload_excerpt"], "payload_size": r["payload_size"],
    })
