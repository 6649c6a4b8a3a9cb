"""The sites' broker secrets in PostgreSQL (docs/operations.md): only their hashes are stored.

:mod:`gateway.broker_config` makes the secrets and writes the broker's files; here are its statements.
"""

from __future__ import annotations

from psycopg.rows import DictRow

from gateway.store.db import Conn


def site_credentials(conn: Conn) -> list[DictRow]:
    """Every registered site that has a broker secret: site and password_hash, by site."""
    return conn.execute(
        "SELECT c.site, c.password_hash FROM broker_credentials c JOIN sites s ON s.id = c.site ORDER BY c.site"
    ).fetchall()


def set_site_password(conn: Conn, site: str, password_hash: str) -> None:
    """``site``'s broker password hash, replacing any old one."""
    conn.execute(
        "INSERT INTO broker_credentials (site, password_hash) VALUES (%s, %s)"
        " ON CONFLICT (site) DO UPDATE SET password_hash = excluded.password_hash, issued_at = now()",
        (site, password_hash),
    )


def delete_site_password(conn: Conn, site: str) -> bool:
    """Remove ``site``'s broker secret; False if it had none."""
    return conn.execute("DELETE FROM broker_credentials WHERE site = %s", (site,)).rowcount > 0
