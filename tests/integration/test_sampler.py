"""The sampler's inputs read from a real PostgreSQL, and the inspection list CSV read back cell by cell.

Sites, cameras, their latest state and alerts are inserted with SQL; every risk below is worked out
by hand from DESIGN's defaults (docs/inspection.md): base 1, critical 3, major 2, minor 1 per open
alert (capped at 8), 4 x the share of cameras not online, 2 for a high-risk category.
"""

# ruff: noqa: RUF001 - the expected texts use Chinese full-width punctuation
from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb

from gateway.inspection.registry import load_registry, sample_from_db
from gateway.inspection.sampler import CSV_HEADER, RiskInputs, SamplingError, Site, draw_sample, risk_of
from gateway.inspection.sampler import write_inspection_csv as write_csv
from gateway.store.db import Conn, connect

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

SITES = [
    # id, name, city, county, category, cameras_required
    ("hz-1", "西湖舞蹈中心", "杭州市", "西湖区", "舞蹈", 2),
    ("hz-2", "文三数学", "杭州市", "西湖区", "数学", 3),
    ("hz-3", "=1+1", "杭州市", "上城区", "体育", 0),
    ("hz-4", "拱宸英语", "杭州市", "拱墅区", "英语", 1),
    ("hz-5", "运河书画", "杭州市", "拱墅区", "书画", 2),
    ("nb-1", "甬江体育", "宁波市", "鄞州区", "sports", 0),
]

EXPECTED_INPUTS = {
    "hz-1": RiskInputs(open_critical=1, open_major=1, cameras_required=2, cameras=2, cameras_online=1),
    "hz-2": RiskInputs(cameras_required=3, cameras=2, cameras_online=0),
    "hz-3": RiskInputs(open_minor=4),
    "hz-4": RiskInputs(cameras_required=1, cameras=1, cameras_online=1),
    "hz-5": RiskInputs(cameras_required=2),
    "nb-1": RiskInputs(),
}

# Site id -> (risk cell, reasons cell), by hand.
EXPECTED_RISK = {
    # 1 + (3 + 2) + 4 x 1/2 + 2
    "hz-1": ("10.0", "未处理告警 2 条（严重 1、较重 1）；摄像头在线 1/2；高风险类别（舞蹈）"),
    # 1 + 4 x 3/3: one camera stale, one frozen, one never registered
    "hz-2": ("5.0", "摄像头在线 0/3"),
    # 1 + 4 x 1 + 2
    "hz-3": ("7.0", "未处理告警 4 条（一般 4）；高风险类别（体育）"),
    "hz-4": ("1.0", "无突出风险（随机抽取）"),
    # 1 + 4: two cameras required, none registered
    "hz-5": ("5.0", "摄像头在线 0/2"),
    "nb-1": ("3.0", "高风险类别（sports）"),
}


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as c:
        _populate(c)
        c.commit()
        yield c


def _camera(conn: Conn, site: str, device: str, *, status: str, deadline: datetime, offline: bool = False) -> None:
    conn.execute("INSERT INTO devices (site, id, kind, declared, created_at)"
        " VALUES (%s, %s, 'camera', true, '2000-01-01Z')", (site, device))
    conn.execute(
        "INSERT INTO device_state (site, device, last_seen, last_ts, boot, seq, status, reading, deadline, offline)"
        " VALUES (%s, %s, %s, %s, 'b1', 1, %s, %s, %s, %s)",
        (site, device, deadline - timedelta(seconds=180), deadline - timedelta(seconds=180), status,
         Jsonb({"stream": status}), deadline, offline),
    )


def _alert(conn: Conn, site: str, device: str | None, kind: str, severity: str, state: str) -> None:
    conn.execute(
        "INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (site, device, kind, severity, state, NOW - timedelta(hours=1), NOW),
    )


def _populate(conn: Conn) -> None:
    for site in SITES:
        conn.execute(
            "INSERT INTO sites (id, name, city, county, category, cameras_required, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, '2000-01-01Z')",
            site,
        )
    later, earlier = NOW + timedelta(seconds=60), NOW - timedelta(seconds=1)
    _camera(conn, "hz-1", "cam-1", status="ok", deadline=later)
    _camera(conn, "hz-1", "cam-2", status="ok", deadline=earlier, offline=True)  # swept offline
    conn.execute("INSERT INTO devices (site, id, kind, created_at)"
        " VALUES ('hz-1', 'smoke-1', 'smoke', '2000-01-01Z')")  # not a camera
    _camera(conn, "hz-2", "cam-1", status="ok", deadline=earlier)  # stale, not swept yet
    _camera(conn, "hz-2", "cam-2", status="frozen", deadline=later)
    _camera(conn, "hz-4", "cam-1", status="ok", deadline=later)
    _alert(conn, "hz-1", "smoke-1", "fire_alarm", "critical", "open")
    _alert(conn, "hz-1", "exit-1", "exit_blocked", "major", "acknowledged")
    _alert(conn, "hz-1", "smoke-1", "detector_fault", "minor", "resolved")
    _alert(conn, "hz-1", "cam-2", "camera_offline", "major", "resolved")
    for i in range(4):
        _alert(conn, "hz-3", f"smoke-{i}", "detector_fault", "minor", "open")
    _alert(conn, "nb-1", None, "agent_offline", "major", "resolved")


def test_load_registry_counts_open_alerts_and_online_cameras(conn: Conn) -> None:
    registry = load_registry(conn, now=NOW)
    assert [site.id for site, _ in registry] == [s[0] for s in sorted(SITES)]
    assert {site.id: inputs for site, inputs in registry} == EXPECTED_INPUTS
    site, _ = registry[0]
    assert site == Site("hz-1", "杭州市", "西湖区", "舞蹈", "西湖舞蹈中心")
    for site, inputs in registry:
        risk = risk_of(site, inputs)
        assert (f"{risk.score:.1f}", "；".join(risk.reasons)) == EXPECTED_RISK[site.id]


def test_load_registry_of_one_city(conn: Conn) -> None:
    assert [site.id for site, _ in load_registry(conn, city="宁波市", now=NOW)] == ["nb-1"]
    assert load_registry(conn, city="温州市", now=NOW) == []


def test_load_registry_defaults_to_the_database_clock(conn: Conn) -> None:
    # The hand-made deadlines are in 2025, long past: with the database's now() nothing is online.
    assert {site.id: inputs.cameras_online for site, inputs in load_registry(conn)} == dict.fromkeys(
        EXPECTED_INPUTS, 0)
    conn.execute("UPDATE device_state SET deadline = now() + interval '1 hour' WHERE site = 'hz-4'")
    assert {site.id: inputs.cameras_online for site, inputs in load_registry(conn)}["hz-4"] == 1


def test_sample_from_db_matches_the_pure_sampler(conn: Conn) -> None:
    sample = sample_from_db(conn, level="city", city="杭州市", seed=7, now=NOW)
    registry = load_registry(conn, now=NOW)
    risks = {site.id: risk_of(site, inputs) for site, inputs in registry}
    assert sample == draw_sample([site for site, _ in registry], risks, level="city", city="杭州市", seed=7)
    # 5 institutions in 3 counties: 2 counties to cover, 10 % is 1, so 2 sites in 2 counties.
    assert (sample.institutions, sample.counties, sample.counties_required, sample.sites_required) == (5, 3, 2, 1)
    assert len(sample.sites) == 2
    assert len(sample.covered) == 2
    province = sample_from_db(conn, level="province", seed=7, now=NOW)
    assert len(province.sites) == 1  # 5 % of 6, rounded up
    with pytest.raises(SamplingError, match="cities with sites: 宁波市, 杭州市"):
        sample_from_db(conn, level="city", city="温州市", seed=7, now=NOW)


@pytest.mark.parametrize("seed", [1, 2, 4, 8])  # between them, every site of 杭州市 is drawn
def test_inspection_csv_read_back_cell_by_cell(conn: Conn, tmp_path: Path, seed: int) -> None:
    sample = sample_from_db(conn, level="city", city="杭州市", seed=seed, now=NOW)
    out = tmp_path / "inspection.csv"
    write_csv(sample, out)
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel opens it as UTF-8
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(CSV_HEADER)
    assert rows[0] == ["序号", "场所编号", "场所名称", "市", "县区", "类别", "风险分", "抽查理由"]
    body = rows[1:]
    assert len(body) == len(sample.sites) == 2
    by_id = {s[0]: s for s in SITES}
    for number, row in enumerate(body, start=1):
        site_id = row[1]
        _, name, city, county, category, _ = by_id[site_id]
        score, reasons = EXPECTED_RISK[site_id]
        shown_name = "'" + name if name.startswith("=") else name  # no formula in Excel
        assert row == [str(number), site_id, shown_name, city, county, category, score, reasons]
    # Sorted by county, then id (all in one city); two different counties.
    keys = [(by_id[r[1]][3], r[1]) for r in body]
    assert keys == sorted(keys)
    assert len({by_id[r[1]][3] for r in body}) == 2
