"""Bad input never blocks good input: each refused message goes to the dead-letter store with its
reason, is counted in /metrics, and the good messages published around it are all stored."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.runtime import Gateway
from gateway.store.db import connect
from protocol import MessageType, device_topic
from tests.support import Agent, Api, wait_for

pytestmark = pytest.mark.integration

SITE = "site-bad"
DEVICES: list[dict[str, Any]] = [
    {"id": "cam-1", "kind": "camera", "name": "gate", "location": "1F"},
    {"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"},
    {"id": "smoke-2", "kind": "smoke", "name": "stairs", "location": "2F"},
]
OVERSIZE = 256 * 1024 + 1


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def agent(gateway: Gateway) -> Iterator[Agent]:
    Api(gateway.api_url).put_site(SITE, name="Bad input", city="Hangzhou", county="Xihu", cameras_required=1)
    made = Agent(gateway.settings.mqtt.url, SITE)
    made.birth(DEVICES)
    yield made
    with contextlib.suppress(Exception):
        made.close()


def metric(base_url: str, name: str, **labels: str) -> float:
    """A sample of ``name`` in GET /metrics (0 when the labelled series does not exist yet)."""
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if labels else name
    for line in response.text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == series:
            return float(value)
    return 0.0


def readings_count(database_url: str, site: str = SITE, device: str | None = None) -> int:
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM readings WHERE site = %s AND (%s::text IS NULL OR device = %s)",
            (site, device, device),
        ).fetchone()
    assert row is not None
    return int(row["n"])


def heartbeat_payload(agent: Agent, **override: Any) -> dict[str, Any]:
    seq = agent.seq.get("cam-1", -1) + 1
    agent.seq["cam-1"] = seq
    payload = {"ts": time.time(), "boot": agent.boot, "seq": seq, "stream": "ok", "fps": 10.0,
               "last_frame_ts": time.time()}
    payload.update(override)
    return payload


@dataclass(frozen=True)
class BadCase:
    id: str
    code: str
    topic: str
    payload: Callable[[Agent], bytes]


HB_TOPIC = device_topic(SITE, "cam-1", MessageType.HEARTBEAT)

CASES = [
    BadCase("malformed_json", "malformed_json", HB_TOPIC, lambda a: b'{"ts": 1.0, "boot": "x", "seq": '),
    BadCase("not_an_object", "invalid_schema", HB_TOPIC, lambda a: b'[1, 2, 3]'),
    BadCase("wrong_types", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, ts="yesterday", seq="7", fps="fast")).encode()),
    BadCase("bool_for_number", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, fps=True)).encode()),
    BadCase("missing_field", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        {k: v for k, v in heartbeat_payload(a).items() if k != "stream"}).encode()),
    BadCase("unknown_enum", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, stream="blurry")).encode()),
    BadCase("oversize", "oversize", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, padding="x" * OVERSIZE)).encode()),
    BadCase("unknown_site", "unknown_site", device_topic("no-such-site", "cam-1", MessageType.HEARTBEAT),
            lambda a: json.dumps(heartbeat_payload(a)).encode()),
    BadCase("dollar_in_id", "bad_topic", "sg/v1/bad$id/cam/heartbeat",
            lambda a: json.dumps(heartbeat_payload(a)).encode()),
    BadCase("space_in_id", "bad_topic", f"sg/v1/{SITE}/cam 1/heartbeat",
            lambda a: json.dumps(heartbeat_payload(a)).encode()),
    BadCase("too_few_levels", "bad_topic", f"sg/v1/{SITE}/heartbeat",
            lambda a: json.dumps(heartbeat_payload(a)).encode()),
    BadCase("too_many_levels", "bad_topic", f"sg/v1/{SITE}/cam-1/heartbeat/extra",
            lambda a: json.dumps(heartbeat_payload(a)).encode()),
    BadCase("wrong_type_level", "bad_topic", f"sg/v1/{SITE}/cam-1/video",
            lambda a: json.dumps(heartbeat_payload(a)).encode()),
    BadCase("status_on_device", "bad_topic", f"sg/v1/{SITE}/cam-1/status",
            lambda a: json.dumps({"online": True, "boot": a.boot}).encode()),
    BadCase("invalid_utf8", "malformed_json", HB_TOPIC, lambda a: b'\xff\xfe{"ts": 1.0}'),
    BadCase("nan_number", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, fps=float("nan"))).encode()),
    BadCase("negative_seq", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, seq=-1)).encode()),
    BadCase("bad_declared_device", "invalid_schema", f"sg/v1/{SITE}/agent/status", lambda a: json.dumps(
        {"online": True, "ts": time.time(), "boot": a.boot, "heartbeat_s": 60,
         "devices": [{"id": "bad id", "kind": "camera"}]}).encode()),
    BadCase("wrong_device_kind", "wrong_device_kind", device_topic(SITE, "cam-1", MessageType.SMOKE),
            lambda a: json.dumps({"ts": time.time(), "boot": a.boot, "seq": 99, "state": "alarm"}).encode()),
    BadCase("bad_snapshot", "bad_snapshot", device_topic(SITE, "cam-1", MessageType.SNAPSHOT),
            lambda a: b"GIF89a not a jpeg"),
    # PostgreSQL text/jsonb refuse U+0000 and a datetime ends with 9999: refused at the boundary
    # (issue 15), no longer left for the database to refuse (storage_rejected).
    BadCase("nul_in_string", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, boot="boot\u0000zero")).encode()),
    BadCase("year_past_9999", "invalid_schema", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, ts=253_402_300_800.0)).encode()),
    BadCase("ts_ahead_of_arrival", "future_timestamp", HB_TOPIC, lambda a: json.dumps(
        heartbeat_payload(a, ts=time.time() + 3600)).encode()),
]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_message_is_dead_lettered_counted_and_good_neighbours_stored(
    gateway: Gateway, agent: Agent, case: BadCase
) -> None:
    api = Api(gateway.api_url)
    database_url = gateway.settings.database.url
    rejected_before = metric(gateway.api_url, "sg_messages_rejected_total", reason=case.code)

    # good, good, BAD, good (an alarm), good, BAD again, good: published back to back, so they
    # share ingest batches with the bad ones.
    agent.heartbeat("cam-1")
    agent.heartbeat("cam-1")
    agent.publish_raw(case.topic, case.payload(agent))
    agent.smoke("smoke-1", "alarm")
    agent.heartbeat("cam-1")
    agent.publish_raw(case.topic, case.payload(agent))
    agent.heartbeat("cam-1")
    good = 5

    def dead() -> list[dict[str, Any]] | None:
        items = [d for d in api.dead_letters() if d["topic"] == case.topic]
        return items if len(items) >= 2 else None

    letters = wait_for(dead, what=f"two dead letters for {case.id}")
    assert len(letters) == 2
    for letter in letters:
        assert letter["reason"].startswith(f"{case.code}:"), letter["reason"]
        assert set(letter) >= {"id", "received_at", "topic", "reason", "payload_excerpt"}
        assert letter["received_at"].endswith("Z")
        assert len(letter["payload_excerpt"]) <= 1025

    wait_for(lambda: readings_count(database_url) == good, what=f"{good} good readings stored")
    fire = wait_for(lambda: api.alert(kind="fire_alarm", site=SITE, device="smoke-1"), what="fire alarm")
    assert fire["state"] == "open"
    wait_for(
        lambda: metric(gateway.api_url, "sg_messages_rejected_total", reason=case.code) >= rejected_before + 2,
        what=f"sg_messages_rejected_total{{reason={case.code!r}}} to grow by 2",
    )
    assert metric(gateway.api_url, "sg_messages_rejected_total", reason=case.code) == rejected_before + 2
    # A later good message still goes through (the worker is alive and not stuck on the bad one).
    seq = agent.heartbeat("cam-1")
    wait_for(lambda: readings_count(database_url) == good + 1, what=f"reading {seq} stored after the bad ones")


def test_dead_letters_filter_by_reason_code(gateway: Gateway, agent: Agent) -> None:
    api = Api(gateway.api_url)
    agent.publish_raw(HB_TOPIC, b"not json")
    agent.publish_raw(f"sg/v1/{SITE}/cam-1/video", b"{}")
    wait_for(lambda: len(api.dead_letters()) >= 2, what="two dead letters")
    response = api.http.get("/api/v1/dead-letters", params={"reason": "malformed_json"})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [d["topic"] for d in items] == [HB_TOPIC]
    assert items[0]["payload_excerpt"] == "not json"


def test_same_message_three_times_stored_once_one_alert(gateway: Gateway, agent: Agent) -> None:
    api = Api(gateway.api_url)
    database_url = gateway.settings.database.url
    duplicates_before = metric(gateway.api_url, "sg_messages_duplicate_total")
    topic1 = device_topic(SITE, "smoke-1", MessageType.SMOKE)
    topic2 = device_topic(SITE, "smoke-2", MessageType.SMOKE)
    now = time.time()
    alarm1 = json.dumps({"ts": now, "boot": agent.boot, "seq": 0, "state": "alarm", "battery_pct": 80.0,
                         "obscuration_pct": 12.5}).encode()
    alarm2 = json.dumps({"ts": now, "boot": agent.boot, "seq": 0, "state": "alarm", "battery_pct": 80.0,
                         "obscuration_pct": None}).encode()

    # smoke-1: three copies back to back (one batch, most likely).
    for _ in range(3):
        agent.publish_raw(topic1, alarm1)
    # smoke-2: one copy, then two more once the first is stored (separate batches).
    agent.publish_raw(topic2, alarm2)
    first = wait_for(lambda: api.alert(kind="fire_alarm", site=SITE, device="smoke-2"), what="smoke-2 fire alarm")
    agent.publish_raw(topic2, alarm2)
    agent.publish_raw(topic2, alarm2)

    wait_for(
        lambda: metric(gateway.api_url, "sg_messages_duplicate_total") >= duplicates_before + 4,
        what="four duplicates counted",
    )
    assert readings_count(database_url, device="smoke-1") == 1
    assert readings_count(database_url, device="smoke-2") == 1
    for device in ("smoke-1", "smoke-2"):
        alerts = api.alerts(site=SITE, kind="fire_alarm")
        mine = [a for a in alerts if a["device"] == device]
        assert len(mine) == 1, mine
        assert mine[0]["count"] == 1
        history = api.http.get(f"/api/v1/alerts/{mine[0]['id']}").json()["history"]
        assert [h["action"] for h in history] == ["opened"]
    assert first["count"] == 1
    assert api.dead_letters() == []



def test_payload_of_exactly_256_kib_is_accepted(gateway: Gateway, agent: Agent) -> None:
    payload = heartbeat_payload(agent, padding="")
    payload["padding"] = "x" * (256 * 1024 - len(json.dumps(payload).encode()))
    raw = json.dumps(payload).encode()
    assert len(raw) == 256 * 1024
    agent.publish_raw(HB_TOPIC, raw)
    agent.heartbeat("cam-1")
    wait_for(lambda: readings_count(gateway.settings.database.url) == 2, what="both heartbeats stored")
    assert Api(gateway.api_url).dead_letters() == []


def test_unknown_fields_are_ignored_and_undeclared_devices_created(gateway: Gateway, agent: Agent) -> None:
    """Forward compatibility (DESIGN section 3): newer agents may send more fields."""
    api = Api(gateway.api_url)
    agent.heartbeat("cam-1", codec="h265", resolution=[1920, 1080])
    agent.exit("exit-9", "blocked", 0.4, zone={"x": 1})  # not declared in the birth
    wait_for(lambda: api.alert(kind="exit_blocked", site=SITE, device="exit-9"), what="undeclared exit's alert")
    wait_for(lambda: readings_count(gateway.settings.database.url) == 2, what="both readings stored")
    devices = {d["id"]: d for d in api.http.get(f"/api/v1/sites/{SITE}/devices").json()["items"]}
    assert devices["exit-9"]["kind"] == "exit"
    assert devices["exit-9"]["declared"] is False
    assert devices["cam-1"]["declared"] is True
    assert api.dead_letters() == []
