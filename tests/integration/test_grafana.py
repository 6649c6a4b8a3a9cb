"""The Grafana provisioning (dashboards/grafana/) is consistent, and every panel's SQL runs against the real schema.

Grafana expands its macros and template variables before the SQL reaches PostgreSQL; this test does the same
(with `time_bucket` on TimescaleDB, as the data source's `timescaledb: true` makes Grafana do in production; plain
SQL bucketing on plain PostgreSQL), then runs each query on a freshly migrated database holding a few rows, on both
storage paths, so that a typo, a renamed column or a query that no longer returns what the panel expects fails
here rather than on the fire brigade's wall screen.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb

from gateway.compliance.rollup import catch_up, rollup
from gateway.rules.engine import Heartbeats
from gateway.store.db import connect
from tests.support import compressed_chunks

pytestmark = [pytest.mark.integration, pytest.mark.storage]

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning"
MOUNT = "/etc/grafana/provisioning"  # where docker-compose.yml mounts PROVISIONING
DATASOURCE_UID = "safeguard-pg"
DATASOURCE_TYPE = "grafana-postgresql-datasource"

NOW = datetime.now(UTC).replace(microsecond=0)
# The dashboards' time range. Wide on purpose: the data is seeded when a test runs, which can be
# many minutes after this module was imported (a long suite).
RANGE_FROM, RANGE_TO = NOW - timedelta(hours=6), NOW + timedelta(hours=2)
INTERVAL = "1m"

TIME_TYPES = {"timestamptz", "timestamp"}
NUMBER_TYPES = {"int2", "int4", "int8", "float4", "float8", "numeric"}
TEXT_TYPES = {"text", "varchar", "bpchar", "name"}


def _dashboard_files() -> list[Path]:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "safeguard.yaml").read_text(encoding="utf-8"))
    path = provider["providers"][0]["options"]["path"]
    assert path.startswith(MOUNT + "/"), path
    return sorted((PROVISIONING / path.removeprefix(MOUNT + "/")).glob("*.json"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


DASHBOARDS = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in _dashboard_files()}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def variables(self) -> list[dict[str, Any]]:
        return list(DASHBOARDS[self.dashboard].get("templating", {}).get("list", []))

    def __str__(self) -> str:
        return f"{self.dashboard}/{self.panel['id']}{self.target['refId']}"


QUERIES = [
    Query(name, panel, target)
    for name, board in DASHBOARDS.items()
    for panel in _panels(board["panels"])
    if panel["type"] != "row"
    for target in panel.get("targets", [])
]


# --- Grafana's expansion ---------------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_GROUP = re.compile(r"\$__timeGroup(Alias)?\(\s*([^,()]+?)\s*,\s*'?(\d+[smhd])'?\s*(?:,[^()]*)?\)")
_FILTER = re.compile(r"\$__timeFilter\(\s*([^()]+?)\s*\)")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _interpolate(sql: str, values: Mapping[str, str]) -> str:
    """Template variables as Grafana's SQL data sources format them, then the built-in interval variables."""
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        sql = re.sub(rf"\$\{{{name}(?::\w+)?\}}|\[\[{name}\]\]|\${name}\b", value.replace("\\", "\\\\"), sql)
    sql = re.sub(r"\$__interval_ms\b", str(_UNITS[INTERVAL[-1]] * int(INTERVAL[:-1]) * 1000), sql)
    return re.sub(r"\$__interval\b", INTERVAL, sql)


def _bucket(match: re.Match[str], *, timescale: bool) -> str:
    alias, column, interval = match.groups()
    seconds = int(interval[:-1]) * _UNITS[interval[-1]]
    if timescale:  # the data source's `timescaledb: true`, as Grafana's macro engine writes it
        expr = f"time_bucket('{seconds:.3f}s',{column})"
    else:
        expr = f"to_timestamp(floor(extract(epoch FROM {column}) / {seconds}) * {seconds})"
    return f'{expr} AS "time"' if alias else expr


def expand(sql: str, values: Mapping[str, str], *, timescale: bool = False) -> str:
    sql = _interpolate(sql, values)
    sql = _GROUP.sub(lambda m: _bucket(m, timescale=timescale), sql)
    sql = _FILTER.sub(lambda m: f"{m.group(1)} BETWEEN '{_iso(RANGE_FROM)}' AND '{_iso(RANGE_TO)}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{_iso(RANGE_FROM)}'").replace("$__timeTo()", f"'{_iso(RANGE_TO)}'")
    leftover = re.findall(r"\$\{?\w+|\[\[\w+\]\]", sql)
    assert not leftover, f"macros or variables this test does not expand: {leftover}"
    return sql


# --- running -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    columns: list[tuple[str, str]]  # (name, PostgreSQL type name)
    rows: list[tuple[Any, ...]]


def run(conn: psycopg.Connection[Any], sql: str) -> Result:
    cur = conn.execute(sql)  # type: ignore[call-overload, unused-ignore]  # str query: flagged or not by psycopg version
    assert cur.description is not None, "the query returns no result set"
    columns = []
    for col in cur.description:
        info = conn.adapters.types.get(col.type_code)
        columns.append((col.name, info.name if info else str(col.type_code)))
    return Result(columns, cur.fetchall())


def variable_values(conn: psycopg.Connection[Any], variables: list[dict[str, Any]]) -> dict[str, str]:
    """Each variable's value as Grafana substitutes it: "All" of a query variable (its query runs too)."""
    values: dict[str, str] = {}
    for var in variables:
        if var["type"] == "query":
            assert var["datasource"]["uid"] == DATASOURCE_UID
            result = run(conn, expand(var["query"], values))
            names = [name for name, _ in result.columns]
            column = names.index("__value") if "__value" in names else 0
            options = [str(row[column]) for row in result.rows]
            assert options, f"variable {var['name']} has no options with the test data"
        elif var["type"] == "custom":
            options = [var["current"]["value"]]
            assert options[0] in [o.strip() for o in var["query"].split(",")]
        else:
            pytest.fail(f"variable type {var['type']} ({var['name']}) is not handled by this test")
        quoted = var.get("multi") or var.get("includeAll")
        values[var["name"]] = ",".join(_literal(o) for o in options) if quoted else options[0].replace("'", "''")
    return values


def _has_timescale(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (1,)


def run_query(conn: psycopg.Connection[Any], query: Query, sql: str | None = None) -> Result:
    values = variable_values(conn, query.variables)
    return run(conn, expand(sql if sql is not None else query.target["rawSql"], values,
                            timescale=_has_timescale(conn)))


# --- data --------------------------------------------------------------------------------------------------------


def _seed(conn: psycopg.Connection[Any]) -> None:
    # Relative to the time of seeding: "online now" panels compare deadlines with the database's now().
    now = datetime.now(UTC).replace(microsecond=0)

    def ago(**kw: float) -> datetime:
        return now - timedelta(**kw)

    def later(**kw: float) -> datetime:
        return now + timedelta(**kw)

    conn.cursor().executemany(
        "INSERT INTO sites (id, name, city, county, cameras_required, created_at)"
            " VALUES (%s, %s, %s, %s, %s, '2000-01-01Z')",
        [
            ("hz-001", "学而思 西湖", "杭州", "西湖区", 2),
            ("wz-001", "新东方 鹿城", "温州", "鹿城区", 1),
            ("xx-001", "无城市", "", "", 1),
        ],
    )
    devices = [  # site, id, kind, status, reading, last seen, deadline, offline
        ("hz-001", "cam-1", "camera", "ok", {"fps": 12.5}, ago(seconds=20), later(minutes=2), False),
        ("hz-001", "cam-2", "camera", "frozen", {"fps": 0.0}, ago(seconds=30), later(minutes=1), False),
        ("hz-001", "cam-3", "camera", "ok", {"fps": 12.0}, ago(minutes=20), ago(minutes=10), True),
        ("wz-001", "cam-1", "camera", "ok", {"fps": 10.0}, ago(minutes=5), ago(minutes=1), False),  # overdue
        ("wz-001", "cam-2", "camera", None, None, None, None, False),  # never seen
        ("hz-001", "smoke-1", "smoke", "normal", {"battery_pct": 88.0}, ago(seconds=10), later(minutes=5), False),
        ("hz-001", "smoke-2", "smoke", "alarm", {"battery_pct": 70.0}, ago(seconds=5), later(minutes=5), False),
        ("wz-001", "smoke-1", "smoke", "fault", {"battery_pct": 12.0}, ago(minutes=1), later(minutes=4), False),
        ("wz-001", "smoke-2", "smoke", "normal", {"battery_pct": 5.0}, ago(hours=2), ago(hours=1), True),
        ("wz-001", "exit-1", "exit", "clear", {"blocked_ratio": 0.0}, ago(seconds=10), later(minutes=5), False),
    ]
    with conn.cursor() as cur:
        for site, device, kind, status, reading, seen, deadline, offline in devices:
            cur.execute(
                "INSERT INTO devices (site, id, kind, declared, created_at)"
                    " VALUES (%s, %s, %s, true, '2000-01-01Z')", (site, device, kind)
            )
            if status is not None:
                cur.execute(
                    "INSERT INTO device_state (site, device, last_seen, last_ts, boot, seq, status, reading,"
                    " deadline, offline) VALUES (%s, %s, %s, %s, 'b1', 1, %s, %s, %s, %s)",
                    (site, device, seen, seen, status, Jsonb(reading), deadline, offline),
                )
        readings = [
            (ago(minutes=m, seconds=s), site, device, kind, status)
            for m in range(1, 30, 7)
            for s, (site, device, kind, status) in enumerate(
                [
                    ("hz-001", "cam-1", "camera", "ok"),
                    ("hz-001", "cam-2", "camera", "frozen"),
                    ("hz-001", "smoke-2", "smoke", "alarm"),
                    ("wz-001", "smoke-1", "smoke", "fault"),
                    ("wz-001", "exit-1", "exit", "clear"),
                ]
            )
        ]
        cur.executemany(
            "INSERT INTO readings (ts, received_at, site, device, kind, boot, seq, status, payload)"
            " VALUES (%s, %s, %s, %s, %s, 'b1', %s, %s, '{}')",
            [
                (ts, ts + timedelta(seconds=2), site, device, kind, i, status)
                for i, (ts, site, device, kind, status) in enumerate(readings)
            ],
        )
        cur.executemany(
            "INSERT INTO dead_letters (received_at, topic, code, reason, payload_excerpt, payload_size)"
            " VALUES (%s, %s, %s, 'test', '{', 1)",
            [
                (ago(minutes=3), "sg/v1/hz-001/smoke/x", "malformed_json"),
                (ago(minutes=4), "sg/v1/nowhere/camera/c", "unknown_site"),
            ],
        )
        alerts = [  # site, device, kind, severity, state, opened, actions
            ("hz-001", "smoke-2", "fire_alarm", "critical", "open", ago(minutes=2), ["opened", "repeated"]),
            ("hz-001", "cam-3", "camera_offline", "major", "acknowledged", ago(minutes=15), ["opened", "acknowledged"]),
            ("wz-001", "smoke-1", "detector_fault", "minor", "open", ago(minutes=1), ["opened"]),
            ("wz-001", "exit-1", "exit_blocked", "major", "resolved", ago(hours=1), ["opened", "resolved"]),
        ]
        for site, device, kind, severity, state, opened, actions in alerts:
            cur.execute(
                "INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (site, device, kind, severity, state, opened, opened),
            )
            row = cur.fetchone()
            assert row is not None
            for step, action in enumerate(actions):
                cur.execute(
                    "INSERT INTO alert_history (alert_id, site, at, state, action, by, alert)"
                    " VALUES (%s, %s, %s, %s, %s, 'rules', %s)",
                    (
                        row[0],
                        site,
                        opened + timedelta(seconds=step),
                        state,
                        action,
                        Jsonb(
                            {
                                "id": row[0],
                                "site": site,
                                "device": device,
                                "kind": kind,
                                "severity": severity,
                                "state": state,
                            }
                        ),
                    ),
                )
    conn.commit()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url) as conn:
        _seed(conn)
    with connect(database_url) as conn:  # the daily figures, kept as the supervisor keeps them
        catch_up(conn, time.time() + 2 * 86_400, settle_s=0, zone="Asia/Shanghai", heartbeats=Heartbeats())
        rollup(conn, zone="Asia/Shanghai")
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET statement_timeout = '10s'")
        conn.commit()
        conn.read_only = True  # a dashboard only reads
        yield conn


# --- tests -------------------------------------------------------------------------------------------------------


def test_provisioning_parses_and_matches_the_compose_stack() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "safeguard.yaml").read_text(encoding="utf-8"))
    (source,) = sources["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == DATASOURCE_TYPE
    assert source["url"] == "timescaledb:5432"
    assert source["user"] == "safeguard"
    assert source["jsonData"]["database"] == "safeguard"
    assert source["jsonData"]["sslmode"] == "disable"
    assert source["jsonData"]["timescaledb"] is True
    assert source["secureJsonData"]["password"] in ("${POSTGRES_PASSWORD}", "$POSTGRES_PASSWORD")

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "safeguard.yaml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert len(_dashboard_files()) >= 4

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    grafana = compose["services"]["grafana"]
    assert "./dashboards/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "POSTGRES_PASSWORD" in grafana["environment"]
    assert compose["services"]["timescaledb"]["environment"]["POSTGRES_DB"] == "safeguard"


def test_dashboards_are_well_formed() -> None:
    uids = [board["uid"] for board in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids), uids
    titles = [board["title"] for board in DASHBOARDS.values()]
    assert len(set(titles)) == len(titles), titles
    for name, board in DASHBOARDS.items():
        assert 0 < len(board["uid"]) <= 40, name
        assert board["schemaVersion"] >= 36, name
        panels = list(_panels(board["panels"]))
        ids = [p["id"] for p in panels]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"
        panel_titles = [p["title"] for p in panels]
        assert len(set(panel_titles)) == len(panel_titles), f"{name}: panel titles repeat"
        for panel in panels:
            assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), (name, panel["title"])
            if panel["type"] == "row":
                continue
            where = f"{name}: {panel['title']}"
            assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, where
                assert target.get("rawQuery"), where
                assert target.get("rawSql", "").strip(), where
                assert target["format"] == ("time_series" if panel["type"] == "timeseries" else "table"), where
        for var in board.get("templating", {}).get("list", []):
            if var["type"] == "query":
                assert var["datasource"]["uid"] == DATASOURCE_UID, (name, var["name"])


def test_the_required_views_exist() -> None:
    """Issue 5: ingest rate, alerts by kind over time, camera online share by site, detector states."""
    sql = {name: " ".join(q.target["rawSql"] for q in QUERIES if q.dashboard == name) for name in DASHBOARDS}
    assert {"ingest", "alerts", "cameras", "detectors"} <= sql.keys()
    for name, needles in {
        "ingest": ["FROM readings", "FROM dead_letters"],
        "alerts": ["FROM alert_history", "FROM alerts"],
        "cameras": ["device_state", "'camera'"],
        "detectors": ["device_state", "'smoke'", "battery_pct"],
    }.items():
        for needle in needles:
            assert needle in sql[name], (name, needle)


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_panel_sql_runs_on_the_schema(db: psycopg.Connection[Any], query: Query) -> None:
    result = run_query(db, query)
    names = [name for name, _ in result.columns]
    types = dict(result.columns)
    assert len(set(names)) == len(names), f"duplicate column names: {names}"
    assert result.rows, "no rows with the test data: the query does not touch what it should"

    kind = query.panel["type"]
    if kind == "timeseries":
        assert names[0] == "time", result.columns
        assert types["time"] in TIME_TYPES, result.columns
        values = [(n, t) for n, t in result.columns[1:] if n != "metric"]
        assert values, result.columns
        assert all(t in NUMBER_TYPES for _, t in values), result.columns
        assert "metric" not in types or types["metric"] in TEXT_TYPES, result.columns
        times = [row[0] for row in result.rows]
        assert times == sorted(times), "time series must be ordered by time"
        assert all(RANGE_FROM - timedelta(minutes=1) <= t <= RANGE_TO for t in times)
    elif kind in ("stat", "piechart"):  # one row; a pie chart has a column per slice
        assert len(result.rows) == 1, result.rows
        assert all(t in NUMBER_TYPES for _, t in result.columns), result.columns
    else:
        assert kind == "table", kind

    # Overrides and sorting name columns the query must return.
    for override in query.panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"]["id"] == "byName" and kind != "timeseries":
            assert override["matcher"]["options"] in names, (override["matcher"]["options"], names)
    for sort in query.panel.get("options", {}).get("sortBy", []):
        assert sort["displayName"] in names, (sort, names)


def _find(dashboard: str, prefix: str) -> Query:
    (query,) = [q for q in QUERIES if q.dashboard == dashboard and q.panel["title"].startswith(prefix)]
    return query


def test_panels_compute_the_right_figures(db: psycopg.Connection[Any]) -> None:
    share = run_query(db, _find("cameras", "摄像头在线率"))
    assert float(share.rows[0][0]) == pytest.approx(2 / 5)

    by_site = run_query(db, _find("cameras", "各场所摄像头在线率"))
    rows = {row[0]: row for row in by_site.rows}
    col = {name: i for i, (name, _) in enumerate(by_site.columns)}
    assert rows["wz-001"][col["online"]] == 0
    assert rows["wz-001"][col["cameras"]] == 2
    assert rows["hz-001"][col["online_share"]] == pytest.approx(2 / 3)
    assert rows["xx-001"][col["cameras"]] == 0  # requires a camera, has none

    offline = run_query(db, _find("cameras", "离线摄像头列表"))
    col = {name: i for i, (name, _) in enumerate(offline.columns)}
    reasons = {(r[col["site"]], r[col["camera"]]): r[col["reason"]] for r in offline.rows}
    assert reasons == {
        ("hz-001", "cam-3"): "offline",
        ("wz-001", "cam-1"): "heartbeat overdue",
        ("wz-001", "cam-2"): "never seen",
    }

    pie = run_query(db, _find("detectors", "烟感状态"))
    states = {name: n for (name, _), n in zip(pie.columns, pie.rows[0], strict=True) if n}
    assert states == {"normal": 1, "alarm": 1, "fault": 1, "offline": 1}

    low = run_query(db, _find("detectors", "低电量烟感"))
    assert [(r[0], r[3]) for r in low.rows] == [("wz-001", "smoke-2"), ("wz-001", "smoke-1")]

    open_by_kind = run_query(db, _find("alerts", "未解决告警"))
    assert {(r[0], r[1]) for r in open_by_kind.rows} == {
        ("fire_alarm", "critical"),
        ("camera_offline", "major"),
        ("detector_fault", "minor"),
    }


def test_a_typo_in_panel_sql_fails(db: psycopg.Connection[Any]) -> None:
    """The harness really executes the SQL: a misspelt column is an error, not a silent pass."""
    query = _find("ingest", "每分钟读数")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        run_query(db, query, query.target["rawSql"].replace("received_at", "recieved_at"))


def test_the_daily_panel_shows_finished_days_only(db: psycopg.Connection[Any]) -> None:
    """On TimescaleDB the continuous aggregate also answers for days still running (real-time aggregation):
    the panel leaves out what the timeline has not finished, as the plain rollup's table does."""
    daily = run_query(db, _find("cameras", "每日实时联网"))
    row = db.execute("SELECT horizon FROM timeline_progress").fetchone()
    assert row is not None
    zone = ZoneInfo("Asia/Shanghai")
    last_finished = (row[0].astimezone(zone) - timedelta(days=1)).date()  # the horizon is not at a midnight
    days = [r[0] for r in daily.rows]
    assert days, "no days with the test data"
    assert days[0] == last_finished, (days, row[0])


@pytest.mark.timescale_only
def test_panels_answer_the_same_from_compressed_chunks(db: psycopg.Connection[Any], database_url: str) -> None:
    """Every panel over readings gives the same rows once they are compressed (the policy compresses chunks older
    than 7 days; here every chunk, by hand, so the panels' recent data is compressed too). The others read no
    compressed table (and show ages, which move between two runs)."""
    over_readings = [q for q in QUERIES if "readings" in q.target["rawSql"]]
    assert over_readings
    before = {str(q): run_query(db, q) for q in over_readings}
    db.commit()  # compress_chunk takes an exclusive lock: no reader may stay in a transaction
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') c")
    compressed, chunks = compressed_chunks(database_url)
    assert compressed == chunks > 0
    after = {str(q): run_query(db, q) for q in over_readings}
    assert after == before
