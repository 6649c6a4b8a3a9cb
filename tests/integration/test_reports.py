"""The ledger and the city summary report on hand-made data in a real PostgreSQL.

Heartbeats and problems are inserted with SQL; every cell below is worked out by hand. No agent
row for the sites with cameras, so the timeout is the default heartbeat 60 s x 3 = 180 s. The period
is 2025-03-01 (UTC).
"""

# ruff: noqa: RUF001 - the inspectors' texts use Chinese full-width punctuation on purpose

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.reports.ledger import LEDGER_HEADER, ledger_csv, ledger_rows, ledger_xlsx
from gateway.reports.summary import SUMMARY_HEADER, summary, summary_csv, summary_html, summary_xlsx
from gateway.store.db import Conn, connect, open_pool
from tests.support import ADMIN_TOKEN, insert_heartbeats, role_tokens

pytestmark = pytest.mark.integration

D = datetime(2025, 3, 1, tzinfo=UTC)
DAY_S = 86_400
H, DAY = timedelta(hours=1), timedelta(days=1)
END = D + DAY
A1_SHARE = 43_320 / DAY_S  # cam-2's last heartbeat at 11:59 keeps it online until 12:02


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, bootstrap_token=SecretStr(ADMIN_TOKEN))


def every(first: float, last: float, step: float = 60.0) -> list[float]:
    return [first + i * step for i in range(round((last - first) / step) + 1)]


def add_site(conn: Conn, site: str, name: str, city: str, county: str, category: str, cameras_required: int) -> None:
    conn.execute(
        "INSERT INTO sites (id, name, city, county, category, cameras_required, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, '2000-01-01Z')",
        (site, name, city, county, category, cameras_required),
    )


def add_agent(conn: Conn, site: str) -> None:
    """An agent that reported long ago (its site has a verdict), declaring no devices."""
    conn.execute("INSERT INTO agents (site, online, boot, heartbeat_s, status_at) VALUES (%s, true, 'b', 60,"
                 " '2000-01-01Z')", (site,))


def add_camera(conn: Conn, site: str, device: str, arrivals: list[float], *, delay: float) -> None:
    """A camera and its heartbeats arriving at ``arrivals`` (s after D), each sent ``delay`` s earlier."""
    conn.execute("INSERT INTO devices (site, id, kind, declared, created_at)"
        " VALUES (%s, %s, 'camera', true, '2000-01-01Z')", (site, device))
    insert_heartbeats(conn, site, device, [D.timestamp() + a for a in arrivals], delay=delay)


def add_problem(
    conn: Conn, site: str, device: str, opened_at: datetime, deadline: datetime,
    rectified_at: datetime | None = None, closed_by: str | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO problems (site, device, kind, status, opened_at, since, deadline, rectified_at, closed_by,"
        " updated_at) VALUES (%s, %s, 'exit_blocked', %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (site, device, "open" if rectified_at is None else "rectified", opened_at, opened_at, deadline,
         rectified_at, closed_by, opened_at),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def add_history(conn: Conn, problem: int, at: datetime, action: str, by: str) -> None:
    conn.execute(
        "INSERT INTO problem_history (problem_id, at, action, status, by) VALUES (%s, %s, %s, 'rectified', %s)",
        (problem, at, action, by),
    )


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as c:
        # a1: two cameras; cam-2 falls silent at noon (online 50.1 %, median delay 2 s): not compliant.
        add_site(c, "a1", "<b>x</b>", "杭州市", "西湖区", "=体育", 2)
        add_camera(c, "a1", "cam-1", every(-60, DAY_S - 60), delay=0.5)
        add_camera(c, "a1", "cam-2", every(-60, 43_140), delay=2.0)
        # a2: one camera all day, 0.25 s late: compliant.
        add_site(c, "a2", "Site two", "杭州市", "西湖区", "舞蹈", 1)
        add_camera(c, "a2", "cam-1", every(-60, DAY_S - 60), delay=0.25)
        # a3: no cameras required, none present: compliant.
        add_site(c, "a3", "三号", "杭州市", "上城区", "", 0)
        add_agent(c, "a3")
        # b1: one camera required, none registered: not compliant.
        add_site(c, "b1", "宁波一号", "宁波市", "鄞州区", "户外", 1)
        add_agent(c, "b1")

        # a1's problems
        p1 = add_problem(c, "a1", "exit-1", D + H, D + 2 * H)  # in the period, unrectified, overdue
        add_history(c, p1, D + 6 * H, "note", "system")  # the system does not inspect
        add_problem(c, "a1", "exit-2", D - 5 * DAY, D - 4 * DAY, D - DAY)  # rectified before: out
        p3 = add_problem(c, "a1", "exit-3", D - 5 * DAY, D - 4 * DAY, D + 3 * H, "inspector-li")  # carried, closed
        add_history(c, p3, D + 3 * H, "closed", "inspector-li")  # a1 inspected
        add_problem(c, "a1", "exit-4", D - 2 * DAY, D + 10 * DAY)  # carried over, open, not overdue yet
        add_problem(c, "a1", "exit-5", D + 2 * DAY, D + 3 * DAY)  # after the period: out
        add_problem(c, "a1", "exit-6", D + 5 * H, D + 30 * DAY, END + H)  # rectified only after the end
        # a2: a problem of the past; notes before the period and at its end (exclusive) do not count
        p8 = add_problem(c, "a2", "exit-1", D - 3 * DAY, D - 2 * DAY, D - 2 * DAY)
        add_history(c, p8, D - H, "note", "inspector-li")
        add_history(c, p8, END, "note", "inspector-li")
        # a3: rectified automatically within the period
        p7 = add_problem(c, "a3", "exit-1", D + H, D + 2 * DAY, D + 2 * H)
        add_history(c, p7, D + 2 * H, "rectified", "system")
        # b1: overdue; an admin's note makes it inspected
        p9 = add_problem(c, "b1", "exit-1", D + H, D + H + timedelta(seconds=1))
        add_history(c, p9, D + 4 * H, "note", "ops")
        c.commit()
        yield c


A1 = ["a1", "<b>x</b>", "杭州市", "西湖区", "'=体育", "2", "2", "50.1%", "2.00", "否",
      "摄像头 cam-2 在线率 50.1 %，低于 99 %", "4", "1", "3", "1"]
A2 = ["a2", "Site two", "杭州市", "西湖区", "舞蹈", "1", "1", "100.0%", "0.25", "是", "", "0", "0", "0", "0"]
A3 = ["a3", "三号", "杭州市", "上城区", "", "0", "0", "", "", "是", "", "1", "1", "0", "0"]
B1 = ["b1", "宁波一号", "宁波市", "鄞州区", "户外", "1", "0", "", "", "否", "应接入摄像头 1 路，实际上报 0 路",
      "1", "0", "1", "1"]


def read_csv(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf")
    text = body.decode("utf-8-sig")
    assert "\r\n" in text
    assert "\n" not in text.replace("\r\n", "")
    return list(csv.reader(io.StringIO(text, newline="")))


def test_ledger_csv_cell_by_cell(conn: Conn, settings: Settings) -> None:
    rows = ledger_rows(conn, D, END, settings=settings)
    assert [r.site for r in rows] == ["b1", "a3", "a1", "a2"]  # by city, county, id (code points)
    assert read_csv(ledger_csv(rows)) == [list(LEDGER_HEADER), B1, A3, A1, A2]
    a1 = rows[2]
    assert a1.online_share_min == pytest.approx(A1_SHARE)
    assert (a1.delay_p50_max_s, a1.cameras_reporting, a1.compliant) == (2.0, 2, False)


def test_ledger_xlsx_cell_by_cell(conn: Conn, settings: Settings) -> None:
    rows = ledger_rows(conn, D, END, city="杭州市", settings=settings)
    book = openpyxl.load_workbook(io.BytesIO(ledger_xlsx(rows, title="杭州市 工作台账")))
    sheet = book.active
    assert sheet is not None
    assert sheet.title == "杭州市 工作台账"
    assert sheet["A1"].value == "杭州市 工作台账"
    assert [c.value for c in sheet[2]] == list(LEDGER_HEADER)
    assert all(c.font.b for c in sheet[2])
    assert sheet.freeze_panes == "C3"
    assert sheet.column_dimensions["B"].width == 28
    values = [[c.value for c in row] for row in sheet.iter_rows(min_row=3)]
    assert values == [
        ["a3", "三号", "杭州市", "上城区", None, 0, 0, None, None, "是", None, 1, 1, 0, 0],
        ["a1", "<b>x</b>", "杭州市", "西湖区", "'=体育", 2, 2, pytest.approx(A1_SHARE), 2.0, "否",
         "摄像头 cam-2 在线率 50.1 %，低于 99 %", 4, 1, 3, 1],
        ["a2", "Site two", "杭州市", "西湖区", "舞蹈", 1, 1, 1.0, 0.25, "是", None, 0, 0, 0, 0],
    ]
    assert sheet["H4"].number_format == "0.0%"
    assert sheet["I4"].number_format == "0.00"


def test_ledger_filters_by_city_and_county(conn: Conn, settings: Settings) -> None:
    def sites(city: str | None = None, county: str | None = None) -> list[str]:
        return [r.site for r in ledger_rows(conn, D, END, city=city, county=county, settings=settings)]

    assert sites(city="杭州市", county="西湖区") == ["a1", "a2"]
    assert sites(county="上城区") == ["a3"]
    assert sites(city="宁波市") == ["b1"]
    assert sites(city="温州市") == []


def test_a_period_still_running_is_taken_at_now(conn: Conn, settings: Settings) -> None:
    # At 02:00: p1 overdue (deadline 02:00), p3 not closed yet (overdue since 4 days before), p6 not
    # opened; the cameras were all online.
    rows = {r.site: r for r in ledger_rows(conn, D, END, settings=settings, now=D + 2 * H)}
    a1 = rows["a1"]
    assert (a1.problems, a1.rectified, a1.unrectified, a1.overdue) == (3, 0, 3, 2)
    assert (a1.compliant, a1.online_share_min, a1.reasons) == (True, 1.0, ())
    # Before the period: no compliance figures, empty cells.
    early = {r.site: r for r in ledger_rows(conn, D, END, settings=settings, now=D - H)}
    assert (early["a1"].compliant, early["a1"].cameras_reporting, early["a1"].problems) == (None, None, 2)
    assert read_csv(ledger_csv([early["a2"]]))[1][6:11] == ["", "", "", "", ""]


SUMMARY = [
    ["上城区", "1", "0", "0.0%", "1", "100.0%", "1", "1", "0", "0"],
    ["西湖区", "2", "1", "50.0%", "1", "50.0%", "4", "1", "3", "1"],
    ["合计", "3", "1", "33.3%", "2", "66.7%", "5", "2", "3", "1"],
]


def test_summary_numbers_csv_and_xlsx(conn: Conn, settings: Settings) -> None:
    report = summary(conn, D, END, city="杭州市", settings=settings)
    t = report.total
    assert (t.institutions, t.inspected, t.compliant, t.problems, t.rectified, t.unrectified, t.overdue) == (
        3, 1, 2, 5, 2, 3, 1)
    assert t.compliance_rate == pytest.approx(2 / 3)
    assert read_csv(summary_csv(report)) == [list(SUMMARY_HEADER), *SUMMARY]

    ningbo = summary(conn, D, END, city="宁波市", settings=settings).total
    assert (ningbo.institutions, ningbo.inspected, ningbo.compliant, ningbo.overdue) == (1, 1, 0, 1)

    sheet = openpyxl.load_workbook(io.BytesIO(summary_xlsx(report))).active
    assert sheet is not None
    assert [c.value for c in sheet[2]] == list(SUMMARY_HEADER)
    assert all(c.font.b for c in sheet[2])
    assert sheet.freeze_panes == "B3"
    assert [[c.value for c in row] for row in sheet.iter_rows(min_row=3)] == [
        ["上城区", 1, 0, 0.0, 1, 1.0, 1, 1, 0, 0],
        ["西湖区", 2, 1, 0.5, 1, 0.5, 4, 1, 3, 1],
        ["合计", 3, 1, pytest.approx(1 / 3), 2, pytest.approx(2 / 3), 5, 2, 3, 1],
    ]
    assert (sheet["D5"].number_format, sheet["F5"].number_format) == ("0.0%", "0.0%")


def test_summary_html_has_the_figures_and_escapes(conn: Conn, settings: Settings) -> None:
    page = summary_html(summary(conn, D, END, city="杭州市", settings=settings))
    assert "@media print" in page
    for heading in SUMMARY_HEADER:
        assert f"<th>{heading}</th>" in page
    assert ('<tr class="total"><td>合计</td><td class="n">3</td><td class="n">1</td><td class="n">33.3%</td>'
            '<td class="n">2</td><td class="n">66.7%</td><td class="n">5</td><td class="n">2</td>'
            '<td class="n">3</td><td class="n">1</td></tr>') in page
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in page  # a1 needs attention (not compliant)
    assert "<b>x</b>" not in page
    assert "Site two" not in page  # compliant, nothing unrectified
    assert "摄像头 cam-2 在线率 50.1 %，低于 99 %" in page  # reasons in Chinese (issue 13)
    # The period in words, in the gateway's zone (Asia/Shanghai): 2025-03-01T00:00Z is 08:00 there.
    assert "<title>杭州市 检查情况汇总 2025年3月1日 08:00至2025年3月2日 08:00</title>" in page


# --- the API --------------------------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = role_tokens(settings.database.url, "a1")
    pool = open_pool(settings.database.url, max_size=4)
    app = create_app(settings, pool, broker_ready=lambda: True)
    try:
        with TestClient(app) as c:
            yield c, tokens
    finally:
        pool.close()


PERIOD = {"from": "2025-03-01T00:00:00Z", "to": "2025-03-02T00:00:00Z"}


def test_api_ledger_and_summary(client: tuple[TestClient, dict[str, str]]) -> None:
    c, tokens = client
    auth = {"Authorization": f"Bearer {tokens['inspector']}"}
    r = c.get("/api/v1/reports/ledger", params={**PERIOD, "city": "杭州市", "county": "西湖区"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="ledger-___-___-20250301-20250302.csv"')
    assert "filename*=UTF-8''ledger-%E6%9D%AD%E5%B7%9E%E5%B8%82-" in disposition
    assert read_csv(r.content) == [list(LEDGER_HEADER), A1, A2]

    r = c.get("/api/v1/reports/ledger", params={**PERIOD, "format": "xlsx"},
              headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert r.status_code == 200, r.text
    sheet = openpyxl.load_workbook(io.BytesIO(r.content)).active
    assert sheet is not None
    assert [row[0].value for row in sheet.iter_rows(min_row=3)] == ["b1", "a3", "a1", "a2"]
    assert sheet.title == "台账 2025年3月1日 08：00至2025年3月2日 08：00"[:31]  # a date people read, not ISO
    assert sheet["A1"].value == "工作台账 2025年3月1日 08:00至2025年3月2日 08:00"

    r = c.get("/api/v1/reports/summary", params={**PERIOD, "city": "杭州市", "format": "csv"}, headers=auth)
    assert r.status_code == 200, r.text
    assert read_csv(r.content)[1:] == SUMMARY
    r = c.get("/api/v1/reports/summary", params={**PERIOD, "city": "杭州市"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="summary-___-20250301-20250302.html"')
    assert "&lt;b&gt;x&lt;/b&gt;" in r.text
    r = c.get("/api/v1/reports/summary", params={**PERIOD, "city": "杭州市", "format": "xlsx"}, headers=auth)
    assert r.status_code == 200
    assert r.content.startswith(b"PK")


def test_api_roles_and_bad_input(client: tuple[TestClient, dict[str, str]]) -> None:
    c, tokens = client
    for role in ("institution", "fire_brigade"):
        auth = {"Authorization": f"Bearer {tokens[role]}"}
        assert c.get("/api/v1/reports/ledger", params=PERIOD, headers=auth).status_code == 403
        assert c.get("/api/v1/reports/summary", params={**PERIOD, "city": "杭州市"}, headers=auth).status_code == 403
    assert c.get("/api/v1/reports/ledger", params=PERIOD).status_code == 401
    auth = {"Authorization": f"Bearer {tokens['inspector']}"}
    assert c.get("/api/v1/reports/summary", params=PERIOD, headers=auth).status_code == 422  # no city
    assert c.get("/api/v1/reports/ledger", params={**PERIOD, "format": "pdf"}, headers=auth).status_code == 422
    bad = {"from": "2025-03-02T00:00:00Z", "to": "2025-03-01T00:00:00Z"}
    assert c.get("/api/v1/reports/ledger", params=bad, headers=auth).status_code == 400
    naive = {"from": "2025-03-01T00:00:00", "to": "2025-03-02T00:00:00Z"}
    assert c.get("/api/v1/reports/ledger", params=naive, headers=auth).status_code == 400


# --- the command line ---------------------------------------------------------------------------


def test_cli_writes_the_ledger_and_the_summary(conn: Conn, settings: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    env["SAFEGUARD_DATABASE_URL"] = settings.database.url
    period = ["--from", D.isoformat(), "--to", END.isoformat()]

    def safeguard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "safeguard.cli", "inspect", *args], capture_output=True,
                              text=True, env=env, timeout=60, check=False)

    ledger = tmp_path / "ledger.csv"
    result = safeguard("ledger", *period, "--out", str(ledger))
    assert result.returncode == 0, result.stderr
    assert ledger.read_bytes() == ledger_csv(ledger_rows(conn, D, END, settings=settings))
    page = tmp_path / "summary.html"
    result = safeguard("summary", *period, "--city", "杭州市", "--out", str(page))
    assert result.returncode == 0, result.stderr
    assert page.read_text(encoding="utf-8") == summary_html(summary(conn, D, END, city="杭州市", settings=settings))
    result = safeguard("summary", *period, "--city", "杭州市", "--out", str(tmp_path / "summary.pdf"))
    assert result.returncode == 2
    assert "--out must end in .csv, .xlsx, .html" in result.stderr
    # Which institutions fail the real-time interface requirement, and why: the ledger's verdicts.
    rows = ledger_rows(conn, D, END, settings=settings)
    result = safeguard("compliance", *period, "--failing")
    assert result.returncode == 0, result.stderr
    failing = [r for r in rows if r.compliant is False]
    assert failing
    assert result.stdout.splitlines() == ["site\tname\tcity\tcounty\tcompliant\treasons"] + [
        f"{r.site}\t{r.name}\t{r.city}\t{r.county}\tNO\t{'; '.join(r.reasons)}" for r in failing]
    assert f"{len(failing)} of {len(rows)} institutions fail" in result.stderr
    result = safeguard("compliance", *period, "--city", "杭州市")
    assert len(result.stdout.splitlines()) == 1 + sum(r.city == "杭州市" for r in rows)
    result = safeguard("ledger", "--from", "2025-03-01T00:00:00", "--to", END.isoformat(), "--out", str(ledger))
    assert result.returncode == 2
    assert "give the time's zone" in result.stderr
