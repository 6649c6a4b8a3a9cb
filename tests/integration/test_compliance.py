"""``GET /api/v1/sites/{site}/compliance`` on hand-made heartbeat histories in a real PostgreSQL.

The readings are inserted with SQL (no agent, no broker): arrival and sender times are chosen
so that every figure below can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.auth import Role, create_token
from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import Conn, connect
from tests.support import ADMIN_TOKEN, Api, insert_heartbeats

pytestmark = [pytest.mark.integration, pytest.mark.storage]

D = datetime(2025, 3, 1, tzinfo=UTC)  # the day under test
DAY = 86_400


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The histories are dated 2025: keep the supervisor's retention from pruning them.
    return settings.updated(readings_retention_days=100 * 365)


def at(seconds: float) -> float:
    """Epoch seconds ``seconds`` after midnight starting the day under test."""
    return D.timestamp() + seconds


def iso(seconds: float) -> str:
    return (D + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def every(first: float, last: float, step: float = 60.0) -> list[float]:
    n = round((last - first) / step) + 1
    return [first + i * step for i in range(n)]


def add_site(conn: Conn, site: str, *, cameras_required: int, heartbeat_s: int | None) -> None:
    conn.execute(
        "INSERT INTO sites (id, name, city, county, cameras_required, created_at)"
            " VALUES (%s, %s, 'Hangzhou', 'Xihu', %s, '2000-01-01Z')",
        (site, f"{site} school", cameras_required),
    )
    if heartbeat_s is not None:
        conn.execute(
            "INSERT INTO agents (site, online, boot, heartbeat_s, status_at) VALUES (%s, true, 'b1', %s, %s)",
            (site, heartbeat_s, D),
        )


def add_device(conn: Conn, site: str, device: str, kind: str = "camera") -> None:
    conn.execute("INSERT INTO devices (site, id, kind, declared, created_at)"
        " VALUES (%s, %s, %s, true, '2000-01-01Z')", (site, device, kind))


def add_heartbeats(
    conn: Conn, site: str, device: str, arrivals: list[float], *, delay: float, stream: str = "ok"
) -> None:
    """Camera heartbeats arriving at ``arrivals`` (day offsets, s), each sent ``delay`` s earlier."""
    insert_heartbeats(conn, site, device, [at(a) for a in arrivals], delay=delay, stream=stream)


@dataclass
class World:
    gateway: Gateway
    tokens: dict[str, str]

    def api(self, who: str = "admin") -> Api:
        return Api(self.gateway.api_url, self.tokens[who])

    def compliance(self, site: str, who: str = "admin", **params: Any) -> dict[str, Any]:
        response = self.api(who).http.get(f"/api/v1/sites/{site}/compliance", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def world(gateway: Gateway) -> World:
    with connect(gateway.settings.database.url) as conn:
        # site-a: agent heartbeat 30 s, so the timeout is 30 x 3 = 90 s.
        add_site(conn, "site-a", cameras_required=3, heartbeat_s=30)
        for device in ("cam-1", "cam-2", "cam-3"):
            add_device(conn, "site-a", device)
        add_device(conn, "site-a", "smoke-1", "smoke")
        # cam-1: every minute all day and beyond, 40 ms late.
        add_heartbeats(conn, "site-a", "cam-1", every(-600, DAY + 600), delay=0.04)
        # cam-2: 12 s late; silent from 23:59 the day before until 01:00; stream frozen 12:00-12:10.
        add_heartbeats(conn, "site-a", "cam-2", every(-3600, -60), delay=12.0)
        add_heartbeats(conn, "site-a", "cam-2", every(3600, 43_140), delay=12.0)
        add_heartbeats(conn, "site-a", "cam-2", every(43_200, 43_800), delay=12.0, stream="frozen")
        add_heartbeats(conn, "site-a", "cam-2", every(43_860, DAY - 60), delay=12.0)
        # cam-3: registered, never reported.  smoke-1: not a camera, ignored.
        conn.execute(
            "INSERT INTO readings (ts, received_at, site, device, kind, boot, seq, status, payload)"
            " VALUES (%s, %s, 'site-a', 'smoke-1', 'smoke', 'b1', 0, 'normal', '{}')",
            (D, D),
        )

        # site-b: no agent row, so the default heartbeat 60 s: timeout 180 s.
        add_site(conn, "site-b", cameras_required=1, heartbeat_s=None)
        add_device(conn, "site-b", "cam-1")
        # Every minute until 23:49:30 (online until 23:52:30), silent until 00:20 the next day.
        add_heartbeats(conn, "site-b", "cam-1", every(-30, DAY - 630), delay=0.5)
        add_heartbeats(conn, "site-b", "cam-1", every(DAY + 1200, 2 * DAY - 60), delay=0.5)

        add_site(conn, "site-c", cameras_required=0, heartbeat_s=60)  # no cameras at all
        conn.commit()
        tokens = {
            "fire_brigade": create_token(conn, role=Role.FIRE_BRIGADE, name="brigade-7"),
            "inspector": create_token(conn, role=Role.INSPECTOR, name="inspector-li"),
            "institution": create_token(conn, role=Role.INSTITUTION, name="school-a", site="site-a"),
            "admin": ADMIN_TOKEN,
        }
    return World(gateway, tokens)


def test_site_with_outages_stream_fault_late_and_silent_cameras(world: World) -> None:
    body = world.compliance("site-a", **{"from": iso(0), "to": iso(DAY)})
    # cam-2: last heartbeat before the day at -60 s is online until +30 s (timeout 90 s, not the
    # default 180 s); back at 01:00; frozen from 12:00 until the ok heartbeat of 12:11.
    cam2_outages = [3600 - 30, 43_860 - 43_200]
    assert body == {
        "site": "site-a",
        "from": "2025-03-01T00:00:00Z",
        "to": "2025-03-02T00:00:00Z",
        "compliant": False,
        "status": "not_compliant",
        "measured_from": "2025-03-01T00:00:00Z",
        "reasons": [
            "cam-2 online 95.1 % < 99 %",
            "cam-2 median delay 12.0 s > 10 s",
            "cam-3 online 0.0 % < 99 %",
            "2 of 3 required cameras reporting",
        ],
        "reason_codes": [  # the same, for translation (docs/compliance.md)
            {"code": "camera_online_below", "device": "cam-2", "pct": 95.1, "limit_pct": 99.0,
             "longest_outage_s": 3570.0},
            {"code": "camera_delay_above", "device": "cam-2", "delay_s": 12.0, "limit_s": 10.0},
            {"code": "camera_online_below", "device": "cam-3", "pct": 0.0, "limit_pct": 99.0,
             "longest_outage_s": float(DAY)},
            {"code": "cameras_missing", "reporting": 2, "required": 3},
        ],
        "cameras_required": 3,
        "cameras_reporting": 2,
        "thresholds": {"online_share": 0.99, "delay_p50_s": 10.0},
        "cameras": [
            {"device": "cam-1", "online_share": 1.0, "outages": 0, "longest_outage_s": 0.0,
             "delay_p50_s": 0.04, "delay_p95_s": 0.04},
            {"device": "cam-2", "online_share": pytest.approx((DAY - sum(cam2_outages)) / DAY), "outages": 2,
             "longest_outage_s": 3570.0, "delay_p50_s": 12.0, "delay_p95_s": 12.0},
            {"device": "cam-3", "online_share": 0.0, "outages": 1, "longest_outage_s": float(DAY),
             "delay_p50_s": None, "delay_p95_s": None},
        ],
    }
    assert body["cameras"][1]["online_share"] == pytest.approx(82_170 / 86_400)


def test_outage_crossing_midnight_per_day_and_over_both_days(world: World) -> None:
    day1 = world.compliance("site-b", **{"from": iso(0), "to": iso(DAY)})
    day2 = world.compliance("site-b", **{"from": iso(DAY), "to": iso(2 * DAY)})
    both = world.compliance("site-b", **{"from": iso(0), "to": iso(2 * DAY)})
    figures = [(b["cameras"][0]["outages"], b["cameras"][0]["longest_outage_s"]) for b in (day1, day2, both)]
    assert figures == [(1, 450.0), (1, 1200.0), (1, 1650.0)]
    assert day1["cameras"][0]["online_share"] == pytest.approx(85_950 / 86_400)
    assert day2["cameras"][0]["online_share"] == pytest.approx(85_200 / 86_400)
    assert both["cameras"][0]["online_share"] == pytest.approx(171_150 / 172_800)
    assert day1["reasons"] == []  # 99.48 % >= 99 %
    assert day1["compliant"]
    assert day2["reasons"] == ["cam-1 online 98.6 % < 99 %"]
    assert both["cameras"][0]["delay_p50_s"] == 0.5

    # The hour around midnight: the camera came back at 00:20.
    hour = world.compliance("site-b", **{"from": iso(DAY - 1800), "to": iso(DAY + 1800)})
    assert hour["cameras"][0]["online_share"] == pytest.approx((1800 - 450 + 600) / 3600)
    assert hour["cameras"][0]["outages"] == 1


def test_a_period_before_any_data_and_a_site_without_cameras(world: World) -> None:
    body = world.compliance("site-b", **{"from": "2025-02-01T00:00:00Z", "to": "2025-02-02T00:00:00Z"})
    assert body["cameras"] == [{"device": "cam-1", "online_share": 0.0, "outages": 1, "longest_outage_s": 86_400.0,
                                "delay_p50_s": None, "delay_p95_s": None}]
    assert body["reasons"] == ["cam-1 online 0.0 % < 99 %", "0 of 1 required cameras reporting"]

    body = world.compliance("site-c", **{"from": iso(0), "to": iso(DAY)})
    assert (body["compliant"], body["reasons"], body["cameras"], body["cameras_reporting"]) == (True, [], [], 0)


def test_offsets_other_than_utc_name_the_same_instants(world: World) -> None:
    body = world.compliance("site-b", **{"from": "2025-03-01T08:00:00+08:00", "to": "2025-03-02T08:00:00+08:00"})
    assert (body["from"], body["to"]) == ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z")
    assert body["cameras"][0]["online_share"] == pytest.approx(85_950 / 86_400)


def test_default_period_is_the_last_24_hours(world: World) -> None:
    body = world.compliance("site-a")
    start = datetime.fromisoformat(body["from"])
    end = datetime.fromisoformat(body["to"])
    assert end - start == timedelta(hours=24)
    body = world.compliance("site-a", to=iso(DAY))
    assert (body["from"], body["to"]) == ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": iso(DAY), "to": iso(DAY)}, 400),
        ({"from": iso(DAY), "to": iso(0)}, 400),
        ({"from": iso(0), "to": iso(366 * DAY + 1)}, 400),
        ({"from": "2025-03-01T00:00:00", "to": iso(DAY)}, 400),  # no offset
        ({"from": "yesterday", "to": iso(DAY)}, 422),
        ({"from": iso(0), "to": iso(366 * DAY)}, 200),
    ],
    ids=["empty", "reversed", "too-long", "naive", "garbage", "366-days"],
)
def test_bad_periods(world: World, params: dict[str, str], code: int) -> None:
    response = world.api().http.get("/api/v1/sites/site-a/compliance", params=params)
    assert response.status_code == code, response.text
    if code != 200:
        assert "detail" in response.json()


def test_roles(world: World) -> None:
    period = {"from": iso(0), "to": iso(DAY)}
    expected = world.compliance("site-a", **period)
    for who in ("fire_brigade", "inspector", "institution"):
        assert world.compliance("site-a", who, **period) == expected
    assert world.compliance("site-b", "inspector", **period)["site"] == "site-b"
    institution = world.api("institution").http
    response = institution.get("/api/v1/sites/site-b/compliance", params=period)
    assert response.status_code == 403, response.text
    assert institution.get("/api/v1/sites/nowhere/compliance", params=period).status_code == 403
    assert world.api().http.get("/api/v1/sites/nowhere/compliance", params=period).status_code == 404
    anonymous = world.api().http.get(
        "/api/v1/sites/site-a/compliance", params=period, headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
