"""`safeguard record` captures traffic exactly; `safeguard replay` reproduces the incident's alerts."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from gateway.runtime import Gateway
from protocol import MessageType, device_topic
from protocol.mqtt import MqttVersion
from safeguard.devservers import MosquittoServer
from simulators.recording import FORMAT, Recorder, RecordingError, read_recording, replay
from tests.support import Agent, Api, wait_for

pytestmark = pytest.mark.integration

SITE = "rec-site"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4  # not UTF-8: stored as base64


def _record_incident(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Record an incident on a broker of its own: birth, alarm, blocked exit, snapshot, crash."""
    path = tmp_path / "incident.jsonl"
    with MosquittoServer(tmp_path / "field-broker") as broker, path.open("w", encoding="utf-8") as out:
        recorder = Recorder(broker.url, MqttVersion.V5, out)
        recorder.start()
        assert recorder.subscribed.wait(10)
        agent = Agent(broker.url, SITE, heartbeat_s=30)
        agent.birth([{"id": "smoke-1", "kind": "smoke"}, {"id": "exit-1", "kind": "exit"}])
        agent.smoke("smoke-1", "normal")
        agent.smoke("smoke-1", "alarm")
        agent.exit("exit-1", "blocked", 0.7)
        agent.publish_raw(device_topic(SITE, "exit-1", MessageType.SNAPSHOT), JPEG)
        agent.crash()  # the broker publishes the Last Will
        wait_for(lambda: recorder.count >= 6, what="the recorder to see the whole incident")
        recorder.stop()
    payloads = [r.payload for r in read_recording(path)]
    return path, payloads


def test_record_keeps_payloads_exact(tmp_path: Path) -> None:
    path, payloads = _record_incident(tmp_path)
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0])["format"] == FORMAT
    assert JPEG in payloads
    statuses = [json.loads(p) for p in payloads if p.startswith(b'{"online"')]
    assert [s["online"] for s in statuses] == [True, False]  # birth, then the Last Will
    times = [r.t for r in read_recording(path)]
    assert times == sorted(times)


def test_replay_reproduces_the_alerts(tmp_path: Path, gateway: Gateway) -> None:
    path, _ = _record_incident(tmp_path)
    api = Api(gateway.api_url)
    api.put_site(SITE, name="Replayed")
    progress = io.StringIO()
    summary = replay(path, gateway.settings.mqtt.url, MqttVersion.V5, speed=20, progress=progress)
    assert summary.failed == 0
    assert summary.published == len(list(read_recording(path)))
    assert "replay [" in progress.getvalue()

    expected = {("smoke-1", "fire_alarm"), ("exit-1", "exit_blocked"), (None, "fire_alarm_exit_blocked"),
                (None, "agent_offline")}

    def alerts() -> set[tuple[str | None, str]] | None:
        seen = {(a["device"], a["kind"]) for a in api.alerts(site=SITE)}
        return seen if seen == expected else None

    wait_for(alerts, what=f"the replayed incident's alerts {expected}")
    time.sleep(0.5)
    assert {(a["device"], a["kind"]) for a in api.alerts(site=SITE)} == expected, "no extra alert appears"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "line 1 is not a safeguard-record/1 header"),
        (json.dumps({"format": FORMAT}) + "\n{\"t\": 1}\n", "line 2"),
        (json.dumps({"format": FORMAT}) + "\n{\"t\": 1, \"topic\": \"a\", \"payload_b64\": \"!!\"}\n", "line 2"),
    ],
)
def test_bad_recording_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecordingError, match=message):
        list(read_recording(path))
