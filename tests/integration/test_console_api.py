"""What the console of issue 13 needs from the API, against a real PostgreSQL (no broker: alerts
and problems are written as the gateway writes them): site contacts, refusals with codes, the
compound alert that is not resolved by hand while it holds, closing a problem whose alert is
open, and no compliance verdict before a site reports.
"""

# ruff: noqa: RUF001 - the inspectors' texts use Chinese full-width punctuation on purpose
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.problems import actions as problem_actions
from gateway.reports.ledger import ledger_csv, ledger_rows
from gateway.rules import engine
from gateway.rules.model import AlertKey, AlertKind, Raise
from gateway.store import alerts as alert_store
from gateway.store.db import Conn, connect, from_epoch, open_pool
from gateway.store.sites import SiteCsvError, read_sites_csv
from tests.support import ADMIN_TOKEN, role_tokens

pytestmark = [pytest.mark.integration, pytest.mark.storage]

SITE = "hz-0001"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, bootstrap_token=SecretStr(ADMIN_TOKEN))


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as c:
        yield c


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[tuple[TestClient, dict[str, str]]]:
    pool = open_pool(settings.database.url, max_size=4)
    app = create_app(settings, pool, broker_ready=lambda: True)
    try:
        with TestClient(app) as c:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            r = c.put(f"/api/v1/sites/{SITE}", headers=admin, json={
                "name": "启明星培训学校", "city": "杭州市", "county": "西湖区", "category": "dance",
                "address": "文三路 100 号", "cameras_required": 1, "contact_name": "王老师",
                "contact_phone": "0571-8888 6666"})
            assert r.status_code == 200, r.text
            yield c, role_tokens(settings.database.url, SITE)
    finally:
        pool.close()


def auth(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def raise_alerts(conn: Conn, *changes: tuple[str | None, AlertKind, dict[str, Any]]) -> None:
    """Alerts opened as the rules open them, then the site's compound rule."""
    raises = [Raise(AlertKey(SITE, device, kind), detail) for device, kind, detail in changes]
    opened = engine.apply({}, raises)
    compound = engine.evaluate_compound(SITE, opened)
    with conn.transaction():
        alert_store.persist(conn, [*raises, *compound], from_epoch(time.time()))


def alert_id(c: TestClient, tokens: dict[str, str], kind: str) -> int:
    items = c.get("/api/v1/alerts", params={"site": SITE, "kind": kind}, headers=auth(tokens, "admin")).json()["items"]
    unresolved = [a for a in items if a["state"] != "resolved"]
    assert len(unresolved) == 1, items
    return int(unresolved[0]["id"])


def test_site_contact_in_the_registry_api_and_csv(
    client: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    c, tokens = client
    site = c.get(f"/api/v1/sites/{SITE}", headers=auth(tokens, "fire_brigade")).json()
    assert (site["contact_name"], site["contact_phone"]) == ("王老师", "0571-8888 6666")
    listed = c.get("/api/v1/sites", headers=auth(tokens, "inspector")).json()["items"]
    assert listed[0]["contact_name"] == "王老师"
    # The contact columns are optional: a file without them still imports; with them they are read.
    old = tmp_path / "old.csv"
    old.write_text("id,name,city,county,category,address,cameras_required\ns1,A,杭州市,西湖区,舞蹈,路 1 号,1\n",
                   encoding="utf-8")
    assert read_sites_csv(old)[0].contact_name == ""
    new = tmp_path / "new.csv"
    new.write_text("id,name,city,county,category,address,cameras_required,contact_name,contact_phone\n"
                   "s1,A,杭州市,西湖区,舞蹈,路 1 号,1,李主任,13800000000\n", encoding="utf-8")
    record = read_sites_csv(new)[0]
    assert (record.contact_name, record.contact_phone) == ("李主任", "13800000000")
    short = tmp_path / "short.csv"
    short.write_text("id,name,city,county,category,address,cameras_required,contact_name\ns1,A,杭州市,西湖区,舞蹈\n",
                     encoding="utf-8")
    with pytest.raises(SiteCsvError, match="line 2"):
        read_sites_csv(short)
    missing = tmp_path / "missing.csv"
    missing.write_text("id,name,contact_phone\ns1,A,1\n", encoding="utf-8")
    with pytest.raises(SiteCsvError, match=r"line 1 .*missing \['city'"):
        read_sites_csv(missing)


def test_refusals_carry_codes_and_the_compound_alert_keeps_its_escalation(
    client: tuple[TestClient, dict[str, str]], conn: Conn
) -> None:
    c, tokens = client
    brigade = auth(tokens, "fire_brigade")
    raise_alerts(conn, ("smoke-1", AlertKind.FIRE_ALARM, {"state": "alarm", "obscuration_pct": 9.5}),
                 ("exit-1", AlertKind.EXIT_BLOCKED, {"blocked_ratio": 0.65, "blocked_since": time.time() - 600}))
    compound = alert_id(c, tokens, "fire_alarm_exit_blocked")
    # escalated while no one acknowledged it (as the supervisor marks it)
    conn.execute("UPDATE alerts SET detail = detail || '{\"escalated\": true}' WHERE id = %s", (compound,))
    conn.commit()

    r = c.post(f"/api/v1/alerts/{compound}/resolve", headers=brigade)
    assert r.status_code == 409
    body = r.json()
    assert body["error"]["code"] == "ack_required"
    assert body["detail"] == body["error"]["message"]  # the old shape stays: detail is the text
    assert "acknowledged" in body["detail"]

    assert c.post(f"/api/v1/alerts/{compound}/ack", headers=brigade).status_code == 200
    r = c.post(f"/api/v1/alerts/{compound}/ack", headers=brigade)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_acknowledged")
    # Resolved by hand while the fire alarm and the blocked exit hold, it would open again at once as a
    # new alert, unacknowledged and without its escalation: refused.
    r = c.post(f"/api/v1/alerts/{compound}/resolve", headers=brigade)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "condition_holds")
    same = c.get(f"/api/v1/alerts/{compound}", headers=brigade).json()
    assert (same["state"], same["detail"]["escalated"]) == ("acknowledged", True)
    assert alert_id(c, tokens, "fire_alarm_exit_blocked") == compound

    # Once the exit is resolved (acknowledged or not: it is major), the compound alert ends by itself.
    exit_alert = alert_id(c, tokens, "exit_blocked")
    assert c.post(f"/api/v1/alerts/{exit_alert}/resolve", headers=brigade).status_code == 200
    assert c.get(f"/api/v1/alerts/{compound}", headers=brigade).json()["state"] == "resolved"
    r = c.post(f"/api/v1/alerts/{compound}/resolve", headers=brigade)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_resolved")
    r = c.post(f"/api/v1/alerts/{exit_alert}/ack", headers=auth(tokens, "inspector"))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")


def test_closing_a_problem_whose_alert_is_open_needs_a_note(
    client: tuple[TestClient, dict[str, str]], conn: Conn, settings: Settings
) -> None:
    c, tokens = client
    inspector = auth(tokens, "inspector")
    raise_alerts(conn, ("exit-1", AlertKind.EXIT_BLOCKED, {"blocked_ratio": 0.8, "blocked_since": None}))
    problem_actions.sweep(conn, time.time(), settings, compliance=False)
    conn.commit()
    problems = c.get("/api/v1/problems", params={"site": SITE, "kind": "exit_blocked"}, headers=inspector).json()
    problem = problems["items"][0]["id"]

    r = c.post(f"/api/v1/problems/{problem}/close", headers=inspector, json={})
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "alert_still_open"
    assert error["alert_id"] == alert_id(c, tokens, "exit_blocked")
    r = c.post(f"/api/v1/problems/{problem}/close", headers=inspector, json={"note": "  "})
    assert r.json()["error"]["code"] == "alert_still_open"
    r = c.post(f"/api/v1/problems/{problem}/close", headers=inspector, json={"note": "现场复查：传感器误报"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["history"][-1]["note"]) == ("rectified", "现场复查：传感器误报")
    r = c.post(f"/api/v1/problems/{problem}/close", headers=inspector, json={"note": "again"})
    assert r.json()["error"]["code"] == "already_rectified"
    r = c.post(f"/api/v1/problems/{problem}/note", headers=inspector, json={})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "note_required")


def test_no_verdict_before_the_site_reports(
    client: tuple[TestClient, dict[str, str]], conn: Conn, settings: Settings
) -> None:
    c, tokens = client
    inspector = auth(tokens, "inspector")
    # Registered just now, no agent yet: nothing to judge, in the last 24 h or on any past day.
    body = c.get(f"/api/v1/sites/{SITE}/compliance", headers=inspector).json()
    assert (body["compliant"], body["status"], body["cameras"]) == (None, "not_yet_reporting", [])
    assert body["reason_codes"] == [{"code": "not_yet_reporting", "required": 1}]
    daily = c.get(f"/api/v1/sites/{SITE}/compliance/daily", headers=inspector).json()
    assert daily["days"] == [] or all(d["compliant"] is None for d in daily["days"])
    now = from_epoch(time.time())
    rows = ledger_rows(conn, now - timedelta(days=7), now, settings=settings)
    assert rows[0].compliant is None
    assert "未接入" in ledger_csv(rows).decode("utf-8-sig")

    # The agent's birth declares a camera: measured from then (the camera silent since: not compliant).
    conn.execute("INSERT INTO agents (site, online, boot, heartbeat_s, status_at) VALUES (%s, true, 'b', 60, now())",
                 (SITE,))
    conn.execute("INSERT INTO devices (site, id, kind, declared) VALUES (%s, 'cam-1', 'camera', true)", (SITE,))
    conn.commit()
    time.sleep(0.05)  # a period that ends after the birth
    body = c.get(f"/api/v1/sites/{SITE}/compliance", headers=inspector).json()
    assert body["status"] == "not_compliant"
    assert body["measured_from"] > body["from"]
    assert [r["code"] for r in body["reason_codes"]] == ["camera_online_below", "cameras_missing"]
    # A period wholly before the birth still has no verdict.
    early = c.get(f"/api/v1/sites/{SITE}/compliance", headers=inspector,
                  params={"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z"}).json()
    assert early["status"] == "not_yet_reporting"
