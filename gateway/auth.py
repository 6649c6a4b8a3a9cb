"""API tokens: roles, hashing, creation and lookup (DESIGN sections 6 and 7)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gateway.store import tokens
from gateway.store.db import Conn
from gateway.store.sites import site_registered

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
    if site is not None and not site_registered(conn, site):
        raise ValueError(f"site {site!r} is not registered")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ValueError(f"the expiry {expires_at.isoformat()} has already passed")
    token = new_token()
    tokens.insert_token(conn, name=name, role=role.value, site=site, token_hash=hash_token(token),
                        expires_at=expires_at)
    conn.commit()
    return token


def list_tokens(conn: Conn) -> list[dict[str, Any]]:
    """Every token's id, holder, role, site and life (never its hash), newest first."""
    return tokens.list_tokens(conn)


def revoke_token(conn: Conn, token_id: int) -> bool:
    """Revoke at once (the next request with it is refused); False if there is no such live token."""
    revoked = tokens.revoke_token(conn, token_id)
    conn.commit()
    return revoked


def authenticate(conn: Conn, token: str, bootstrap: str | None) -> Principal | None:
    if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
        return Principal("bootstrap", Role.ADMIN)
    row = tokens.live_token(conn, hash_token(token))
    if row is None:
        return None
    return Principal(row["name"], Role(row["role"]), row["site"])
