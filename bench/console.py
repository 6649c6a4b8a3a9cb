"""The console's triage at scale in Chromium: 3,000 sites and 1,000 open alerts (issue 13).

    .venv/bin/python -m bench.console [--repeat 5] [--screenshots]

Starts a private Mosquitto and PostgreSQL and the gateway in this process, writes 3,000 sites and
1,000 open alerts (on 500 sites, two each) straight into the database, and drives Debian's
Chromium (``SAFEGUARD_CHROMIUM``, default /usr/bin/chromium) with Playwright as a fire brigade:
prints the API's answer times for the lists the console loads, the time from signing in to the
drawn triage view, and the median time to filter (county, kind, search, a county tile) measured in
the page from the change to the next frame after the redraw.

``--screenshots``: also writes docs/console-triage.png (fire brigade, zh-CN) and
docs/console-inspector.png (inspector: a site's compliance with an outage in words, the days
before it reported, the exports and a drawn sample).
"""

# ruff: noqa: RUF001 - the console's texts use Chinese full-width punctuation on purpose
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from gateway.auth import Role, create_token
from gateway.config import Settings
from gateway.runtime import Gateway
from gateway.store.db import Conn, connect, from_epoch
from gateway.store.migrate import migrate
from gateway.store.sites import SiteRecord, upsert_sites
from safeguard.devservers import MosquittoServer, PostgresServer

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SAFEGUARD_CHROMIUM", "/usr/bin/chromium")
ADMIN = "bench-console-admin-token-0123456789"
COUNTIES = [("杭州市", c) for c in ("上城区", "拱墅区", "西湖区", "滨江区", "萧山区")] + [
    ("宁波市", c) for c in ("海曙区", "江北区", "鄞州区")]
NAMES = ("启明星", "小天才", "博学", "乐思", "童心", "星辰", "未来", "智慧树")
KINDS = ("培训学校", "艺术中心", "英语角", "体育馆", "舞蹈室")


def seed(conn: Conn, sites: int = 3000, alerts: int = 1000) -> list[SiteRecord]:
    """``sites`` sites with contacts, ``alerts`` open alerts on half as many sites (two each)."""
    records = [
        SiteRecord(id=f"site-{i:05d}", name=f"{NAMES[i % 8]}{KINDS[i % 5]}{i // 40 + 1}号", city=COUNTIES[i % 8][0],
                   county=COUNTIES[i % 8][1], category=("dance", "学科类", "sports", "艺术类")[i % 4],
                   address=f"{('文三路', '江南大道', '中山路', '解放路')[i % 4]} {i % 300 + 1} 号", cameras_required=2,
                   contact_name=f"{'王李张刘陈杨'[i % 6]}老师", contact_phone=f"1380571{i:04d}")
        for i in range(sites)
    ]
    upsert_sites(conn, records)
    now = time.time()
    rows = []
    for i in range(alerts):
        site = records[(i // 2) * 3].id
        if i % 2:
            kind, severity, detail = "detector_fault", "minor", {"state": "normal", "battery_pct": 8.0 + i % 10}
        else:
            choice: dict[int, tuple[str, str, dict[str, Any]]] = {
                0: ("fire_alarm", "critical", {"state": "alarm", "obscuration_pct": 9.5, "detector_normal": False}),
                1: ("exit_blocked", "major", {"blocked_ratio": 0.65, "blocked_since": now - 2 * 3600 - i * 7}),
                2: ("exit_blocked", "major", {"blocked_ratio": 0.8, "blocked_since": now - 600 - i * 3}),
                3: ("camera_offline", "major", {"last_seen": from_epoch(now - 4000).isoformat(), "timeout_s": 180}),
            }
            kind, severity, detail = choice.get((i // 2) % 10, ("detector_fault", "minor",
                                                               {"state": "fault", "battery_pct": 60.0}))
        rows.append((site, f"dev-{i}", kind, severity, from_epoch(now - 3600 + i), Jsonb(detail)))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at, detail)"
                        " VALUES (%s, %s, %s, %s, 'open', %s, %s, %s)", [(*r[:4], r[4], r[4], r[5]) for r in rows])
    conn.commit()
    return records


def inspector_site(conn: Conn, site: str) -> None:
    """A site that began reporting 3 days ago with two cameras; cam-2 was off for 23 h 35 min yesterday."""
    now = time.time()
    born = from_epoch(now - 3 * 86_400)
    conn.execute("UPDATE sites SET created_at = %s WHERE id = %s", (born, site))
    conn.execute("INSERT INTO agents (site, online, boot, heartbeat_s, status_at) VALUES (%s, true, 'b1', 60, %s)"
                 " ON CONFLICT (site) DO NOTHING", (site, born))
    for cam in ("cam-1", "cam-2"):
        conn.execute("INSERT INTO devices (site, id, kind, declared, created_at) VALUES (%s, %s, 'camera', true, %s)"
                     " ON CONFLICT DO NOTHING", (site, cam, born))
    gap = (now - 30 * 3600, now - 30 * 3600 + 84_900)  # 23 h 35 min
    rows = []
    for cam in ("cam-1", "cam-2"):
        t = now - 3 * 86_400 + 60
        seq = 0
        while t < now:
            if not (cam == "cam-2" and gap[0] <= t < gap[1]):
                payload = {"ts": t - 0.4, "boot": "b1", "seq": seq, "stream": "ok", "fps": 10.0, "last_frame_ts": t}
                rows.append((from_epoch(t - 0.4), from_epoch(t), site, cam, "camera", "b1", seq, "ok", Jsonb(payload)))
                seq += 1
            t += 60
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO readings (ts, received_at, site, device, kind, boot, seq, status, payload)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    conn.commit()


def api_times(base: str, token: str) -> dict[str, float]:
    """Seconds for each list the console loads at sign-in (all pages)."""
    out = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        lists: list[tuple[str, str, dict[str, str | int]]] = [
            ("sites (3 pages of 1000)", "/api/v1/sites", {"limit": 1000}),
            ("open alerts (1 page of 1000)", "/api/v1/alerts", {"state": "open", "limit": 1000}),
        ]
        for name, path, params in lists:
            start = time.perf_counter()
            cursor = None
            while True:
                query: dict[str, str | int] = {**params, **({"cursor": cursor} if cursor else {})}
                r = client.get(path, params=query)
                r.raise_for_status()
                cursor = r.json()["next_cursor"]
                if not cursor:
                    break
            out[name] = time.perf_counter() - start
    return out


_MEASURE = """async ([testid, value, event]) => {
  const el = document.querySelector(`[data-testid="${testid}"]`);
  const t0 = performance.now();
  if (event === "click") el.click(); else { el.value = value; el.dispatchEvent(new Event(event)); }
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0;
}"""


def main() -> None:  # noqa: PLR0915 - one scripted session, top to bottom
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--screenshots", action="store_true", help="write docs/console-triage.png and -inspector.png")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415 - a dev dependency

    with tempfile.TemporaryDirectory(prefix="sg-bench-console-") as tmp, \
            PostgresServer(Path(tmp) / "pg", fast=True) as pg, MosquittoServer(Path(tmp) / "mqtt") as broker:
        with connect(pg.url) as conn:
            migrate(conn)
            conn.commit()
            records = seed(conn)
            inspector_site(conn, records[0].id)
            brigade = create_token(conn, role=Role.FIRE_BRIGADE, name="西湖消防站")
            inspector = create_token(conn, role=Role.INSPECTOR, name="检查员李")
        settings = Settings(mqtt_url=broker.url, database_url=pg.url, api_host="127.0.0.1", api_port=0,
                            mqtt_client_id=f"bench-{uuid.uuid4().hex[:6]}", bootstrap_token=SecretStr(ADMIN))
        gateway = Gateway(settings)
        gateway.start()
        try:
            base = gateway.api_url
            time.sleep(3)  # the supervisor's first rounds (the compliance timeline) settle
            for name, seconds in api_times(base, brigade).items():
                print(f"API {name}: {seconds * 1000:.0f} ms")
            with sync_playwright() as p:
                chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
                context = chromium.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN",
                                               timezone_id="Asia/Shanghai")
                page = context.new_page()
                page.goto(f"{base}/")
                page.get_by_test_id("token-input").fill(brigade)
                start = time.perf_counter()
                page.get_by_test_id("login-button").click()
                # (the inspector's example site adds its own camera alerts: 1,000 and a few)
                expect(page.get_by_test_id("feed-count")).to_contain_text("500 个场所，10", timeout=60_000)
                expect(page.get_by_test_id("county-tile")).to_have_count(8, timeout=60_000)
                print(f"sign-in to drawn triage view (3,000 sites, 1,000 alerts): {time.perf_counter() - start:.2f} s")
                page.wait_for_timeout(2000)
                steps = [("county filter", "triage-county", "西湖区", "change"),
                         ("kind filter", "triage-kind", "exit_blocked", "change"),
                         ("search (name)", "triage-search", "启明星", "input"),
                         ("clear search", "triage-search", "", "input"),
                         ("clear kind", "triage-kind", "", "change"),
                         ("clear county", "triage-county", "", "change")]
                timings: dict[str, list[float]] = {name: [] for name, *_ in steps}
                timings["county tile click"] = []
                for _ in range(args.repeat):
                    for name, testid, value, event in steps:
                        timings[name].append(page.evaluate(_MEASURE, [testid, value, event]))
                    # the first tile (the county with most critical alerts), then off again
                    timings["county tile click"].append(page.evaluate(_MEASURE, ["county-tile", "", "click"]))
                    page.evaluate(_MEASURE, ["county-tile", "", "click"])
                for name, values in timings.items():
                    print(f"render after {name}: median {statistics.median(values):.0f} ms,"
                          f" max {max(values):.0f} ms ({len(values)} runs)")
                if args.screenshots:
                    page.get_by_test_id("feed-filter").select_option("active")
                    page.wait_for_timeout(500)
                    page.screenshot(path=str(ROOT / "docs" / "console-triage.png"), animations="disabled")
                    insp = context.new_page()
                    insp.goto(f"{base}/")
                    insp.evaluate("localStorage.removeItem('sg.token')")
                    insp.reload()
                    insp.get_by_test_id("token-input").fill(inspector)
                    insp.get_by_test_id("login-button").click()
                    insp.get_by_test_id("tab-inspector").click()
                    insp.get_by_test_id("inspector-city").select_option("杭州市")
                    insp.get_by_test_id("inspector-site").select_option(records[0].id)
                    expect(insp.get_by_test_id("compliance-day").first).to_be_visible(timeout=60_000)
                    insp.get_by_test_id("sample-seed").fill("2026")
                    insp.get_by_test_id("draw-sample").click()
                    expect(insp.get_by_test_id("sample-row").first).to_be_visible(timeout=60_000)
                    # the compliance panel, the exports and the first rows of the sample (page coordinates,
                    # scrolled to the top: the tables' sticky headers stay in place)
                    insp.evaluate("window.scrollTo(0, 0)")
                    bottom = insp.evaluate("document.querySelectorAll('[data-testid=\"sample-row\"]')[8]"
                                           ".getBoundingClientRect().bottom + window.scrollY")
                    insp.screenshot(path=str(ROOT / "docs" / "console-inspector.png"), full_page=True,
                                    animations="disabled", clip={"x": 0, "y": 0, "width": 1440, "height": bottom + 8})
                    print("wrote docs/console-triage.png and docs/console-inspector.png")
                chromium.close()
        finally:
            gateway.stop()


if __name__ == "__main__":
    main()
