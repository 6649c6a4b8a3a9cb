"""API tokens: roles, hashing, creation and lookup (DESIGN sections 6 and 7)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gateway.store.db import Conn

TOKEN_PREFIX = "sg_"  # noqa: S105 - a prefix that makes leaked tokens easy to spot, not a secret


class Role(StrEnum):
    FIRE_BRIGADE = "fire_brigade"
    INSPECTOR = "inspector"
    INSTITUTION = "institution"
    ADMIN = "admin"


# DESIGN section 4: acknowledge and resolve are for fire brigades and admins.
MAY_ACT_ON_ALERTS = frozenset({Role.FIRE_BRIGADE, Role.ADMIN})


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    site: str | None = None  # set for (and only for) institution tokens

    def sees(self, site: str) -> bool:
        return self.role is not Role.INSTITUTION or self.site == site


def hash_token(token: str) -> bytes:
    # Tokens are 256-bit random strings, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(
    conn: Conn, *, role: Role, name: str, site: str | None = None, expires_at: datetime | None = None
) -> str:
    """Store a new token's hash and return the token (shown once, never stored)."""
    if (role is Role.INSTITUTION) != (site is not None):
        raise ValueError("an institution token needs --site, and only an institution token takes one")
    if site is not None and conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is None:
        raise ValueError(f"site {site!r} is not registered")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ValueError(f"the expiry {expires_at.isoformat()} has already passed")
    token = new_token()
    conn.execute(
        "INSERT INTO api_tokens (name, role, site, token_hash, expires_at) VALUES (%s, %s, %s, %s, %s)",
        (name, role.value, site, hash_token(token), expires_at),
    )
    conn.commit()
    return token


def list_tokens(conn: Conn) -> list[dict[str, Any]]:
    """Every token's id, holder, role, site and life (never its hash), newest first."""
    return conn.execute(
        "SELECT id, name, role, site, created_at, expires_at, revoked_at,"
        " CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired'"
        " ELSE 'active' END AS status FROM api_tokens ORDER BY id DESC"
    ).fetchall()


def revoke_token(conn: Conn, token_id: int) -> bool:
    """Revoke at once (the next request with it is refused); False if there is no such live token."""
    row = conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
                       (token_id,)).fetchone()
    conn.commit()
    return row is not None


def authenticate(conn: Conn, token: str, bootstrap: str | None) -> Principal | None:
    if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
        return Principal("bootstrap", Role.ADMIN)
    row = conn.execute(
        "SELECT name, role, site FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())", (hash_token(token),)
    ).fetchone()
    if row is None:
        return None
    return Principal(row["name"], Role(row["role"]), row["site"])
