"""The problem list on a real PostgreSQL: alerts and readings inserted with SQL, the sweep run with an
explicit ``now``, then the problems, their history and the API with its role rules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.api.app import create_app
from gateway.compliance.verdicts import Thresholds, site_compliance
from gateway.config import Settings
from gateway.problems import actions as problem_actions
from gateway.rules.engine import Heartbeats
from gateway.store import problems as problem_store
from gateway.store.db import Conn, connect, open_pool
from gateway.supervisor import Supervisor
from tests.support import ADMIN_TOKEN, role_tokens

pytestmark = [pytest.mark.integration, pytest.mark.storage]

T = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
MIN, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, bootstrap_token=SecretStr(ADMIN_TOKEN), problem_sweep_s=0.01)


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as c:
        for site, city, county in (("s1", "杭州市", "西湖区"), ("s2", "杭州市", "上城区"), ("s3", "宁波市", "鄞州区")):
            c.execute("INSERT INTO sites (id, name, city, county, created_at)"
                " VALUES (%s, %s, %s, %s, '2000-01-01Z')", (site, site, city, county))
        c.commit()
        yield c


def add_alert(conn: Conn, site: str, device: str | None, kind: str, opened_at: datetime) -> int:
    row = conn.execute(
        "INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at)"
        " VALUES (%s, %s, %s, 'major', 'open', %s, %s) RETURNING id",
        (site, device, kind, opened_at, opened_at),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row["id"])


def resolve_alert(conn: Conn, alert_id: int, at: datetime) -> None:
    conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = %s WHERE id = %s", (at, alert_id))
    conn.commit()


def sweep(conn: Conn, settings: Settings, at: datetime, *, compliance: bool = True) -> problem_actions.SweepResult:
    return problem_actions.sweep(conn, at.timestamp(), settings, compliance=compliance)


def problems(conn: Conn, at: datetime, **filters: Any) -> list[dict[str, Any]]:
    return [problem_store.problem_json(r) for r in problem_store.list_problems(conn, at, **filters)]


def only(conn: Conn, at: datetime, **filters: Any) -> dict[str, Any]:
    (problem,) = problems(conn, at, **filters)
    return problem_store.get(conn, problem["id"], at)


def actions(problem: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(h["action"], h["status"], h["by"]) for h in problem["history"]]


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# --- the sweep ----------------------------------------------------------------------------------


def test_exit_blocked_opens_goes_overdue_and_is_rectified_after_the_clear_period(
    conn: Conn, settings: Settings
) -> None:
    alert = add_alert(conn, "s1", "exit-1", "exit_blocked", T - 5 * MIN)
    assert sweep(conn, settings, T) == problem_actions.SweepResult(opened=1)
    p = only(conn, T)
    assert {k: p[k] for k in ("site", "device", "kind", "status", "opened_at", "deadline", "rectified_at",
                               "closed_by")} == {
        "site": "s1", "device": "exit-1", "kind": "exit_blocked", "status": "open", "opened_at": iso(T),
        "deadline": iso(T + DAY), "rectified_at": None, "closed_by": None,
    }
    assert p["detail"] == {"alert_id": alert, "since": iso(T - 5 * MIN)}
    assert sweep(conn, settings, T + HOUR) == problem_actions.SweepResult()  # still one problem

    late = T + DAY
    assert only(conn, late)["status"] == "overdue", "computed between sweeps"
    assert sweep(conn, settings, late) == problem_actions.SweepResult(overdue=1)

    resolve_alert(conn, alert, late + MIN)
    sweep(conn, settings, late + 2 * MIN)  # clear from here
    sweep(conn, settings, late + 2 * MIN + HOUR - timedelta(seconds=1))
    assert only(conn, late + HOUR)["status"] == "overdue", "not clear for the whole period yet"
    assert sweep(conn, settings, late + 2 * MIN + HOUR) == problem_actions.SweepResult(rectified=1)
    p = only(conn, late + 2 * HOUR)
    assert p["status"] == "rectified"
    assert p["rectified_at"] == iso(late + 2 * MIN + HOUR)
    assert p["closed_by"] is None
    assert actions(p) == [("opened", "open", "system"), ("overdue", "overdue", "system"),
                          ("rectified", "rectified", "system")]
    assert p["history"][2]["note"] == f"condition clear since {iso(late + 2 * MIN)}"


def test_condition_back_within_the_clear_period_keeps_the_problem(conn: Conn, settings: Settings) -> None:
    first = add_alert(conn, "s1", "smoke-1", "detector_fault", T)
    sweep(conn, settings, T)
    resolve_alert(conn, first, T + MIN)
    sweep(conn, settings, T + 2 * MIN)
    add_alert(conn, "s1", "smoke-1", "detector_fault", T + 30 * MIN)
    sweep(conn, settings, T + 30 * MIN)
    sweep(conn, settings, T + 2 * HOUR)
    p = only(conn, T + 2 * HOUR)
    assert p["status"] == "open"
    assert p["deadline"] == iso(T + 7 * DAY)
    assert actions(p) == [("opened", "open", "system")]


def test_kinds_from_alerts(conn: Conn, settings: Settings) -> None:
    add_alert(conn, "s1", "smoke-1", "detector_offline", T - HOUR)
    add_alert(conn, "s1", "smoke-2", "detector_fault", T - HOUR)
    add_alert(conn, "s2", "cam-1", "camera_offline", T - DAY + MIN)   # not a day yet
    add_alert(conn, "s2", "cam-2", "camera_offline", T - DAY)         # a day exactly
    add_alert(conn, "s2", "cam-3", "camera_stream_fault", T - 2 * DAY)  # not a problem kind
    add_alert(conn, "s3", None, "agent_offline", T - 2 * DAY)           # nor this
    add_alert(conn, "s3", "exit-9", "exit_blocked", T + MIN)            # after now
    sweep(conn, settings, T)
    found = {(p["site"], p["device"], p["kind"], p["deadline"]) for p in problems(conn, T)}
    assert found == {
        ("s1", "smoke-1", "detector_offline", iso(T + 3 * DAY)),
        ("s1", "smoke-2", "detector_fault", iso(T + 7 * DAY)),
        ("s2", "cam-2", "camera_offline", iso(T + 3 * DAY)),
    }
    sweep(conn, settings, T + MIN)
    assert {p["device"] for p in problems(conn, T + MIN, kind="camera_offline")} == {"cam-1", "cam-2"}


def test_deadlines_are_configurable(conn: Conn, settings: Settings) -> None:
    add_alert(conn, "s1", "exit-1", "exit_blocked", T)
    sweep(conn, settings.updated(problem_deadline_days={**settings.problems.deadline_days, "exit_blocked": 3}), T)
    assert only(conn, T)["deadline"] == iso(T + 3 * DAY)


def add_smoke_tests(conn: Conn, site: str, device: str, times: list[datetime]) -> None:
    for seq, ts in enumerate(times):
        conn.execute(
            "INSERT INTO readings VALUES (%s, %s, %s, %s, 'smoke', 'b', %s, 'test', '{}')", (ts, ts, site, device, seq)
        )
    conn.commit()


def test_detectors_tested_fewer_than_twice_this_month(conn: Conn, settings: Settings) -> None:
    for device in ("smoke-1", "smoke-2", "smoke-3"):
        conn.execute("INSERT INTO devices (site, id, kind, created_at)"
            " VALUES ('s1', %s, 'smoke', '2000-01-01Z')", (device,))
    conn.execute("INSERT INTO devices (site, id, kind, created_at) VALUES ('s1', 'cam-1', 'camera', '2000-01-01Z')")
    # Months begin at midnight in Asia/Shanghai: 1 March 00:00 there is 28 Feb 16:00 UTC.
    march = datetime(2025, 2, 28, 16, 0, tzinfo=UTC)
    add_smoke_tests(conn, "s1", "smoke-1", [march - MIN, march + HOUR, march + HOUR + 10 * MIN])  # 1 test in March
    add_smoke_tests(conn, "s1", "smoke-2", [march + DAY, march + 5 * DAY])                       # 2 tests
    sweep(conn, settings, T, compliance=False)
    found = {p["device"]: p for p in problems(conn, T, kind="detector_untested")}
    assert set(found) == {"smoke-1", "smoke-3"}
    assert found["smoke-1"]["detail"] == {"tests": 1, "required": 2, "last_test": iso(march + HOUR + 10 * MIN),
                                          "since": iso(march)}
    assert found["smoke-3"]["detail"]["tests"] == 0
    assert found["smoke-1"]["deadline"] == iso(T + 30 * DAY)

    add_smoke_tests(conn, "s1", "smoke-1", [T + MIN])  # the second test
    sweep(conn, settings, T + 2 * MIN, compliance=False)
    sweep(conn, settings, T + 2 * MIN + HOUR, compliance=False)
    statuses = {p["device"]: p["status"] for p in problems(conn, T + 2 * HOUR, kind="detector_untested")}
    assert statuses == {"smoke-1": "rectified", "smoke-3": "open"}


def add_camera(conn: Conn, site: str, device: str, *, cameras_required: int, beats: tuple[datetime, datetime] | None,
               stream: str = "ok") -> None:
    conn.execute("UPDATE sites SET cameras_required = %s WHERE id = %s", (cameras_required, site))
    conn.execute("INSERT INTO agents (site, online, boot, heartbeat_s, status_at) VALUES (%s, true, 'b', 60, %s)"
                 " ON CONFLICT DO NOTHING", (site, T - 2 * DAY))
    conn.execute("INSERT INTO devices (site, id, kind, created_at)"
        " VALUES (%s, %s, 'camera', '2000-01-01Z')", (site, device))
    if beats is not None:
        conn.execute(
            "INSERT INTO readings SELECT g, g + interval '50 milliseconds', %s, %s, 'camera', 'b',"
            " extract(epoch FROM g)::bigint, %s, '{}' FROM generate_series(%s::timestamptz, %s, interval '1 minute') g",
            (site, device, stream, *beats),
        )
    conn.commit()


def test_not_compliant_sites_match_the_compliance_api(conn: Conn, settings: Settings) -> None:
    add_camera(conn, "s1", "cam-1", cameras_required=1, beats=(T - DAY - MIN, T))            # online all day
    add_camera(conn, "s2", "cam-1", cameras_required=2, beats=(T - DAY - MIN, T))            # 1 of 2 reporting
    add_camera(conn, "s3", "cam-1", cameras_required=1, beats=(T - 12 * HOUR, T))            # half a day
    sweep(conn, settings, T, compliance=False)
    assert problems(conn, T) == [], "not evaluated"
    sweep(conn, settings, T)
    found = {p["site"]: p for p in problems(conn, T, kind="not_compliant")}
    assert set(found) == {"s2", "s3"}
    for site, problem in found.items():
        assert problem["device"] is None
        assert problem["deadline"] == iso(T + 7 * DAY)
        expected = site_compliance(conn, site, T - DAY, T, thresholds=Thresholds(), heartbeats=Heartbeats())
        assert expected is not None
        assert problem["detail"]["reasons"] == expected.verdict.reasons
    assert found["s2"]["detail"]["reasons"] == ["1 of 2 required cameras reporting"]

    # Between compliance evaluations the problems stay; once evaluated compliant, the clock starts.
    conn.execute("UPDATE sites SET cameras_required = 1 WHERE id = 's2'")
    conn.commit()
    sweep(conn, settings, T + MIN, compliance=False)
    sweep(conn, settings, T + 2 * HOUR, compliance=False)
    assert {p["site"] for p in problems(conn, T + 2 * HOUR, status="open")} == {"s2", "s3"}


def test_supervisor_tick_sweeps_at_most_every_problem_sweep_s(conn: Conn, settings: Settings) -> None:
    pool = open_pool(settings.database.url, max_size=2)
    try:
        supervisor = Supervisor(settings.updated(problem_sweep_s=60.0), pool)
        supervisor.tick(T.timestamp())
        add_alert(conn, "s1", "exit-1", "exit_blocked", T)
        supervisor.tick((T + 59 * timedelta(seconds=1)).timestamp())
        assert problems(conn, T + MIN) == []
        supervisor.tick((T + MIN).timestamp())
        assert [p["kind"] for p in problems(conn, T + MIN)] == ["exit_blocked"]
    finally:
        pool.close()


# --- hand actions -------------------------------------------------------------------------------


def test_close_by_hand_holds_back_the_same_condition_and_reopen_is_only_closed_by_hand(
    conn: Conn, settings: Settings
) -> None:
    alert = add_alert(conn, "s1", "exit-1", "exit_blocked", T)
    sweep(conn, settings, T)
    pid = only(conn, T)["id"]
    problem_actions.close(conn, pid, T + MIN, "inspector-li", "false alarm: a delivery")
    sweep(conn, settings, T + 2 * MIN)  # the alert is still open: no new problem
    p = only(conn, T + 2 * MIN)
    assert (p["status"], p["closed_by"], p["rectified_at"]) == ("rectified", "inspector-li", iso(T + MIN))
    with pytest.raises(problem_actions.ProblemConflict):
        problem_actions.close(conn, pid, T + 3 * MIN, "inspector-li", None)

    problem_actions.reopen(conn, pid, T + 4 * MIN, "inspector-wang", "still blocked on my visit")
    resolve_alert(conn, alert, T + 5 * MIN)
    sweep(conn, settings, T + 6 * MIN)
    sweep(conn, settings, T + 3 * HOUR)  # clear for hours: a problem reopened by hand stays open
    problem_actions.add_note(conn, pid, T + 3 * HOUR, "inspector-wang", "owner promised to clear it")
    sweep(conn, settings, T + DAY)
    p = only(conn, T + DAY)
    assert p["status"] == "overdue"
    assert (p["closed_by"], p["rectified_at"]) == (None, None)
    assert actions(p) == [
        ("opened", "open", "system"), ("closed", "rectified", "inspector-li"),
        ("reopened", "open", "inspector-wang"), ("note", "open", "inspector-wang"),
        ("overdue", "overdue", "system"),
    ]
    assert [h["note"] for h in p["history"]][1:4] == [
        "false alarm: a delivery", "still blocked on my visit", "owner promised to clear it"]

    # A new blockage after the hand closing is a new problem.
    problem_actions.close(conn, pid, T + DAY + MIN, "inspector-wang", None)
    add_alert(conn, "s1", "exit-1", "exit_blocked", T + DAY + 2 * MIN)
    sweep(conn, settings, T + DAY + 3 * MIN)
    assert [p["status"] for p in problems(conn, T + DAY + 3 * MIN)] == ["open", "rectified"]
    with pytest.raises(problem_actions.ProblemConflict):
        problem_actions.reopen(conn, pid, T + DAY + 4 * MIN, "inspector-wang", None)


# --- the API ------------------------------------------------------------------------------------


@pytest.fixture
def api(settings: Settings, conn: Conn) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = role_tokens(settings.database.url, "s1")
    pool = open_pool(settings.database.url, max_size=4)
    try:
        with TestClient(create_app(settings, pool, broker_ready=lambda: True)) as client:
            yield client, tokens
    finally:
        pool.close()


def as_(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def test_api_lists_filters_and_pages(api: tuple[TestClient, dict[str, str]], conn: Conn, settings: Settings) -> None:
    client, tokens = api
    now = datetime.now(UTC)
    add_alert(conn, "s1", "exit-1", "exit_blocked", now - HOUR)
    add_alert(conn, "s2", "smoke-1", "detector_fault", now - HOUR)
    add_alert(conn, "s3", "smoke-1", "detector_offline", now - 4 * DAY)
    sweep(conn, settings, now - 4 * DAY + MIN)  # s3's problem: deadline 3 days later, overdue now
    sweep(conn, settings, now)

    body = client.get("/api/v1/problems", headers=as_(tokens, "inspector")).json()
    assert [p["site"] for p in body["items"]] == ["s2", "s1", "s3"]  # newest first
    assert body["next_cursor"] is None
    assert set(body["items"][0]) == {"id", "site", "device", "kind", "status", "opened_at", "deadline",
                                     "rectified_at", "closed_by", "detail"}
    first = client.get("/api/v1/problems", params={"limit": 2}, headers=as_(tokens, "inspector")).json()
    rest = client.get("/api/v1/problems", params={"limit": 2, "cursor": first["next_cursor"]},
                      headers=as_(tokens, "inspector")).json()
    assert [p["site"] for p in first["items"] + rest["items"]] == ["s2", "s1", "s3"]
    assert rest["next_cursor"] is None

    def sites(**params: str) -> list[str]:
        response = client.get("/api/v1/problems", params=params, headers=as_(tokens, "inspector"))
        assert response.status_code == 200, response.text
        return [p["site"] for p in response.json()["items"]]

    assert sites(status="overdue") == ["s3"]
    assert sites(status="open") == ["s2", "s1"]
    assert sites(kind="exit_blocked") == ["s1"]
    assert sites(city="杭州市") == ["s2", "s1"]
    assert sites(county="上城区") == ["s2"]
    assert sites(site="s3") == ["s3"]
    assert client.get("/api/v1/problems", params={"status": "bogus"},
                      headers=as_(tokens, "inspector")).status_code == 422

    # Institutions see only their own site.
    own = client.get("/api/v1/problems", headers=as_(tokens, "institution")).json()
    assert [p["site"] for p in own["items"]] == ["s1"]
    assert client.get("/api/v1/problems", params={"site": "s2"},
                      headers=as_(tokens, "institution")).status_code == 403
    assert client.get("/api/v1/problems").status_code == 401


def test_api_detail_and_hand_actions_by_role(
    api: tuple[TestClient, dict[str, str]], conn: Conn, settings: Settings
) -> None:
    client, tokens = api
    now = datetime.now(UTC)
    add_alert(conn, "s1", "exit-1", "exit_blocked", now - HOUR)
    add_alert(conn, "s2", "exit-1", "exit_blocked", now - HOUR)
    sweep(conn, settings, now)
    own, other = (p["id"] for p in sorted(problems(conn, now), key=lambda p: p["site"]))

    detail = client.get(f"/api/v1/problems/{own}", headers=as_(tokens, "institution")).json()
    assert detail["site"] == "s1"
    assert [(h["action"], h["by"]) for h in detail["history"]] == [("opened", "system")]
    assert set(detail["history"][0]) == {"at", "action", "status", "by", "note"}
    assert client.get(f"/api/v1/problems/{other}", headers=as_(tokens, "institution")).status_code == 404
    assert client.get("/api/v1/problems/999999", headers=as_(tokens, "inspector")).status_code == 404

    for role, code in (("institution", 403), ("fire_brigade", 403)):
        response = client.post(f"/api/v1/problems/{own}/close", json={"note": "x"}, headers=as_(tokens, role))
        assert response.status_code == code, response.text
    assert client.post(f"/api/v1/problems/{other}/close", headers=as_(tokens, "institution")).status_code == 404

    note = client.post(f"/api/v1/problems/{own}/note", json={"note": "visited"}, headers=as_(tokens, "inspector"))
    assert note.status_code == 200, note.text
    assert client.post(f"/api/v1/problems/{own}/note", json={}, headers=as_(tokens, "inspector")).status_code == 400
    closed = client.post(f"/api/v1/problems/{own}/close", json={"note": "fixed"}, headers=as_(tokens, "inspector"))
    assert closed.status_code == 200, closed.text
    assert (closed.json()["status"], closed.json()["closed_by"]) == ("rectified", "inspector-li")
    again = client.post(f"/api/v1/problems/{own}/close", headers=as_(tokens, "inspector"))
    assert again.status_code == 409
    reopened = client.post(f"/api/v1/problems/{own}/reopen", json={"note": "not fixed"},
                           headers=as_(tokens, "admin"))
    assert reopened.status_code == 200, reopened.text
    body = reopened.json()
    assert (body["status"], body["closed_by"], body["rectified_at"]) == ("open", None, None)
    assert [(h["action"], h["by"], h["note"]) for h in body["history"]] == [
        ("opened", "system", None), ("note", "inspector-li", "visited"), ("closed", "inspector-li", "fixed"),
        ("reopened", "ops", "not fixed"),
    ]
    assert client.post(f"/api/v1/problems/{own}/reopen", headers=as_(tokens, "admin")).status_code == 409
