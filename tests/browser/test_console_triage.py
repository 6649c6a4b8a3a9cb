"""Issue 13 in a real browser (Chromium, zh-CN and English): triage of 3,000 sites and 1,000 open
alerts, the safe lifecycle of a critical alert, and what inspectors can trust and take away.

The large set is written straight into the database (as the gateway writes alerts), the rest is
fed over MQTT. Timings are not asserted here: bench/console.py measures them.
"""

# ruff: noqa: RUF001 - the console's texts use Chinese full-width punctuation on purpose
from __future__ import annotations

import io
import re
import time
from typing import Any

import openpyxl
import pytest
from psycopg.types.json import Jsonb

from gateway.problems import actions as problem_actions
from gateway.store.db import connect
from gateway.store.sites import SiteRecord, upsert_sites
from tests.browser import test_console as base
from tests.browser.test_console import LIVE_S, SITE_A, World, alert_row, open_console, problem_row, shot
from tests.support import wait_for

try:
    from playwright.sync_api import Browser, BrowserContext, Dialog, expect
except ImportError:  # pragma: no cover - test_console skips the module first
    pytest.skip("browser tests need playwright", allow_module_level=True)

# The fixtures of test_console (Chromium, the gateway with three sites and their agents).
browser = base.browser
world = base.world
consoles = base.consoles

pytestmark = pytest.mark.integration

COUNTIES = [("杭州市", c) for c in ("上城区", "拱墅区", "西湖区", "滨江区", "萧山区")] + [
    ("宁波市", c) for c in ("海曙区", "江北区", "鄞州区")]
N_SITES = 3000
N_ALERTS = 1000


def seed_triage(world: World) -> dict[str, Any]:
    """3,000 sites with contacts; 1,000 open alerts on 500 of them (two each), as the rules raise them."""
    sites = [
        SiteRecord(id=f"tri-{i:05d}", name=f"培训点{i:05d}", city=COUNTIES[i % 8][0], county=COUNTIES[i % 8][1],
                   category="dance" if i % 2 else "学科类", address=f"测试路 {i} 号", cameras_required=1,
                   contact_name=f"联系人{i}", contact_phone=f"138{i:08d}")
        for i in range(N_SITES)
    ]
    rows = []
    kind: str
    severity: str
    detail: dict[str, Any]
    for i in range(N_ALERTS):
        site = sites[(i // 2) * 3]
        if i % 2:
            kind, severity, detail = "detector_fault", "minor", {"state": "normal", "battery_pct": 12.0}
        else:
            choices: dict[int, tuple[str, str, dict[str, Any]]] = {
                0: ("fire_alarm", "critical", {"state": "alarm", "obscuration_pct": 9.5, "detector_normal": False}),
                1: ("exit_blocked", "major", {"blocked_ratio": 0.65, "blocked_since": time.time() - 3 * 3600}),
                2: ("exit_blocked", "major", {"blocked_ratio": 0.65, "blocked_since": time.time() - 3 * 3600}),
                3: ("camera_offline", "major", {"last_seen": "2026-01-01T00:00:00Z", "timeout_s": 180}),
            }
            kind, severity, detail = choices.get((i // 2) % 10, ("detector_fault", "minor",
                                                                 {"state": "fault", "battery_pct": 55.0}))
        rows.append((site.id, f"dev-{i}", kind, severity, Jsonb(detail), i))
    with connect(world.gateway.settings.database.url) as conn:
        upsert_sites(conn, sites)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at, detail)"
                " VALUES (%s, %s, %s, %s, 'open', now() - interval '1 hour',"
                " now() - interval '1 hour' + %s * interval '1 second', %s)",
                [(s, d, k, sev, i, det) for s, d, k, sev, det, i in rows],
            )
        conn.commit()
    by_county: dict[str, dict[str, int]] = {}
    for s, _d, _k, sev, _det, _i in rows:
        counts = by_county.setdefault(COUNTIES[int(s[4:]) % 8][1], {"critical": 0, "major": 0, "minor": 0})
        counts[sev] += 1
    return {"sites": sites, "rows": rows, "by_county": by_county}


def test_triage_of_3000_sites_and_1000_open_alerts(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    seeded = seed_triage(world)
    page = open_console(browser, consoles, world.gateway.api_url, world.tokens["fire_brigade"], world.page_errors)
    count = page.get_by_test_id("feed-count")
    expect(count).to_have_text("500 个场所，1000 条告警", timeout=LIVE_S)
    cards = page.get_by_test_id("site-card")
    expect(cards).to_have_count(100)  # a window of cards is drawn
    page.get_by_test_id("feed-more").click()
    expect(cards).to_have_count(200)
    # Severity first: a site with a fire alarm leads, its fire alarm first inside the card.
    expect(cards.first).to_have_attribute("data-severity", "critical")
    expect(cards.first.get_by_test_id("alert-row").first).to_have_attribute("data-kind", "fire_alarm")
    expect(cards.first.get_by_test_id("card-count")).to_have_text("2 条")

    # The county board: each county a tile with its open critical and major alerts.
    tiles = page.get_by_test_id("county-tile")
    expect(tiles).to_have_count(8)
    xihu = page.locator('[data-testid="county-tile"][data-county="西湖区"]')
    want = seeded["by_county"]["西湖区"]
    expect(xihu).to_have_attribute("data-critical", str(want["critical"]))
    expect(xihu).to_have_attribute("data-major", str(want["major"]))
    expect(xihu.get_by_test_id("tile-critical")).to_have_text(f"紧急 {want['critical']}")
    shot(page, "triage-zh")
    xihu.click()
    expect(page.get_by_test_id("triage-county")).to_have_value("西湖区")
    expect(page.get_by_test_id("triage-city")).to_have_value("杭州市")
    n_xihu = sum(want[s] for s in ("critical", "major", "minor"))
    expect(count).to_contain_text(f"{n_xihu} 条告警")
    expect(xihu).to_have_attribute("aria-pressed", "true")
    sites_xihu = {r.id for r in seeded["sites"] if r.county == "西湖区"}
    for site in cards.evaluate_all("els => els.map(e => e.dataset.site)"):
        assert site in sites_xihu

    # Kind, severity and search narrow it down; the card says where, whom to call and what was measured.
    page.get_by_test_id("triage-kind").select_option("exit_blocked")
    exit_site = next(r for r in seeded["rows"] if r[2] == "exit_blocked" and r[0] in sites_xihu)[0]
    record = next(r for r in seeded["sites"] if r.id == exit_site)
    page.get_by_test_id("triage-search").fill(record.name)
    expect(cards).to_have_count(1)
    card = cards.first
    expect(card).to_have_attribute("data-site", exit_site)
    expect(card.get_by_test_id("card-address")).to_have_text(f"地址: {record.address}")
    expect(card.get_by_test_id("card-contact")).to_contain_text(record.contact_phone)
    expect(card.get_by_test_id("card-contact")).to_contain_text(record.contact_name)
    reading = card.get_by_test_id("alert-reading")
    expect(reading).to_contain_text("堵塞 65 %")
    expect(reading).to_contain_text(re.compile(r"已 \d+ 小时( \d+ 分)?"))
    expect(card).to_contain_text("学科类" if int(exit_site[4:]) % 2 == 0 else "舞蹈类")  # "dance" translated
    page.get_by_test_id("triage-search").fill(exit_site)  # by id too
    expect(cards).to_have_count(1)
    page.get_by_test_id("triage-search").fill("")
    page.get_by_test_id("triage-kind").select_option("")
    page.get_by_test_id("triage-severity").select_option("minor")
    expect(page.locator('[data-testid="alert-row"]:not([data-severity="minor"])')).to_have_count(0)
    expect(page.get_by_test_id("alert-reading").first).to_contain_text("电池电量 12 %")

    # Bulk acknowledge of the selection, after a confirmation.
    page.get_by_test_id("select-shown").click()
    minors = sum(1 for r in seeded["rows"] if r[3] == "minor" and r[0] in sites_xihu)
    bulk = page.get_by_test_id("bulk-ack")
    expect(bulk).to_have_text(f"批量确认（{minors}）")
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    bulk.click()
    expect(page.get_by_test_id("bulk-status")).to_have_text(f"已确认 {minors} 条，失败 0 条", timeout=60_000)
    assert len(asked) == 1
    assert str(minors) in asked[0]
    with connect(world.gateway.settings.database.url) as conn:
        row = conn.execute("SELECT count(*) AS n FROM alerts WHERE state = 'acknowledged' AND severity = 'minor'"
                           " AND site = ANY(%s)", (list(sites_xihu),)).fetchone()
    assert row is not None
    assert row["n"] == minors
    expect(bulk).to_have_text("批量确认（0）")
    expect(bulk).to_be_disabled()
    page.get_by_test_id("triage-severity").select_option("")
    page.get_by_test_id("feed-filter").select_option("open")
    expect(count).to_contain_text(f"{n_xihu - minors} 条告警")

    # English: the same view, translated; the board still filters.
    page.get_by_test_id("feed-filter").select_option("active")
    page.get_by_test_id("lang-toggle").click()
    minor_reading = page.locator('[data-testid="alert-row"][data-kind="detector_fault"] [data-testid="alert-reading"]')
    expect(minor_reading.first).to_contain_text("battery 12 %")
    expect(xihu.get_by_test_id("tile-critical")).to_have_text(f"critical {want['critical']}")
    expect(count).to_contain_text("alert(s)")
    xihu.click()  # a second click clears the county
    expect(page.get_by_test_id("triage-county")).to_have_value("")
    expect(count).to_have_text("500 site(s), 1000 alert(s)")
    shot(page, "triage-en")
    assert world.page_errors == []


def test_critical_compound_alert_needs_acknowledgement_and_keeps_its_escalation(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    agent = world.agents[SITE_A]
    agent.smoke("smoke-1", "alarm")
    agent.exit("exit-1", "blocked", ratio=0.8)
    compound = wait_for(lambda: world.admin.alert(site=SITE_A, kind="fire_alarm_exit_blocked", state="open"),
                        what="fire alarm with blocked exit")
    page = open_console(browser, consoles, world.gateway.api_url, world.tokens["fire_brigade"], world.page_errors)
    row = alert_row(page, SITE_A, "fire_alarm_exit_blocked")
    expect(row).to_have_attribute("data-state", "open", timeout=LIVE_S)
    expect(row).to_have_attribute("data-alert-id", str(compound["id"]))
    expect(row.get_by_test_id("alert-reading")).to_contain_text("堵塞出口 exit-1")
    error = page.get_by_test_id("action-error")

    # Cancelling the confirmation sends nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_test_id("alert-resolve").click()
    expect(error).to_be_hidden()
    # Accepted: refused, unacknowledged critical (409 ack_required), said in Chinese.
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_test_id("alert-resolve").click()
    expect(error).to_have_attribute("data-code", "ack_required", timeout=LIVE_S)
    expect(error).to_have_text("紧急告警须先确认，才能解除")
    row.get_by_test_id("alert-ack").click()
    expect(row).to_have_attribute("data-state", "acknowledged", timeout=LIVE_S)
    # Acknowledged but still holding: resolving it would reopen it as a new alert: refused.
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_test_id("alert-resolve").click()
    expect(error).to_have_attribute("data-code", "condition_holds", timeout=LIVE_S)
    expect(error).to_contain_text("火警仍未解除")
    shot(page, "lifecycle-refused-zh")
    page.get_by_test_id("lang-toggle").click()
    page.once("dialog", lambda dialog: dialog.accept())
    alert_row(page, SITE_A, "fire_alarm_exit_blocked").get_by_test_id("alert-resolve").click()
    expect(error).to_contain_text("The fire alarm is still on", timeout=LIVE_S)
    assert not re.search(r"[\u4e00-\u9fff]", error.inner_text())
    same = world.admin.alert(site=SITE_A, kind="fire_alarm_exit_blocked")
    assert same is not None
    assert (same["id"], same["state"]) == (compound["id"], "acknowledged")
    assert world.page_errors == []


def test_inspector_closes_with_a_note_downloads_the_ledger_and_summary_and_draws_a_sample(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    world.agents[SITE_A].exit("exit-1", "blocked", ratio=0.8)
    wait_for(lambda: world.admin.alert(site=SITE_A, kind="exit_blocked", state="open"), what="exit blocked")
    settings = world.gateway.settings
    with connect(settings.database.url) as conn:
        problem_actions.sweep(conn, time.time(), settings, compliance=False)
        conn.commit()
    page = open_console(browser, consoles, world.gateway.api_url, world.tokens["inspector"], world.page_errors)
    page.get_by_test_id("tab-inspector").click()
    row = problem_row(page, SITE_A, "exit_blocked")
    expect(row).to_have_count(1, timeout=LIVE_S)

    # Its alert is still open: the prompt says so, and an empty note is not enough.
    prompts: list[str] = []

    def answer(text: str) -> Any:
        def reply(dialog: Dialog) -> None:
            prompts.append(dialog.message)
            dialog.accept(text)
        return reply

    page.once("dialog", answer(""))
    row.get_by_test_id("problem-close").click()
    expect(page.get_by_test_id("problem-error")).to_have_text("该问题对应的告警仍未解除：关闭前须填写说明")
    assert "仍未解除" in prompts[-1]
    page.once("dialog", answer("现场复查：出口已清理，传感器待校准"))
    row.get_by_test_id("problem-close").click()
    expect(row).to_have_count(0, timeout=LIVE_S)  # rectified: out of the default filter
    assert "仍未解除" in prompts[-1]

    # Exports: this month by default, in the gateway's zone; names and titles in words.
    section = page.get_by_test_id("exports-section")
    expect(section).to_be_visible()
    assert re.fullmatch(r"\d{4}-\d{2}-01", page.get_by_test_id("export-from").input_value())
    with page.expect_download() as got:
        page.get_by_test_id("download-ledger").click()
    ledger = got.value
    assert ledger.suggested_filename.startswith("ledger-")
    assert ledger.suggested_filename.endswith(".xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(ledger.path().read_bytes())).active
    assert sheet is not None
    assert re.search(r"工作台账 \d{4}年\d{1,2}月\d{1,2}日", str(sheet["A1"].value))
    assert SITE_A in [r[0].value for r in sheet.iter_rows(min_row=3)]
    page.get_by_test_id("download-summary").click()  # the summary is per city
    expect(page.get_by_test_id("export-error")).to_have_text("请先在上方选择城市")
    page.get_by_test_id("inspector-city").select_option("杭州市")
    page.get_by_test_id("export-format").select_option("csv")
    with page.expect_download() as got:
        page.get_by_test_id("download-summary").click()
    summary = got.value
    assert summary.suggested_filename.endswith(".csv")
    text = summary.path().read_text(encoding="utf-8-sig")
    assert text.splitlines()[0].startswith("县区,机构数")

    # A spot-check sample of the city, reproducible by its seed, and its list as CSV.
    page.get_by_test_id("sample-seed").fill("7")
    page.get_by_test_id("draw-sample").click()
    expect(page.get_by_test_id("sample-row").first).to_be_visible(timeout=LIVE_S)
    expect(page.get_by_test_id("sample-summary")).to_contain_text("随机种子 7")
    with page.expect_download() as got:
        page.get_by_test_id("download-sample").click()
    assert got.value.suggested_filename == "inspection-city-7.csv"
    shot(page, "inspector-exports-zh")
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("sample-summary")).to_contain_text("seed 7")
    expect(page.get_by_test_id("download-ledger")).to_have_text("Download ledger")
    assert world.page_errors == []
