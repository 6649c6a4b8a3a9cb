"""Every alert kind of DESIGN section 4, end to end: publish over MQTT, see the alert in the API."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from gateway.config import Settings
from gateway.runtime import Gateway
from tests.support import Agent, Api, wait_for, wait_state

pytestmark = pytest.mark.integration

SITE = "site-e2e"
DEVICES: list[dict[str, Any]] = [
    {"id": "cam-1", "kind": "camera", "name": "gate", "location": "1F"},
    {"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"},
    {"id": "exit-1", "kind": "exit", "name": "east exit", "location": "1F"},
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """Agents created by a test; closed (quietly, a crashed one included) at teardown."""
    made: list[Agent] = []
    yield made
    for agent in made:
        with contextlib.suppress(Exception):
            agent.close()


def start_site(
    gw: Gateway, agents: list[Agent], *, site: str = SITE, heartbeat_s: int = 60
) -> tuple[Api, Agent]:
    api = Api(gw.api_url)
    api.put_site(site, name=f"Site {site}", city="Hangzhou", county="Xihu", cameras_required=1)
    agent = Agent(gw.settings.mqtt.url, site, heartbeat_s=heartbeat_s)
    agents.append(agent)
    agent.birth(DEVICES)
    return api, agent


def act(api: Api, alert_id: int, step: str, note: str | None = None) -> Any:
    body = {"note": note} if note is not None else None
    return api.http.post(f"/api/v1/alerts/{alert_id}/{step}", json=body)


def wait_alert(api: Api, what: str, **match: Any) -> dict[str, Any]:
    return wait_for(lambda: api.alert(**match), what=what)


def wait_detail(api: Api, alert_id: int, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        alert = api.get_alert(alert_id)
        return alert if check(alert["detail"]) else None

    return wait_for(probe, what=what)


def wait_device_seq(api: Api, site: str, device: str, seq: int) -> None:
    """Until the gateway stored ``device``'s reading number ``seq`` (its rules ran in the same transaction)."""

    def probe() -> bool:
        response = api.http.get(f"/api/v1/sites/{site}/devices")
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            if item["id"] == device and item["state"] is not None and item["state"]["seq"] >= seq:
                return True
        return False

    wait_for(probe, what=f"{device} reading seq {seq} stored")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- fire alarm


def test_fire_alarm_normal_before_ack_stays_open_then_ack_resolves(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.smoke("smoke-1", "alarm")
    alert = wait_alert(api, "fire alarm", kind="fire_alarm", site=SITE, device="smoke-1")
    assert alert["severity"] == "critical"
    assert alert["state"] == "open"
    assert alert["count"] == 1

    # An unacknowledged fire alarm cannot be resolved by hand.
    refused = act(api, alert["id"], "resolve", "looks fine")
    assert refused.status_code == 409, refused.text
    assert "detail" in refused.json()

    # Back to normal, not acknowledged: it stays open.
    agent.smoke("smoke-1", "normal")
    after_normal = wait_detail(api, alert["id"], lambda d: d.get("detector_normal") is True, "detector normal noted")
    assert after_normal["state"] == "open"
    assert after_normal["resolved_at"] is None

    acked = act(api, alert["id"], "ack", "brigade checked")
    assert acked.status_code == 200, acked.text
    final = wait_state(api, alert["id"], "resolved")
    assert final["acknowledged_by"] == "bootstrap"
    assert final["acknowledged_at"] is not None
    assert final["resolved_at"] is not None
    assert [h["action"] for h in final["history"]][-2:] == ["acknowledged", "resolved"]


def test_fire_alarm_acked_first_resolves_when_detector_normal(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.smoke("smoke-1", "alarm")
    alert = wait_alert(api, "fire alarm", kind="fire_alarm", site=SITE, device="smoke-1")
    assert act(api, alert["id"], "ack").status_code == 200
    assert api.get_alert(alert["id"])["state"] == "acknowledged"
    # A second ack is a conflict.
    assert act(api, alert["id"], "ack").status_code == 409
    agent.smoke("smoke-1", "alarm")  # still in alarm: stays acknowledged
    seq = agent.smoke("smoke-1", "normal")
    wait_device_seq(api, SITE, "smoke-1", seq)
    final = wait_state(api, alert["id"], "resolved")
    assert final["resolved_by"] == "system"
    # Resolving a resolved alert is a conflict too.
    assert act(api, alert["id"], "resolve").status_code == 409


def test_fire_alarm_with_blocked_exit_raises_site_alert_cleared_by_exit(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.exit("exit-1", "blocked", 0.8)
    exit_alert = wait_alert(api, "exit blocked", kind="exit_blocked", site=SITE, device="exit-1")
    agent.smoke("smoke-1", "alarm")
    compound = wait_alert(api, "fire alarm with exit blocked", kind="fire_alarm_exit_blocked", site=SITE)
    assert compound["device"] is None
    assert compound["severity"] == "critical"
    assert compound["state"] == "open"
    assert compound["detail"]["detectors"] == ["smoke-1"]
    assert compound["detail"]["exits"] == ["exit-1"]

    agent.exit("exit-1", "clear", 0.0)
    wait_state(api, exit_alert["id"], "resolved")
    wait_state(api, compound["id"], "resolved")
    # The fire alarm itself is untouched.
    fire = api.alert(kind="fire_alarm", site=SITE, device="smoke-1")
    assert fire is not None
    assert fire["state"] == "open"


def test_fire_alarm_exit_blocked_clears_when_fire_alarm_ends(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.smoke("smoke-1", "alarm")
    fire = wait_alert(api, "fire alarm", kind="fire_alarm", site=SITE, device="smoke-1")
    agent.exit("exit-1", "blocked", 0.5)
    compound = wait_alert(api, "fire alarm with exit blocked", kind="fire_alarm_exit_blocked", site=SITE)
    agent.smoke("smoke-1", "normal")
    wait_detail(api, fire["id"], lambda d: d.get("detector_normal") is True, "detector normal noted")
    assert act(api, fire["id"], "ack").status_code == 200
    wait_state(api, fire["id"], "resolved")
    wait_state(api, compound["id"], "resolved")
    exit_alert = api.alert(kind="exit_blocked", site=SITE, device="exit-1")
    assert exit_alert is not None
    assert exit_alert["state"] == "open"


# --------------------------------------------------------------------------- exits and cameras


def test_exit_blocked_raised_and_cleared(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.exit("exit-1", "blocked", 0.9)
    alert = wait_alert(api, "exit blocked", kind="exit_blocked", site=SITE, device="exit-1")
    assert alert["severity"] == "major"
    assert alert["state"] == "open"
    assert alert["detail"]["blocked_ratio"] == 0.9
    agent.exit("exit-1", "clear", 0.0)
    final = wait_state(api, alert["id"], "resolved")
    assert final["resolved_by"] == "system"
    assert api.alerts(site=SITE, state="open") == []


def test_camera_offline_when_heartbeats_stop_and_cleared_when_they_resume(
    gateway: Gateway, agents: list[Agent]
) -> None:
    api, agent = start_site(gateway, agents, heartbeat_s=1)  # timeout = 1 s x 3 missed heartbeats
    agent.heartbeat("cam-1")
    alert = wait_alert(api, "camera offline", kind="camera_offline", site=SITE, device="cam-1")
    assert alert["severity"] == "major"
    assert alert["state"] == "open"
    assert alert["detail"]["timeout_s"] == pytest.approx(3.0)
    agent.heartbeat("cam-1")
    final = wait_state(api, alert["id"], "resolved")
    assert final["resolved_by"] == "system"


@pytest.mark.parametrize("stream", ["frozen", "dark", "lost"])
def test_camera_stream_fault_raised_and_cleared_on_ok(gateway: Gateway, agents: list[Agent], stream: str) -> None:
    api, agent = start_site(gateway, agents)
    agent.heartbeat("cam-1", "ok")
    agent.heartbeat("cam-1", stream)
    alert = wait_alert(api, f"stream {stream}", kind="camera_stream_fault", site=SITE, device="cam-1")
    assert alert["severity"] == "major"
    assert alert["detail"]["stream"] == stream
    agent.heartbeat("cam-1", "ok")
    wait_state(api, alert["id"], "resolved")


def test_detector_offline_when_silent_and_cleared_when_it_reports(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents, heartbeat_s=1)
    agent.smoke("smoke-1", "normal")
    alert = wait_alert(api, "detector offline", kind="detector_offline", site=SITE, device="smoke-1")
    assert alert["severity"] == "major"
    agent.smoke("smoke-1", "normal")
    wait_state(api, alert["id"], "resolved")


def test_declared_devices_that_never_report_are_offline(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents, heartbeat_s=1)  # declares cam-1, smoke-1, exit-1; sends nothing
    camera = wait_alert(api, "declared camera never heard", kind="camera_offline", site=SITE, device="cam-1")
    smoke = wait_alert(api, "declared detector never heard", kind="detector_offline", site=SITE, device="smoke-1")
    assert camera["detail"]["last_seen"] is None
    assert camera["detail"]["timeout_s"] == pytest.approx(3.0)
    assert datetime.fromisoformat(camera["detail"]["declared_at"]) <= datetime.fromisoformat(camera["opened_at"])
    assert api.alert(kind="exit_blocked", site=SITE) is None  # exits have no heartbeat rule

    agent.heartbeat("cam-1")  # its first message ends it
    assert wait_state(api, camera["id"], "resolved")["resolved_by"] == "system"
    # Resolved by hand while still silent: not raised again until the agent declares anew.
    assert act(api, smoke["id"], "resolve", "detector removed, agent config to be fixed").status_code == 200
    assert gateway.supervisor is not None
    gateway.supervisor.sweep_unheard(time.time() + 600)
    assert [a["id"] for a in api.alerts(site=SITE, kind="detector_offline", limit=1000)] == [smoke["id"]]
    agent.birth(DEVICES)  # a new declaration (the agent reconnected)
    again = wait_for(lambda: next((a for a in api.alerts(site=SITE, kind="detector_offline", limit=1000)
                                   if a["id"] != smoke["id"]), None), what="raised again after a new declaration")
    assert again["state"] == "open"


@pytest.mark.parametrize(
    ("state", "battery"), [("fault", 90.0), ("tamper", 90.0), ("normal", 10.0)], ids=["fault", "tamper", "battery"]
)
def test_detector_fault_raised_and_cleared(
    gateway: Gateway, agents: list[Agent], state: str, battery: float
) -> None:
    api, agent = start_site(gateway, agents)
    agent.smoke("smoke-1", "normal", 90.0)
    agent.smoke("smoke-1", state, battery)
    alert = wait_alert(api, f"detector fault ({state}, {battery} %)", kind="detector_fault", site=SITE,
                       device="smoke-1")
    assert alert["severity"] == "minor"
    assert alert["detail"]["state"] == state
    assert alert["detail"]["battery_pct"] == battery
    agent.smoke("smoke-1", "normal", 95.0)
    wait_state(api, alert["id"], "resolved")
    assert api.alert(kind="fire_alarm", site=SITE) is None


def test_agent_offline_on_last_will_and_resolved_by_new_birth(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.heartbeat("cam-1")
    agent.crash()
    alert = wait_alert(api, "agent offline", kind="agent_offline", site=SITE)
    assert alert["device"] is None
    assert alert["severity"] == "major"
    assert alert["state"] == "open"
    site = api.http.get(f"/api/v1/sites/{SITE}").json()
    assert site["agent"]["online"] is False

    restarted = Agent(gateway.settings.mqtt.url, SITE)
    agents.append(restarted)
    restarted.birth(DEVICES)
    final = wait_state(api, alert["id"], "resolved")
    assert final["resolved_by"] == "system"
    assert api.http.get(f"/api/v1/sites/{SITE}").json()["agent"]["online"] is True


def test_last_will_of_an_earlier_boot_raises_no_agent_offline(gateway: Gateway, agents: list[Agent]) -> None:
    """The agent restarted (new boot, new connection) before the old connection's Will fired."""
    api, old = start_site(gateway, agents)
    new = Agent(gateway.settings.mqtt.url, SITE)
    agents.append(new)
    new.birth(DEVICES)
    wait_for(lambda: (api.http.get(f"/api/v1/sites/{SITE}").json()["agent"] or {}).get("boot") == new.boot,
             what="the new birth stored")
    old.crash()  # the old boot's Will arrives now
    # Then a device message, so we know the Will (published before it) was processed.
    seq = new.exit("exit-1", "blocked", 0.5)
    wait_device_seq(api, SITE, "exit-1", seq)
    wait_alert(api, "exit blocked", kind="exit_blocked", site=SITE)
    assert api.alert(kind="agent_offline", site=SITE) is None
    agent = api.http.get(f"/api/v1/sites/{SITE}").json()["agent"]
    assert agent["online"] is True
    assert agent["boot"] == new.boot


# --------------------------------------------------------------------------- lifecycle details


def test_unacknowledged_critical_alert_escalates(settings: Settings, agents: list[Agent]) -> None:
    gw = Gateway(settings.updated(escalate_after_s=0.5))
    gw.start()
    try:
        assert gw.ingest is not None
        assert gw.ingest.wait_connected(10)
        api, agent = start_site(gw, agents)
        agent.exit("exit-1", "blocked", 0.7)  # major: never escalates
        exit_alert = wait_alert(api, "exit blocked", kind="exit_blocked", site=SITE, device="exit-1")
        agent.smoke("smoke-1", "alarm")
        fire = wait_alert(api, "fire alarm", kind="fire_alarm", site=SITE, device="smoke-1")
        escalated = wait_detail(api, fire["id"], lambda d: d.get("escalated") is True, "fire alarm escalated")
        assert escalated["state"] == "open"
        escalations = [h for h in escalated["history"] if h["action"] == "escalated"]
        assert len(escalations) == 1
        assert escalations[0]["by"] == "system"
        compound = wait_alert(api, "compound escalated", kind="fire_alarm_exit_blocked", site=SITE)
        wait_detail(api, compound["id"], lambda d: d.get("escalated") is True, "compound alert escalated")
        assert "escalated" not in api.get_alert(exit_alert["id"])["detail"]
        # An acknowledged alert is not escalated again; escalation happens once.
        assert act(api, fire["id"], "ack").status_code == 200
        after = api.get_alert(fire["id"])
        assert [h["action"] for h in after["history"]].count("escalated") == 1
    finally:
        gw.stop()


def test_repeat_counting(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.smoke("smoke-1", "alarm")
    alert = wait_alert(api, "fire alarm", kind="fire_alarm", site=SITE, device="smoke-1")
    agent.smoke("smoke-1", "normal")
    seq = agent.smoke("smoke-1", "alarm")
    wait_device_seq(api, SITE, "smoke-1", seq)
    assert api.get_alert(alert["id"])["count"] == 2

    # Identical consecutive alarm reports (the periodic re-send) do not count as repeats.
    for _ in range(3):
        seq = agent.smoke("smoke-1", "alarm")
    wait_device_seq(api, SITE, "smoke-1", seq)
    current = api.get_alert(alert["id"])
    assert current["count"] == 2
    assert current["state"] == "open"
    assert [h["action"] for h in current["history"]].count("repeated") == 1
    # Still one alert for the key.
    assert len(api.alerts(site=SITE, kind="fire_alarm")) == 1


def test_alert_history_oldest_first_with_who_and_when(gateway: Gateway, agents: list[Agent]) -> None:
    api, agent = start_site(gateway, agents)
    agent.exit("exit-1", "blocked", 0.6)
    alert = wait_alert(api, "exit blocked", kind="exit_blocked", site=SITE, device="exit-1")
    acked = act(api, alert["id"], "ack", "caretaker informed")
    assert acked.status_code == 200, acked.text
    agent.exit("exit-1", "clear", 0.0)
    final = wait_state(api, alert["id"], "resolved")

    history = final["history"]
    assert [h["action"] for h in history] == ["opened", "acknowledged", "resolved"]
    assert [h["state"] for h in history] == ["open", "acknowledged", "resolved"]
    times = [parse_time(h["at"]) for h in history]
    assert times == sorted(times)
    assert all(h["at"].endswith("Z") for h in history)
    assert history[0]["by"] == "system"
    ack = history[1]
    assert ack["by"] == "bootstrap"
    assert ack["note"] == "caretaker informed"
    assert final["acknowledged_by"] == "bootstrap"
    assert parse_time(ack["at"]) == parse_time(final["acknowledged_at"])
    assert history[2]["by"] == "system"
    assert parse_time(history[2]["at"]) == parse_time(final["resolved_at"])
    for field in ("opened_at", "updated_at", "acknowledged_at", "resolved_at"):
        assert final[field].endswith("Z"), field
