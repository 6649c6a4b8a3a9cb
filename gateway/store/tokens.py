"""API tokens in PostgreSQL (DESIGN sections 6 and 7): only their hashes are stored.

:mod:`gateway.auth` checks the roles, makes and hashes the tokens and commits; here are its statements.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from gateway.store.db import Conn


def insert_token(conn: Conn, *, name: str, role: str, site: str | None, token_hash: bytes,
                 expires_at: datetime | None) -> None:
    """A new token's row."""
    conn.execute(
        "INSERT INTO api_tokens (name, role, site, token_hash, expires_at) VALUES (%s, %s, %s, %s, %s)",
        (name, role, site, token_hash, expires_at),
    )


def list_tokens(conn: Conn) -> list[DictRow]:
    """Every token's id, holder, role, site, life and status (active, expired, revoked; never its hash), newest
    first."""
    return conn.execute(
        "SELECT id, name, role, site, created_at, expires_at, revoked_at,"
        " CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired'"
        " ELSE 'active' END AS status FROM api_tokens ORDER BY id DESC"
    ).fetchall()


def revoke_token(conn: Conn, token_id: int) -> bool:
    """Revoke the token now; False if there is no such token not yet revoked."""
    row = conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
                       (token_id,)).fetchone()
    return row is not None


def live_token(conn: Conn, token_hash: bytes) -> DictRow | None:
    """The name, role and site of the token with ``token_hash`` if it is neither revoked nor expired."""
    return conn.execute(
        "SELECT name, role, site FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())", (token_hash,)
    ).fetchone()
