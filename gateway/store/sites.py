"""Site registry: upsert from the API and from ``safeguard sites import FILE.csv``."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

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


class SiteRecord(SiteFields):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_SITE_IDS:
            raise ValueError(f"site id {value!r} is reserved")
        return value


CSV_COLUMNS = ("id", "name", "city", "county", "category", "address", "cameras_required")


def upsert_sites(conn: Conn, sites: Iterable[SiteRecord]) -> int:
    rows = [s.model_dump() for s in sites]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sites (id, name, city, county, category, address, cameras_required)"
            " VALUES (%(id)s, %(name)s, %(city)s, %(county)s, %(category)s, %(address)s, %(cameras_required)s)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, city = excluded.city, county = excluded.county,"
            " category = excluded.category, address = excluded.address,"
            " cameras_required = excluded.cameras_required, updated_at = now()",
            rows,
        )
    return len(rows)


class SiteCsvError(ValueError):
    """A bad sites CSV; the message names the line and the column."""


def read_sites_csv(path: Path) -> list[SiteRecord]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id"} - set(reader.fieldnames or ())
        unknown = set(reader.fieldnames or ()) - set(CSV_COLUMNS)
        if missing or unknown:
            raise SiteCsvError(
                f"{path}: header must use columns {', '.join(CSV_COLUMNS)} (id required);"
                f" missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        records, seen = [], set()
        for row in reader:
            line = reader.line_num
            values = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
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
