"""The web console (dashboards/web/) in a real browser: Playwright driving Debian's Chromium
against a running gateway fed over MQTT (issue 5).

Screenshots go to test-artifacts/ (gitignored); the alert feed's also to docs/console.png
when SAFEGUARD_UPDATE_SCREENSHOT=1
for the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from dashboards import CONSOLE_DIR
from gateway.auth import Role, create_token
from gateway.config import Settings
from gateway.ingest.batch import Inbound
from gateway.ingest.provisional import provisional_alerts
from gateway.notify.config import NotifyConfig
from gateway.problems import actions as problem_actions
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.sites import SiteRecord, upsert_sites
from protocol import MessageType, alert_topic, device_topic
from safeguard.devservers import free_port
from safeguard.receivers import LocalReceiver
from tests.support import Agent, Api, wait_for

CHROMIUM = os.environ.get("SAFEGUARD_CHROMIUM", "/usr/bin/chromium")
if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium; scripts/setup.sh does it)",
                allow_module_level=True)
try:
    from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Route, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("browser tests need the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
README_SHOT = ROOT / "docs" / "console.png"
LIVE_S = 10_000  # ms: "within seconds"
SITE_A = "hz-0001"
SITE_B = "hz-0002"
SITE_C = "nb-0001"
DEVICES: list[dict[str, Any]] = [
    {"id": "smoke-1", "kind": "smoke", "name": "大厅烟感", "location": "1F"},
    {"id": "smoke-2", "kind": "smoke", "name": "教室烟感", "location": "2F"},
    {"id": "exit-1", "kind": "exit", "name": "东侧安全出口", "location": "1F"},
]
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert (CONSOLE_DIR / "index.html").exists()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@dataclass
class World:
    gateway: Gateway
    admin: Api
    tokens: dict[str, str]
    agents: dict[str, Agent]
    page_errors: list[str] = field(default_factory=list)


def register(gateway: Gateway) -> tuple[Api, dict[str, str]]:
    admin = Api(gateway.api_url)
    admin.put_site(SITE_A, name="启明星培训学校", city="杭州市", county="西湖区", category="学科类",
                   address="文三路 100 号", cameras_required=2)
    admin.put_site(SITE_B, name="小天才艺术中心", city="杭州市", county="滨江区", category="艺术类",
                   address="江南大道 8 号", cameras_required=1)
    admin.put_site(SITE_C, name="海曙英语角", city="宁波市", county="海曙区", category="语言类",
                   address="中山西路 5 号", cameras_required=1)
    with connect(gateway.settings.database.url) as conn:
        tokens = {
            "fire_brigade": create_token(conn, role=Role.FIRE_BRIGADE, name="西湖消防站"),
            "inspector": create_token(conn, role=Role.INSPECTOR, name="检查员李"),
            "institution": create_token(conn, role=Role.INSTITUTION, name="启明星", site=SITE_A),
        }
    return admin, tokens


def agents_for(gateway: Gateway) -> dict[str, Agent]:
    agents = {site: Agent(gateway.settings.mqtt.url, site) for site in (SITE_A, SITE_B, SITE_C)}
    for agent in agents.values():
        agent.birth(DEVICES)
        agent.smoke("smoke-1", "normal")
        agent.smoke("smoke-2", "normal")
        agent.exit("exit-1", "clear")
    return agents


def resolved_history(world: World) -> None:
    """One resolved alert, so the console can tell a fire brigade from an inspector without acting."""
    agent = world.agents[SITE_C]
    agent.exit("exit-1", "blocked", ratio=0.8)
    wait_for(lambda: world.admin.alert(site=SITE_C, kind="exit_blocked", state="open"), what="exit blocked")
    agent.exit("exit-1", "clear")
    wait_for(lambda: world.admin.alert(site=SITE_C, kind="exit_blocked", state="resolved"), what="exit cleared")


@pytest.fixture
def world(gateway: Gateway) -> Iterator[World]:
    admin, tokens = register(gateway)
    w = World(gateway, admin, tokens, agents_for(gateway))
    resolved_history(w)
    yield w
    for agent in w.agents.values():
        with contextlib.suppress(Exception):
            agent.close()


@pytest.fixture
def consoles(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Browser contexts opened by a test, closed before its gateway stops (open SSE streams would hold it)."""
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        with contextlib.suppress(Exception):
            context.close()


def open_console(
    browser: Browser, consoles: list[BrowserContext], base_url: str, token: str, errors: list[str]
) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN",
                                  timezone_id="Asia/Shanghai")
    consoles.append(context)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base_url}/")
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login-button").click()
    expect(page.get_by_test_id("conn-badge")).to_have_attribute("data-state", "live", timeout=LIVE_S)
    return page


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled")
    return path


def alert_row(page: Page, site: str, kind: str) -> Any:
    return page.locator(f'[data-testid="alert-row"][data-site="{site}"][data-kind="{kind}"]')


# --------------------------------------------------------------------------- tests


def test_smoke_alarm_appears_live_and_acknowledge_reaches_a_second_console(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    url = world.gateway.api_url
    brigade = open_console(browser, consoles, url, world.tokens["fire_brigade"], world.page_errors)
    inspector = open_console(browser, consoles, url, world.tokens["inspector"], world.page_errors)
    expect(brigade.get_by_test_id("role-badge")).to_have_attribute("data-role", "fire_brigade")
    expect(inspector.get_by_test_id("role-badge")).to_have_attribute("data-role", "inspector")
    expect(brigade.get_by_test_id("role-badge")).to_have_text("消防救援")  # Chinese by default
    assert brigade.title() == "安全守护"

    # Published over MQTT while both consoles are open: no reload.
    world.agents[SITE_B].exit("exit-1", "blocked", ratio=0.7)
    world.agents[SITE_A].smoke("smoke-2", "normal", battery_pct=12.0)
    world.agents[SITE_A].smoke("smoke-1", "alarm")
    for page in (brigade, inspector):
        row = alert_row(page, SITE_A, "fire_alarm")
        expect(row).to_have_attribute("data-state", "open", timeout=LIVE_S)
        expect(row).to_have_attribute("data-severity", "critical")
        expect(row).to_contain_text("火警")
        expect(page).to_have_title(re.compile(r"^\(1\) 安全守护$"), timeout=LIVE_S)
        expect(page.get_by_test_id("critical-banner")).to_be_visible()
        expect(alert_row(page, SITE_B, "exit_blocked")).to_have_count(1, timeout=LIVE_S)
        expect(alert_row(page, SITE_A, "detector_fault")).to_have_count(1, timeout=LIVE_S)
    # Critical alerts come first and stand out in red.
    first = brigade.get_by_test_id("alert-row").first
    expect(first).to_have_attribute("data-kind", "fire_alarm")
    colour = first.evaluate("el => getComputedStyle(el).borderLeftColor")
    assert colour == "rgb(198, 40, 40)", colour
    # Only roles that may act see the buttons.
    expect(alert_row(inspector, SITE_A, "fire_alarm").get_by_test_id("alert-ack")).to_have_count(0)
    expect(alert_row(brigade, SITE_A, "fire_alarm").get_by_test_id("alert-ack")).to_be_visible()
    shot(brigade, "feed-critical-zh")
    if os.environ.get("SAFEGUARD_UPDATE_SCREENSHOT") == "1":  # refresh the README's picture on request only
        brigade.screenshot(path=str(README_SHOT), animations="disabled")
        assert README_SHOT.stat().st_size < 300_000

    # Resolving asks first; an unacknowledged fire alarm is then refused (409 ack_required), in Chinese.
    asked: list[str] = []

    def confirm(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    brigade.once("dialog", confirm)
    alert_row(brigade, SITE_A, "fire_alarm").get_by_test_id("alert-resolve").click()
    expect(brigade.get_by_test_id("action-error")).to_be_visible(timeout=LIVE_S)
    expect(brigade.get_by_test_id("action-error")).to_have_text("紧急告警须先确认，才能解除")  # noqa: RUF001 - the console's texts use Chinese full-width punctuation on purpose
    expect(brigade.get_by_test_id("action-error")).to_have_attribute("data-code", "ack_required")
    assert len(asked) == 1, asked
    assert "火警" in asked[0], asked

    # The brigade acknowledges; the inspector's console follows.
    alert_row(brigade, SITE_A, "fire_alarm").get_by_test_id("alert-ack").click()
    for page in (brigade, inspector):
        row = alert_row(page, SITE_A, "fire_alarm")
        expect(row).to_have_attribute("data-state", "acknowledged", timeout=LIVE_S)
        expect(row.get_by_test_id("alert-acked-by")).to_contain_text("西湖消防站")
        expect(page).to_have_title("安全守护", timeout=LIVE_S)
    shot(inspector, "feed-acknowledged-inspector")
    alert = world.admin.alert(site=SITE_A, kind="fire_alarm")
    assert alert is not None
    assert alert["state"] == "acknowledged"
    assert alert["acknowledged_by"] == "西湖消防站"

    # Sites overview: state at a glance, filters and search.
    brigade.get_by_test_id("tab-sites").click()
    rows = brigade.get_by_test_id("site-row")
    expect(rows).to_have_count(3, timeout=LIVE_S)
    site_a = brigade.locator(f'[data-testid="site-row"][data-site="{SITE_A}"]')
    expect(site_a.locator('[data-status="fire"]')).to_have_count(1)
    expect(brigade.locator(f'[data-testid="site-row"][data-site="{SITE_B}"] [data-status="exit"]')).to_have_count(1)
    expect(brigade.locator(f'[data-testid="site-row"][data-site="{SITE_C}"] [data-status="ok"]')).to_have_count(1)
    shot(brigade, "sites-zh")
    brigade.get_by_test_id("city-filter").select_option("杭州市")
    expect(rows).to_have_count(2)
    brigade.get_by_test_id("county-filter").select_option("滨江区")
    expect(rows).to_have_count(1)
    brigade.get_by_test_id("city-filter").select_option("")
    brigade.get_by_test_id("site-search").fill("英语")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-site", SITE_C)
    brigade.get_by_test_id("site-search").fill("")
    brigade.get_by_test_id("status-filter").select_option("fire")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-site", SITE_A)

    # Site detail: devices and the alert timeline.
    rows.first.click()
    expect(brigade.get_by_test_id("site-title")).to_contain_text("启明星培训学校")
    expect(brigade.get_by_test_id("device-row")).to_have_count(3, timeout=LIVE_S)
    smoke_1 = brigade.locator('[data-testid="device-row"][data-device="smoke-1"]')
    expect(smoke_1).to_have_attribute("data-online", "true")
    expect(brigade.get_by_test_id("timeline-item")).to_have_count(2)  # fire alarm, detector fault
    shot(brigade, "site-detail-zh")

    # Inspector view: site A requires 2 cameras and has none: not compliant since its agent's birth,
    # and why, in Chinese; the 7 past days are before the site existed: no verdict, not "not compliant".
    inspector.get_by_test_id("tab-inspector").click()
    inspector.get_by_test_id("inspector-site").select_option(SITE_A)
    status = inspector.get_by_test_id("compliance-status")
    expect(status).to_have_attribute("data-available", "true", timeout=LIVE_S)
    expect(inspector.get_by_test_id("compliance-verdict")).to_have_attribute("data-compliant", "false")
    expect(inspector.get_by_test_id("compliance-verdict")).to_have_text("不合规")
    expect(inspector.get_by_test_id("compliance-reason")).to_have_text(["应接入摄像头 2 路，实际上报 0 路"])  # noqa: RUF001 - the console's texts use Chinese full-width punctuation on purpose
    expect(inspector.get_by_test_id("compliance-measured-from")).to_contain_text("开始上报")
    days = inspector.get_by_test_id("compliance-day")
    expect(days).to_have_count(7)
    expect(inspector.locator('[data-testid="compliance-day"][data-compliant="null"]')).to_have_count(7)
    expect(days.first).to_contain_text("尚未接入")
    shot(inspector, "inspector-zh")

    # English, and back; the choice is remembered.
    brigade.get_by_test_id("lang-toggle").click()
    expect(brigade.get_by_test_id("tab-alerts")).to_have_text("Live alerts")
    brigade.get_by_test_id("tab-alerts").click()
    expect(alert_row(brigade, SITE_A, "fire_alarm")).to_contain_text("Fire alarm")
    shot(brigade, "feed-en")
    brigade.reload()
    expect(brigade.get_by_test_id("tab-alerts")).to_have_text("Live alerts", timeout=LIVE_S)
    brigade.get_by_test_id("lang-toggle").click()
    expect(brigade.get_by_test_id("tab-alerts")).to_have_text("实时告警")

    # Mute is remembered too; signing out forgets the token.
    brigade.get_by_test_id("mute-toggle").click()
    expect(brigade.get_by_test_id("mute-toggle")).to_have_attribute("data-muted", "true")
    assert brigade.evaluate("localStorage.getItem('sg.muted')") == "1"
    brigade.get_by_test_id("logout-button").click()
    expect(brigade.get_by_test_id("login-form")).to_be_visible()
    assert brigade.evaluate("localStorage.getItem('sg.token')") is None
    assert world.page_errors == []


def test_institution_never_sees_another_site(browser: Browser, world: World, consoles: list[BrowserContext]) -> None:
    url = world.gateway.api_url
    page = open_console(browser, consoles, url, world.tokens["institution"], world.page_errors)
    bodies: list[str] = []

    def keep_body(route: Route) -> None:  # every API answer the console gets from here on (the reload included)
        if "/alerts/stream" in route.request.url:
            route.continue_()
            return
        response = route.fetch()
        bodies.append(response.text())
        route.fulfill(response=response)

    page.route("**/api/v1/**", keep_body)
    expect(page.get_by_test_id("role-badge")).to_have_attribute("data-role", "institution")
    expect(page.get_by_test_id("role-badge")).to_contain_text(SITE_A)

    world.agents[SITE_B].smoke("smoke-1", "alarm")
    world.agents[SITE_C].exit("exit-1", "blocked", ratio=0.9)
    world.agents[SITE_A].exit("exit-1", "blocked", ratio=0.6)
    expect(alert_row(page, SITE_A, "exit_blocked")).to_have_count(1, timeout=LIVE_S)
    wait_for(lambda: world.admin.alert(site=SITE_B, kind="fire_alarm", state="open"), what="fire alarm at B")
    page.wait_for_timeout(1500)  # give a leak the time to show
    expect(page.get_by_test_id("alert-row")).to_have_count(1)
    expect(page).to_have_title("安全守护")  # the other site's fire alarm does not count either
    expect(alert_row(page, SITE_A, "exit_blocked").get_by_test_id("alert-ack")).to_have_count(0)

    page.get_by_test_id("tab-sites").click()
    expect(page.get_by_test_id("site-row")).to_have_count(1, timeout=LIVE_S)
    expect(page.get_by_test_id("site-row")).to_have_attribute("data-site", SITE_A)
    page.reload()  # the token is kept: a fresh start sees no more
    expect(page.get_by_test_id("conn-badge")).to_have_attribute("data-state", "live", timeout=LIVE_S)
    page.goto(f"{url}/#/site/{SITE_B}")
    expect(page.get_by_test_id("detail-error")).to_be_visible(timeout=LIVE_S)
    shot(page, "institution-other-site")
    page.goto(f"{url}/#/alerts")
    expect(alert_row(page, SITE_A, "exit_blocked")).to_have_count(1, timeout=LIVE_S)

    body = page.locator("body").inner_text()
    assert any(SITE_A in text for text in bodies)
    for other in (SITE_B, SITE_C, "小天才", "海曙"):
        assert other not in body
        assert not any(other in text for text in bodies), other
    assert world.page_errors == []


def test_console_survives_the_api_restarting(
    browser: Browser, settings: Settings, consoles: list[BrowserContext]
) -> None:
    settings = settings.updated(api_port=free_port())  # the same address after the restart
    errors: list[str] = []
    first = Gateway(settings)
    first.start()
    second: Gateway | None = None
    agents: dict[str, Agent] = {}
    try:
        assert first.ingest is not None
        assert first.ingest.wait_connected(10)
        _, tokens = register(first)
        agents = agents_for(first)
        page = open_console(browser, consoles, first.api_url, tokens["fire_brigade"], errors)
        agents[SITE_A].smoke("smoke-1", "alarm")
        expect(alert_row(page, SITE_A, "fire_alarm")).to_have_count(1, timeout=LIVE_S)

        first.stop()
        expect(page.get_by_test_id("conn-badge")).to_have_attribute("data-state", "reconnecting", timeout=LIVE_S)
        expect(page.get_by_test_id("conn-badge")).to_have_text("重新连接中…")
        shot(page, "api-down-reconnecting")
        # While the API is away: an alarm (the persistent MQTT session keeps it for the next gateway)
        # and an acknowledgement of the first one.
        agents[SITE_B].smoke("smoke-1", "alarm")

        second = Gateway(settings)
        second.start()
        assert second.ingest is not None
        assert second.ingest.wait_connected(10)
        expect(page.get_by_test_id("conn-badge")).to_have_attribute("data-state", "live", timeout=20_000)
        expect(alert_row(page, SITE_B, "fire_alarm")).to_have_attribute("data-state", "open", timeout=LIVE_S)
        # Changes after the reconnect arrive live as before.
        Api(second.api_url).http.post(
            f"/api/v1/alerts/{wait_for(lambda: admin_alert(second, SITE_A))['id']}/ack"
        ).raise_for_status()
        expect(alert_row(page, SITE_A, "fire_alarm")).to_have_attribute("data-state", "acknowledged",
                                                                         timeout=LIVE_S)
        expect(page).to_have_title(re.compile(r"^\(1\) "))
        shot(page, "api-restarted-live")
        assert errors == []
    finally:
        for context in consoles:
            with contextlib.suppress(Exception):
                context.close()
        for agent in agents.values():
            with contextlib.suppress(Exception):
                agent.close()
        for gw in (second, first):
            if gw is not None:
                gw.stop()


def admin_alert(gw: Gateway, site: str) -> dict[str, Any] | None:
    return Api(gw.api_url).alert(site=site, kind="fire_alarm", state="open")


def test_sites_overview_with_thousands_of_sites(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    cities = {"杭州市": ["上城区", "拱墅区", "西湖区", "滨江区", "萧山区"], "宁波市": ["海曙区", "江北区", "鄞州区"]}
    records = [
        SiteRecord(id=f"bulk-{i:05d}", name=f"培训点 {i}", city=city, county=counties[i % len(counties)],
                   category="学科类", cameras_required=1)
        for i, (city, counties) in enumerate(list(cities.items()) * 1500)
    ]
    with connect(world.gateway.settings.database.url) as conn:
        upsert_sites(conn, records)
        # One site failing the real-time interface requirement, as the leader's problem sweep records it.
        conn.execute(
            "INSERT INTO problems (site, kind, status, opened_at, since, deadline, updated_at)"
            " VALUES (%s, 'not_compliant', 'open', now(), now(), now() + interval '7 days', now())",
            (records[7].id,),
        )
        conn.commit()
    total = len(records) + 3
    world.agents[SITE_B].exit("exit-1", "blocked", ratio=0.7)
    page = open_console(browser, consoles, world.gateway.api_url, world.tokens["inspector"], world.page_errors)
    page.get_by_test_id("tab-sites").click()
    expect(page.get_by_test_id("sites-count")).to_contain_text(f"/ {total} ", timeout=LIVE_S)
    rows = page.get_by_test_id("site-row")
    expect(rows).to_have_count(300)  # only a window of the filtered rows is drawn
    page.get_by_test_id("sites-more").click()
    expect(rows).to_have_count(600)
    page.get_by_test_id("city-filter").select_option("宁波市")
    page.get_by_test_id("county-filter").select_option("江北区")
    expect(page.get_by_test_id("sites-count")).to_contain_text("/ 500 ")
    last = next(r for r in reversed(records) if r.county == "江北区")  # "培训点 2995": no other name contains it
    page.get_by_test_id("site-search").fill(last.name)
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-site", last.id)
    page.get_by_test_id("city-filter").select_option("")
    page.get_by_test_id("site-search").fill("")
    page.get_by_test_id("status-filter").select_option("exit")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-site", SITE_B)
    page.get_by_test_id("status-filter").select_option("noncompliant")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-site", records[7].id)
    expect(rows.first.get_by_test_id("site-status")).to_contain_text("接入不达标")
    shot(page, "sites-thousands")
    assert world.page_errors == []


def jpeg(width: int, height: int) -> bytes:
    """A small real JPEG, as an exit camera sends (the gateway refuses anything without the JPEG magic)."""
    image = np.full((height, width, 3), 60, dtype=np.uint8)
    cv2.rectangle(image, (width // 4, height // 4), (3 * width // 4, height - 4), (40, 120, 230), -1)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def snapshot_width(page: Page, device: str) -> Any:
    return page.evaluate(
        """device => {
             const img = document.querySelector(`[data-testid="snapshot"][data-device="${device}"] img`);
             return img && img.complete ? img.naturalWidth : 0;
           }""",
        device,
    )


def test_site_detail_shows_the_latest_snapshot_of_a_blocked_exit(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    agent = world.agents[SITE_A]
    topic = device_topic(SITE_A, "exit-1", MessageType.SNAPSHOT)
    agent.exit("exit-1", "blocked", ratio=0.8)
    agent.publish_raw(topic, jpeg(160, 120))
    wait_for(lambda: world.admin.alert(site=SITE_A, kind="exit_blocked", state="open"), what="exit blocked")

    def snapshot_at() -> str | None:
        devices = world.admin.http.get(f"/api/v1/sites/{SITE_A}/devices").json()["items"]
        at: str | None = next(d for d in devices if d["id"] == "exit-1")["latest_snapshot_at"]
        return at

    first_at = wait_for(snapshot_at, what="snapshot stored")

    url = world.gateway.api_url
    page = open_console(browser, consoles, url, world.tokens["inspector"], world.page_errors)
    page.goto(f"{url}/#/site/{SITE_A}")
    expect(page.get_by_test_id("site-title")).to_contain_text("启明星培训学校", timeout=LIVE_S)
    figure = page.locator('[data-testid="snapshot"][data-device="exit-1"]')
    expect(page.get_by_test_id("snapshot")).to_have_count(1, timeout=LIVE_S)  # exits with a snapshot only
    expect(figure).to_have_attribute("data-blocked", "true")  # the exit's alert is open: highlighted
    expect(figure).to_have_class(re.compile(r"\bblocked\b"))
    img = figure.get_by_test_id("snapshot-img")
    expect(img).to_be_visible(timeout=LIVE_S)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=LIVE_S)
    assert snapshot_width(page, "exit-1") == 160
    assert str(img.get_attribute("src")).startswith("blob:")  # fetched with the token, shown from a blob
    expect(figure).to_have_attribute("data-at", first_at)
    expect(figure.get_by_test_id("snapshot-time")).to_contain_text("截图于")
    expect(figure).to_contain_text("出口堵塞")
    shot(page, "site-detail-snapshot")

    # A newer snapshot replaces it without a reload (the devices list announces it).
    agent.publish_raw(topic, jpeg(240, 180))
    page.wait_for_function(
        """() => {
             const img = document.querySelector('[data-testid="snapshot"][data-device="exit-1"] img');
             return img && img.complete && img.naturalWidth === 240;
           }""",
        timeout=15_000,
    )
    assert figure.get_attribute("data-at") != first_at

    # The exit clears: the alert is resolved live and the highlight goes; the picture stays.
    agent.exit("exit-1", "clear")
    expect(figure).to_have_attribute("data-blocked", "false", timeout=LIVE_S)
    expect(figure).not_to_contain_text("出口堵塞")
    assert snapshot_width(page, "exit-1") == 240
    assert world.page_errors == []


def problem_row(page: Page, site: str, kind: str) -> Any:
    return page.locator(
        f'[data-testid="problems-table"] [data-testid="problem-row"][data-site="{site}"][data-kind="{kind}"]')


def test_inspector_closes_an_overdue_problem_with_a_note(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    # The condition: an exit_blocked alert (over MQTT), then a sweep of the problem list run directly,
    # and its deadline moved into the past so that the problem is overdue.
    world.agents[SITE_A].exit("exit-1", "blocked", ratio=0.8)
    wait_for(lambda: world.admin.alert(site=SITE_A, kind="exit_blocked", state="open"), what="exit blocked")
    settings = world.gateway.settings
    with connect(settings.database.url) as conn:
        problem_actions.sweep(conn, time.time(), settings, compliance=False)
        row = conn.execute(
            "UPDATE problems SET deadline = now() - interval '1 hour'"
            " WHERE site = %s AND kind = 'exit_blocked' AND status <> 'rectified' RETURNING id",
            (SITE_A,),
        ).fetchone()
        conn.commit()
    assert row is not None
    problem_id = row["id"]

    page = open_console(browser, consoles, world.gateway.api_url, world.tokens["inspector"], world.page_errors)
    expect(page.get_by_test_id("role-badge")).to_have_attribute("data-role", "inspector")
    page.get_by_test_id("tab-inspector").click()
    row_a = problem_row(page, SITE_A, "exit_blocked")
    expect(row_a).to_have_attribute("data-status", "overdue", timeout=LIVE_S)  # open + overdue by default
    expect(row_a).to_have_attribute("data-problem-id", str(problem_id))
    expect(row_a).to_have_class(re.compile(r"\boverdue\b"))
    expect(row_a.get_by_test_id("problem-kind")).to_have_text("安全出口堵塞")
    expect(row_a.get_by_test_id("problem-status")).to_have_text("已逾期")
    colour = row_a.get_by_test_id("problem-deadline").evaluate("el => getComputedStyle(el).color")
    assert colour == "rgb(198, 40, 40)", colour
    # The view's filters: another city hides it, the site shows only its own problems.
    page.get_by_test_id("inspector-city").select_option("宁波市")
    expect(row_a).to_have_count(0, timeout=LIVE_S)
    page.get_by_test_id("inspector-city").select_option("")
    page.get_by_test_id("inspector-site").select_option(SITE_A)
    expect(row_a).to_have_count(1, timeout=LIVE_S)
    others = page.locator(f'[data-testid="problems-table"] [data-testid="problem-row"]:not([data-site="{SITE_A}"])')
    expect(others).to_have_count(0, timeout=LIVE_S)  # the site's own problems only (detectors untested at B, C)
    page.get_by_test_id("problems-section").scroll_into_view_if_needed()
    shot(page, "inspector-problems-zh")

    # The site's page lists it too, under the same (translated) column headings.
    page.get_by_test_id("tab-sites").click()
    page.locator(f'[data-testid="site-row"][data-site="{SITE_A}"]').click()
    site_rows = page.locator('[data-testid="site-problems-table"] [data-testid="problem-row"]')
    expect(site_rows.filter(has_text="安全出口堵塞")).to_have_count(1, timeout=LIVE_S)
    headings = page.locator('[data-testid="problems-table"] thead th').all_inner_texts()
    assert len(headings) == 8
    assert headings[0] == "编号"
    expect(page.locator('[data-testid="site-problems-table"] thead th')).to_have_text(headings)
    page.get_by_test_id("tab-inspector").click()
    page.get_by_test_id("inspector-site").select_option(SITE_A)
    expect(row_a).to_have_count(1, timeout=LIVE_S)

    # Close it with a note (the console prompts for it); the list refreshes and the default filter drops it.
    notes: list[str] = []

    def answer(dialog: Dialog) -> None:
        notes.append(dialog.message)
        dialog.accept("通道已清理 现场复查合格")

    page.once("dialog", answer)
    row_a.get_by_test_id("problem-close").click()
    expect(row_a).to_have_count(0, timeout=LIVE_S)
    assert len(notes) == 1
    assert "关闭" in notes[0]
    page.get_by_test_id("problem-status-filter").select_option("rectified")
    expect(row_a).to_have_attribute("data-status", "rectified", timeout=LIVE_S)
    expect(row_a.get_by_test_id("problem-status")).to_have_text("已整改")
    expect(row_a.get_by_test_id("problem-rectified")).to_contain_text("检查员李")
    expect(row_a.get_by_test_id("problem-reopen")).to_be_visible()
    shot(page, "inspector-problem-closed-zh")
    problem = world.admin.http.get(f"/api/v1/problems/{problem_id}").json()
    assert problem["status"] == "rectified"
    assert problem["closed_by"] == "检查员李"
    assert problem["history"][-1]["action"] == "closed"
    assert problem["history"][-1]["note"] == "通道已清理 现场复查合格"
    assert world.page_errors == []


def test_alert_detail_shows_who_was_told_when(
    browser: Browser, settings: Settings, consoles: list[BrowserContext]
) -> None:
    receiver = LocalReceiver().start()
    notify = NotifyConfig.model_validate({
        "channels": {"xihu-wecom": {"type": "wecom", "url": receiver.url("/wecom") + "?key=k"},
                     "xihu-brigade": {"type": "dingtalk", "url": receiver.url("/ding") + "?access_token=t"}},
        "routes": [{"name": "xihu", "match": {"county": ["西湖区"]},
                    "steps": [{"after_s": 0, "channels": ["xihu-wecom"]},
                              {"after_s": 600, "channels": ["xihu-brigade"]}]}],
        "poll_interval_s": 0.1,
    })
    gateway = Gateway(settings.updated(notify=notify))
    gateway.start()
    errors: list[str] = []
    agents: dict[str, Agent] = {}
    try:
        _admin, tokens = register(gateway)
        agents = agents_for(gateway)
        agents[SITE_A].smoke("smoke-1", "alarm")
        receiver.wait("/wecom")
        url = gateway.api_url
        page = open_console(browser, consoles, url, tokens["fire_brigade"], errors)
        page.goto(f"{url}/#/site/{SITE_A}")
        item = page.locator('[data-testid="timeline-item"]').filter(has_text="火警")
        expect(item).to_have_count(1, timeout=LIVE_S)
        item.get_by_test_id("notify-toggle").click()
        sent = item.locator('[data-testid="notify-row"][data-channel="xihu-wecom"]')
        expect(sent).to_have_attribute("data-state", "sent", timeout=LIVE_S)
        expect(sent).to_contain_text("已送达")
        expect(sent).to_contain_text("成功 (200)")
        pending = item.locator('[data-testid="notify-row"][data-channel="xihu-brigade"]')
        expect(pending).to_have_attribute("data-state", "pending")
        sent.scroll_into_view_if_needed()
        shot(page, "alert-notifications")
        # Acknowledged: the brigade's step is cancelled, shown as the detail refreshes.
        alert = wait_for(lambda: Api(url).alert(site=SITE_A, kind="fire_alarm"), what="fire alarm")
        assert Api(url).http.post(f"/api/v1/alerts/{alert['id']}/ack", json={}).status_code == 200
        expect(pending).to_have_attribute("data-state", "cancelled", timeout=LIVE_S)
        expect(pending).to_contain_text("已取消")
        assert errors == []
    finally:
        for context in consoles:
            with contextlib.suppress(Exception):
                context.close()
        for agent in agents.values():
            with contextlib.suppress(Exception):
                agent.close()
        gateway.stop()
        receiver.stop()
def test_provisional_alarm_card_is_shown_apart_and_replaced_by_the_stored_alert(
    browser: Browser, world: World, consoles: list[BrowserContext]
) -> None:
    """Issue 15: while the database is away ingest pushes a fire alarm as provisional; the console
    shows it as such (no buttons: there is no alert to act on yet) until the stored one replaces it."""
    brigade = open_console(browser, consoles, world.gateway.api_url, world.tokens["fire_brigade"], world.page_errors)
    reading = {"ts": time.time(), "boot": "boot-prov", "seq": 7, "state": "alarm", "battery_pct": 90.0,
               "obscuration_pct": 4.0}
    topic = device_topic(SITE_A, "smoke-1", MessageType.SMOKE)
    [provisional] = provisional_alerts([Inbound(topic, json.dumps(reading).encode(), time.time())])
    # As the ingest worker publishes it (gateway/ingest/provisional.py) when its batch cannot be stored.
    world.agents[SITE_A].publish_raw(alert_topic(SITE_A), json.dumps(provisional))
    key = f"{SITE_A}/smoke-1/fire_alarm"
    card = brigade.locator(f'[data-testid="alert-row"][data-key="{key}"]')
    expect(card).to_have_attribute("data-provisional", "true", timeout=LIVE_S)
    expect(card.get_by_test_id("alert-provisional")).to_have_text("未入库")
    expect(card.get_by_test_id("alert-ack")).to_have_count(0)
    expect(brigade).to_have_title(re.compile(r"^\(1\) 安全守护$"), timeout=LIVE_S)
    shot(brigade, "feed-provisional-zh")

    world.agents[SITE_A].smoke("smoke-1", "alarm")  # the database is here: stored, with the same key
    expect(card).to_have_attribute("data-provisional", "false", timeout=LIVE_S)
    expect(card).to_have_count(1)
    expect(card.get_by_test_id("alert-ack")).to_be_visible()
    expect(brigade).to_have_title(re.compile(r"^\(1\) 安全守护$"))
    assert world.page_errors == []
