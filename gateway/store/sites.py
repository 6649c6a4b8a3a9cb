"""Site registry: upsert from the API and from ``safeguard sites import FILE.csv``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.store.db import Conn
from gateway.store.text import PgText
from protocol.topics import RESERVED_SITE_IDS


class SiteFields(BaseModel):
    """What an operator registers about a site (DESIGN section 7)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: PgText = Field("", max_length=200)
    city: PgText = Field("", max_length=100)
    county: PgText = Field("", max_length=100)
    category: PgText = Field("", max_length=100)
    address: PgText = Field("", max_length=500)
    cameras_required: int = Field(0, ge=0, le=10_000)
    contact_name: str = Field("", max_length=100)
    contact_phone: str = Field("", max_length=50)


class SiteRecord(SiteFields):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_SITE_IDS:
            raise ValueError(f"site id {value!r} is reserved")
        return value


REQUIRED_CSV_COLUMNS = ("id", "name", "city", "county", "category", "address", "cameras_required")
OPTIONAL_CSV_COLUMNS = ("contact_name", "contact_phone")  # issue 13: older files without them still import
CSV_COLUMNS = REQUIRED_CSV_COLUMNS + OPTIONAL_CSV_COLUMNS


def upsert_sites(conn: Conn, sites: Iterable[SiteRecord]) -> int:
    rows = [s.model_dump() for s in sites]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sites (id, name, city, county, category, address, cameras_required, contact_name,"
            " contact_phone) VALUES (%(id)s, %(name)s, %(city)s, %(county)s, %(category)s, %(address)s,"
            " %(cameras_required)s, %(contact_name)s, %(contact_phone)s)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, city = excluded.city, county = excluded.county,"
            " category = excluded.category, address = excluded.address,"
            " cameras_required = excluded.cameras_required, contact_name = excluded.contact_name,"
            " contact_phone = excluded.contact_phone, updated_at = now()",
            rows,
        )
    return len(rows)


class SiteCsvError(ValueError):
    """A bad sites CSV; the message names the line and the column."""


# Excel on Chinese Windows saves CSV as GBK (GB 18030 is its superset); everything else as UTF-8,
# often with a byte-order mark.
_ENCODINGS = ("utf-8-sig", "gb18030")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SiteCsvError(f"{path}: {exc.strerror or exc}") from None
    for encoding in _ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise SiteCsvError(f"{path}: not UTF-8 or GBK/GB 18030 text: save it as CSV UTF-8 (逗号分隔) and try again")


def read_sites_csv(path: Path) -> list[SiteRecord]:
    """Every row of a sites CSV, validated; raises SiteCsvError naming the line and the column."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = [name.strip() for name in reader.fieldnames or ()]
    reader.fieldnames = header
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        raise SiteCsvError(
            f"{path}: line 1 must name the columns {','.join(REQUIRED_CSV_COLUMNS)} (any order; optional:"
            f" {','.join(OPTIONAL_CSV_COLUMNS)}); missing {missing}, unknown {unknown}"
        )
    records, seen = [], set()
    for row in reader:
        line = reader.line_num
        extra: list[str] = row.pop(None, None) or []  # type: ignore[assignment]  # DictReader: surplus fields
        given = [v for v in row.values() if v is not None]  # and None for fields the row lacks
        if extra or len(given) < len(header):
            fields = len(given) + len(extra)
            raise SiteCsvError(f"{path}, line {line}: {fields} fields, the header has {len(header)}"
                               f" ({','.join(header)}); an empty value is an empty field between commas")
        values = {k: v for k, v in row.items() if v != ""}
        try:
            record = SiteRecord.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SiteCsvError(f"{path}, line {line}: {problems}") from None
        if record.id in seen:
            raise SiteCsvError(f"{path}, line {line}: site {record.id!r} appears twice")
        seen.add(record.id)
        records.append(record)
    return records


def site_registered(conn: Conn, site: str) -> bool:
    """Whether ``site`` is in the registry."""
    return conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is not None


def unknown_place(conn: Conn, *, city: str | None, county: str | None) -> str | None:
    """Why ``city``/``county`` match no registered site (a typo, another spelling), or None if they do."""
    if city is None and county is None:
        return None
    row = conn.execute(
        "SELECT bool_or(%(city)s::text IS NULL OR city = %(city)s) AS city_known,"
        " bool_or((%(city)s::text IS NULL OR city = %(city)s) AND (%(county)s::text IS NULL OR county = %(county)s))"
        " AS both_known FROM sites",
        {"city": city, "county": county},
    ).fetchone()
    city_known, both_known = (row["city_known"], row["both_known"]) if row else (None, None)
    if not city_known:
        return f"no registered site is in city {city!r}"
    if not both_known:
        where = f" of city {city!r}" if city else ""
        return f"no registered site is in county {county!r}{where}"
    return None


def purge_site(conn: Conn, site: str) -> dict[str, int] | None:
    """Delete a site and everything recorded of it (alerts, readings, problems, tokens, ...); the
    rows deleted per table, or None if there is no such site. The caller commits.

    For sites that should never have been real (a scenario's, a test's): alerts and their history
    are otherwise never deleted. Every table with a ``site`` column is found from the catalogue, so
    a table added later is purged too; foreign keys decide the order (a table whose rows are still
    referenced is retried after the others).
    """
    if conn.execute("SELECT 1 FROM sites WHERE id = %s FOR UPDATE", (site,)).fetchone() is None:
        return None
    tables = [row["table_name"] for row in conn.execute(
        "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t"
        " USING (table_schema, table_name) WHERE c.table_schema = current_schema() AND c.column_name = 'site'"
        " AND t.table_type = 'BASE TABLE' AND c.table_name <> 'sites' ORDER BY c.table_name")]
    deleted: dict[str, int] = {}
    for _ in range(len(tables) + 1):  # each pass empties at least one table, or none is left
        postponed = []
        for table in tables:
            try:
                with conn.transaction():  # a savepoint: a refused delete leaves the others standing
                    cursor = conn.execute(sql.SQL("DELETE FROM {} WHERE site = %s").format(sql.Identifier(table)),
                                          (site,))
            except psycopg.errors.ForeignKeyViolation:
                postponed.append(table)
                continue
            if cursor.rowcount:
                deleted[table] = deleted.get(table, 0) + cursor.rowcount
        if not postponed:
            break
        tables = postponed
    conn.execute("DELETE FROM sites WHERE id = %s", (site,))
    deleted["sites"] = 1
    return deleted


# A site as the API shows it: its registration, its agent's last status and its unresolved alerts.
_SITE_VIEW = (
    "SELECT s.*, a.online, a.boot, a.agent_version, a.heartbeat_s, a.status_at,"
    " (SELECT count(*) FROM alerts al WHERE al.site = s.id AND al.state <> 'resolved') AS open_alerts"
    " FROM sites s LEFT JOIN agents a ON a.site = s.id"
)


def list_sites(
    conn: Conn, *, own: str | None, city: str | None, county: str | None, q: str | None, after: str | None,
    limit: int,
) -> list[DictRow]:
    """Up to ``limit`` sites (as ``get_site``) in id order after ``after``; each filter None matches every site."""
    return conn.execute(
        f"{_SITE_VIEW} WHERE (%(own)s::text IS NULL OR s.id = %(own)s)"
        " AND (%(city)s::text IS NULL OR s.city = %(city)s) AND (%(county)s::text IS NULL OR s.county = %(county)s)"
        " AND (%(q)s::text IS NULL OR s.id ILIKE '%%' || %(q)s || '%%' OR s.name ILIKE '%%' || %(q)s || '%%')"
        " AND (%(after)s::text IS NULL OR s.id > %(after)s) ORDER BY s.id LIMIT %(limit)s",
        {"own": own, "city": city, "county": county, "q": q, "after": after, "limit": limit},
    ).fetchall()


def get_site(conn: Conn, site: str) -> DictRow | None:
    """The site's row, its agent's status and its number of open alerts; None if it is not registered."""
    return conn.execute(f"{_SITE_VIEW} WHERE s.id = %s", (site,)).fetchone()
