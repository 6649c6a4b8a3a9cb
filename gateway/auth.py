"""API tokens: roles, hashing, creation and lookup (DESIGN sections 6 and 7)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

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


def create_token(conn: Conn, *, role: Role, name: str, site: str | None = None) -> str:
    """Store a new token's hash and return the token (shown once, never stored)."""
    if (role is Role.INSTITUTION) != (site is not None):
        raise ValueError("an institution token needs --site, and only an institution token takes one")
    if site is not None and conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is None:
        raise ValueError(f"site {site!r} is not registered")
    token = new_token()
    conn.execute(
        "INSERT INTO api_tokens (name, role, site, token_hash) VALUES (%s, %s, %s, %s)",
        (name, role.value, site, hash_token(token)),
    )
    conn.commit()
    return token


def authenticate(conn: Conn, token: str, bootstrap: str | None) -> Principal | None:
    if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
        return Principal("bootstrap", Role.ADMIN)
    row = conn.execute(
        "SELECT name, role, site FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL", (hash_token(token),)
    ).fetchone()
    if row is None:
        return None
    return Principal(row["name"], Role(row["role"]), row["site"])
