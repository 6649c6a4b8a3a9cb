"""Daily compliance kept by the timeline and the rollup equals, day by day, the compliance computed on
request from the raw heartbeats, on a real PostgreSQL: plain (the rollup's table) and TimescaleDB (a
continuous aggregate), with late commits, and on TimescaleDB over compressed chunks."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.auth import Role, create_token
from gateway.compliance.rollup import advance, catch_up, rollup
from gateway.compliance.verdicts import Thresholds, daily_compliance, site_compliance
from gateway.config import Settings
from gateway.rules.engine import Heartbeats
from gateway.runtime import Gateway
from gateway.store.daily import COLUMNS, PLAIN_BUCKET, daily_query
from gateway.store.db import Conn, connect
from tests.support import ADMIN_TOKEN, Api, compressed_chunks, insert_heartbeats, run_timescale_jobs

pytestmark = [pytest.mark.integration, pytest.mark.storage]

ZONE = "Asia/Shanghai"
TZ = ZoneInfo(ZONE)
FIRST = date(2025, 3, 1)
DAYS = 4
D0 = datetime(2025, 3, 1, tzinfo=TZ).timestamp()  # local midnight starting the first day
DAY = 86_400
HEARTBEATS = Heartbeats(default_heartbeat_s=60, missed_heartbeats=3)
THRESHOLDS = Thresholds()


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as conn:
        yield conn


def add_site(conn: Conn, site: str, cameras: list[str], *, heartbeat_s: int | None, required: int) -> None:
    conn.execute("INSERT INTO sites (id, name, city, county, cameras_required, created_at)"
        " VALUES (%s, %s, 'Hangzhou', 'Xihu', %s, '2000-01-01Z')",
                 (site, site, required))
    if heartbeat_s is not None:
        conn.execute("INSERT INTO agents (site, online, boot, heartbeat_s, status_at)"
                     " VALUES (%s, true, 'b1', %s, now())", (site, heartbeat_s))
    for camera in cameras:
        conn.execute("INSERT INTO devices (site, id, kind, declared, created_at)"
            " VALUES (%s, %s, 'camera', true, '2000-01-01Z')", (site, camera))


def beats(rng: random.Random, first: float, last: float, step: float) -> list[float]:
    """Heartbeats every ``step`` s with jitter, and now and then a silence of up to an hour."""
    out, t = [], first
    while t < last:
        out.append(round(t, 3))
        t += step + rng.uniform(-2, 2) + (rng.expovariate(1 / 1800) if rng.random() < 0.01 else 0)
    return out


def on_request(conn: Conn, site: str, day: date) -> dict[str, Any]:
    start = datetime(day.year, day.month, day.day, tzinfo=TZ)
    result = site_compliance(conn, site, start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC),
                             thresholds=THRESHOLDS, heartbeats=HEARTBEATS)
    assert result is not None
    return {"date": day.isoformat(), **result.json()}


def kept(conn: Conn, site: str, days: int = DAYS) -> list[dict[str, Any]]:
    result = daily_compliance(conn, site, FIRST, FIRST + timedelta(days=days - 1), zone=ZONE, thresholds=THRESHOLDS,
                              heartbeats=HEARTBEATS)
    assert result is not None
    days_: list[dict[str, Any]] = result.json()["days"]
    return days_


def run(conn: Conn, now: float) -> Any:
    return catch_up(conn, now, settle_s=60, zone=ZONE, heartbeats=HEARTBEATS)


@pytest.fixture
def history(conn: Conn) -> None:
    rng = random.Random(7)
    # site-a (heartbeat 30 s: timeout 90 s): a steady camera, one with silences and a frozen
    # stretch over local midnight, one added on the third day, one never heard from.
    add_site(conn, "site-a", ["cam-1", "cam-2", "cam-3", "cam-4"], heartbeat_s=30, required=3)
    insert_heartbeats(conn, "site-a", "cam-1", [D0 - 600 + 30 * i for i in range(DAYS * 2880 + 40)], delay=0.2)
    insert_heartbeats(conn, "site-a", "cam-2", beats(rng, D0 - 3600, D0 + DAY - 900, 30), delay=11.5)
    insert_heartbeats(conn, "site-a", "cam-2", beats(rng, D0 + DAY - 880, D0 + DAY + 1200, 30), delay=3,
                      stream="frozen")
    insert_heartbeats(conn, "site-a", "cam-2", beats(rng, D0 + DAY + 1230, D0 + DAYS * DAY, 30), delay=0.5)
    insert_heartbeats(conn, "site-a", "cam-3", beats(rng, D0 + 2 * DAY + 43_200, D0 + DAYS * DAY, 30), delay=1)
    # site-b: no agent row (default heartbeat 60 s: timeout 180 s); heartbeats exactly 180 s apart
    # at times, so liveness ends exactly as the next one arrives, and one ends at local midnight.
    add_site(conn, "site-b", ["cam-1"], heartbeat_s=None, required=1)
    insert_heartbeats(conn, "site-b", "cam-1", [D0 - 180 + 180 * i for i in range(DAYS * 480)], delay=2)
    conn.commit()


@pytest.mark.usefixtures("history")
def test_kept_days_equal_the_figures_on_request(conn: Conn) -> None:
    # The supervisor's runs, at irregular times, with the rollup now and then.
    now = D0 + 60
    for step in [3_000, 40_000, 47_000, 1, 86_000, 5, 60_000, 20_000, 90_000]:
        now += step
        run(conn, now)
        if step > 40_000:
            rollup(conn, zone=ZONE)
    days = [FIRST + timedelta(days=n) for n in range(DAYS)]
    for site in ("site-a", "site-b"):
        assert kept(conn, site) == [on_request(conn, site, day) for day in days]
    # The day kept as it was rolled up equals the day aggregated on read (not rolled up yet).
    before = kept(conn, "site-a")
    rollup(conn, zone=ZONE)
    assert kept(conn, "site-a") == before
    # Rows for cameras heard from: site-a cam-1 and cam-2 every day, cam-3 from the third, cam-4
    # never (its days are offline throughout without a row), site-b cam-1 every day.
    rows = conn.execute("SELECT count(*) AS n FROM compliance_daily WHERE day >= %s AND day < %s",
                        (datetime.fromtimestamp(D0, UTC), datetime.fromtimestamp(D0 + DAYS * DAY, UTC))).fetchone()
    assert rows == {"n": 4 + 4 + 2 + 4}


@pytest.mark.usefixtures("history")
def test_a_reading_committed_late_rewrites_its_day(conn: Conn) -> None:
    run(conn, D0 + 3 * DAY)
    rollup(conn, zone=ZONE)
    before = kept(conn, "site-b", days=2)
    # Heartbeats arriving in the first day's ... committed only now (after a database outage, say).
    insert_heartbeats(conn, "site-b", "cam-1", [D0 + 40_000 + 0.5, D0 + 40_090], delay=1, stream="dark")
    conn.commit()
    done = run(conn, D0 + 3 * DAY + 600)
    assert done.rewritten == [("site-b", "cam-1")]
    rollup(conn, zone=ZONE)
    after = kept(conn, "site-b", days=2)
    assert after == [on_request(conn, "site-b", FIRST + timedelta(days=n)) for n in range(2)]
    assert after[0] != before[0]
    assert after[1] == before[1]
    assert after[0]["cameras"][0]["outages"] == before[0]["cameras"][0]["outages"] + 1


@pytest.mark.usefixtures("history")
def test_days_past_the_horizon_are_not_kept_yet(conn: Conn) -> None:
    assert kept(conn, "site-a") == []  # no run yet
    run(conn, D0 + 2 * DAY + 30)  # the horizon is a minute behind: the second day is not over
    assert [d["date"] for d in kept(conn, "site-a")] == ["2025-03-01"]
    run(conn, D0 + 2 * DAY + 61)
    assert [d["date"] for d in kept(conn, "site-a")] == ["2025-03-01", "2025-03-02"]


def test_unknown_site(conn: Conn) -> None:
    assert daily_compliance(conn, "nowhere", FIRST, FIRST, zone=ZONE, thresholds=THRESHOLDS,
                            heartbeats=HEARTBEATS) is None


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The histories are dated 2025: keep the supervisor's retention from pruning them.
    return settings.updated(readings_retention_days=100 * 365)


def test_api_daily_days_equal_the_compliance_of_each_day(gateway: Gateway) -> None:
    with connect(gateway.settings.database.url) as conn:
        add_site(conn, "site-a", ["cam-1", "cam-2"], heartbeat_s=30, required=2)
        add_site(conn, "site-b", ["cam-1"], heartbeat_s=30, required=1)
        insert_heartbeats(conn, "site-a", "cam-1", [D0 + 30 * i for i in range(2 * 2880)], delay=0.1)
        insert_heartbeats(conn, "site-a", "cam-2", [D0 + DAY + 30 * i for i in range(100)], delay=15)
        token = create_token(conn, role=Role.INSTITUTION, name="school-b", site="site-b")
        conn.commit()
    assert gateway.supervisor is not None
    gateway.supervisor.keep_daily(time.time())

    admin = Api(gateway.api_url, ADMIN_TOKEN).http
    response = admin.get("/api/v1/sites/site-a/compliance/daily", params={"from": "2025-03-01", "to": "2025-03-02"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["site"], body["time_zone"]) == ("site-a", ZONE)
    for day in body["days"]:
        start = datetime.fromisoformat(day["date"]).replace(tzinfo=TZ)
        one = admin.get("/api/v1/sites/site-a/compliance",
                        params={"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()}).json()
        assert day == {"date": day["date"], **one}
    assert [(d["date"], d["compliant"], d["reasons"]) for d in body["days"]] == [
        ("2025-03-01", False, ["cam-2 online 0.0 % < 99 %", "1 of 2 required cameras reporting"]),
        ("2025-03-02", False, [f"cam-2 online {100 * (99 * 30 + 90) / DAY:.1f} % < 99 %",
                               "cam-2 median delay 15.0 s > 10 s"]),
    ]

    # Bad requests, unknown sites and other institutions' sites.
    for params in ({"from": "2025-03-02", "to": "2025-03-01"}, {"from": "2024-01-01", "to": "2025-03-01"}):
        response = admin.get("/api/v1/sites/site-a/compliance/daily", params=params)
        assert response.status_code == 400, params
    assert admin.get("/api/v1/sites/site-a/compliance/daily", params={"from": "March"}).status_code == 422
    assert admin.get("/api/v1/sites/nowhere/compliance/daily").status_code == 404
    school_b = Api(gateway.api_url, token).http
    assert school_b.get("/api/v1/sites/site-a/compliance/daily").status_code == 403
    assert school_b.get("/api/v1/sites/site-b/compliance/daily").status_code == 200


@pytest.mark.usefixtures("history")
def test_a_long_history_is_taken_in_over_bounded_runs(conn: Conn) -> None:
    now, runs, shown = D0 + DAYS * DAY + 120, 0, []
    while True:
        done = advance(conn, now, settle_s=60, zone=ZONE, heartbeats=HEARTBEATS, max_span_s=6 * 3600)
        runs += 1
        shown.append(len(kept(conn, "site-a")))
        if not done.behind:
            break
    # 6 hours a run, from the local midnight before the first heartbeats (the day before D0) to
    # the horizon a minute after the fourth day: 5 days and 60 s, 21 runs.
    assert runs == 21
    assert shown == sorted(shown)  # the days appear as every camera has passed them
    assert shown[-1] == DAYS
    rollup(conn, zone=ZONE)
    for site in ("site-a", "site-b"):
        assert kept(conn, site) == [on_request(conn, site, FIRST + timedelta(days=n)) for n in range(DAYS)]


# --- the continuous aggregate (TimescaleDB), and late commits on both paths ----------------------------------


def _materialised(conn: Conn) -> list[dict[str, Any]]:
    """compliance_daily's rows for the days the rollup materialised (the aggregate's, on TimescaleDB)."""
    return conn.execute(
        f"SELECT {COLUMNS} FROM compliance_daily WHERE day < (SELECT materialized_until FROM timeline_progress)"
        " ORDER BY site, device, day"
    ).fetchall()


def _plain_rollup(conn: Conn) -> list[dict[str, Any]]:
    """The plain rollup's query (date_trunc) over the same timeline and days."""
    return conn.execute(
        f"SELECT * FROM ({daily_query(PLAIN_BUCKET)}) d"
        " WHERE day < (SELECT materialized_until FROM timeline_progress) ORDER BY site, device, day",
        {"zone": ZONE},
    ).fetchall()


@pytest.mark.timescale_only
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_aggregate_equals_the_plain_rollup_and_the_figures_on_request(conn: Conn, seed: int) -> None:
    """Random histories written in random runs: the continuous aggregate (time_bucket with the zone)
    holds, row for row, what the plain rollup's query (date_trunc) gives, and each day read equals the
    day computed on request from the raw heartbeats."""
    rng = random.Random(seed)
    add_site(conn, "site-r", ["cam-1", "cam-2", "cam-3"], heartbeat_s=rng.choice([15, 30, 60]), required=3)
    for camera in ("cam-1", "cam-2", "cam-3"):
        first = D0 - rng.uniform(0, 7200) + rng.choice([0, DAY])
        insert_heartbeats(conn, "site-r", camera, beats(rng, first, D0 + DAYS * DAY - rng.uniform(0, DAY), 30),
                          delay=rng.uniform(0, 15), stream=rng.choice(["ok", "ok", "ok", "frozen"]))
    conn.commit()
    now = D0
    while now < D0 + (DAYS + 1) * DAY:
        now += rng.uniform(60, 40_000)
        run(conn, now)
        if rng.random() < 0.5:
            rollup(conn, zone=ZONE)
    rollup(conn, zone=ZONE)
    materialised = _materialised(conn)
    assert len(materialised) >= 3 * (DAYS - 1)
    assert materialised == _plain_rollup(conn)
    assert kept(conn, "site-r") == [on_request(conn, "site-r", FIRST + timedelta(days=n)) for n in range(DAYS)]


@pytest.mark.timescale_only
@pytest.mark.usefixtures("history")
def test_compressed_readings_answer_the_same(conn: Conn, database_url: str) -> None:
    """Readings in compressed chunks (the compression policy's work after 7 days) give the same timeline,
    the same kept days and the same figures on request; a late reading into a compressed chunk rewrites
    its day as on the plain path."""
    days = [FIRST + timedelta(days=n) for n in range(DAYS)]
    expected = {site: [on_request(conn, site, day) for day in days] for site in ("site-a", "site-b")}
    conn.commit()  # compressing a chunk takes an exclusive lock: no reader of it may stay in a transaction
    assert run_timescale_jobs(database_url, "policy_compression") == 1
    compressed, chunks = compressed_chunks(database_url)
    assert compressed == chunks >= DAYS
    run(conn, D0 + DAYS * DAY + 120)
    rollup(conn, zone=ZONE)
    for site, figures in expected.items():
        assert [on_request(conn, site, day) for day in days] == figures
        assert kept(conn, site) == figures
    insert_heartbeats(conn, "site-b", "cam-1", [D0 + 40_000 + 0.5, D0 + 40_090], delay=1, stream="dark")
    conn.commit()
    assert run(conn, D0 + DAYS * DAY + 600).rewritten == [("site-b", "cam-1")]
    rollup(conn, zone=ZONE)
    after = kept(conn, "site-b")
    assert after == [on_request(conn, "site-b", day) for day in days]
    assert after[0] != expected["site-b"][0]


@pytest.mark.usefixtures("history")
def test_a_commit_late_after_a_database_outage_is_reflected(conn: Conn, database_url: str, storage: str) -> None:
    """An ingest transaction held up (a database outage) commits after the runs that should have seen its
    heartbeats: the kept days show them at once (aggregated on read until materialised again), and on
    TimescaleDB the aggregate read directly shows them too: real-time for a day not materialised yet, after
    the rollup's refresh for one that was."""
    run(conn, D0 + 3 * DAY + 120)
    rollup(conn, zone=ZONE)  # days 1 to 3 materialised; the fourth is still running
    before = kept(conn, "site-b", days=3)
    with connect(database_url) as held:
        # Stored while the runs go on, committed only after them: its txid is older than their snapshots.
        insert_heartbeats(held, "site-b", "cam-1", [D0 + 40_000 + 0.5, D0 + 40_090], delay=1, stream="dark")
        insert_heartbeats(held, "site-b", "cam-1", [D0 + 3 * DAY + 1_000.5, D0 + 3 * DAY + 1_090], delay=1,
                          stream="dark")
        run(conn, D0 + 3 * DAY + 600)
        assert kept(conn, "site-b", days=3) == before  # not committed yet: nothing to see
        held.commit()
    direct_before = _direct(conn, "site-b", DAYS)
    done = run(conn, D0 + 3 * DAY + 900)
    assert done.rewritten == [("site-b", "cam-1")]
    days = [FIRST + timedelta(days=n) for n in range(3)]
    after = kept(conn, "site-b", days=3)
    assert after == [on_request(conn, "site-b", day) for day in days]  # before any rollup
    assert after[0]["cameras"][0]["outages"] == before[0]["cameras"][0]["outages"] + 1
    if storage == "timescale":
        direct = _direct(conn, "site-b", DAYS)
        assert direct[3] != direct_before[3]  # the running day: real-time aggregation, no refresh
        assert direct[0] == direct_before[0]  # a materialised day: as it was until the rollup refreshes it
        rollup(conn, zone=ZONE)
        direct = _direct(conn, "site-b", DAYS)
        assert direct[0] != direct_before[0]
        assert direct[0]["outages"] == after[0]["cameras"][0]["outages"]
    rollup(conn, zone=ZONE)
    assert kept(conn, "site-b", days=3) == after


def _direct(conn: Conn, site: str, days: int) -> list[dict[str, Any]]:
    """compliance_daily read as Grafana reads it (on TimescaleDB: the real-time aggregate), for cam-1."""
    rows = conn.execute(
        "SELECT day, online_us, outages, heartbeats FROM compliance_daily WHERE site = %s AND device = 'cam-1'"
        " AND day >= %s AND day < %s ORDER BY day",
        (site, datetime.fromtimestamp(D0, UTC), datetime.fromtimestamp(D0 + days * DAY, UTC)),
    ).fetchall()
    return list(rows)
