"""The edge agent's config: validated, and every error names the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfigError, load_agent_config
from edge_agent.sources.smoke import SmokeStatus, map_zigbee2mqtt
from protocol import SmokeState

GOOD = """\
site: hz-0001
broker:
  url: mqtts://hz-0001:secret@broker.example:8883
heartbeat_s: 30
cameras:
  - {id: cam-1, source: rtsp://10.0.0.5/stream1, name: 大门}
  - {id: cam-2, source: 0}
exits:
  - id: exit-1
    camera: cam-1
    region: [[10, 10], [200, 10], [200, 300], [10, 300]]
    persistence_s: 30
smoke:
  - {id: smoke-1, adapter: zigbee2mqtt, address: hall-smoke}
  - {id: smoke-2, adapter: dry_contact, address: /sys/class/gpio/gpio17/value}
  - {id: smoke-3, adapter: simulated}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_config_loads(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, GOOD))
    assert config.site == "hz-0001"
    assert [c.source for c in config.cameras] == ["rtsp://10.0.0.5/stream1", 0]
    assert config.exits[0].region[2] == (200, 300)
    assert config.outbox.path == Path("/var/lib/safeguard/outbox.db")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("url: mqtts://hz-0001:secret@broker.example:8883", "url: http://broker", ":3: broker.url: Value error, MQTT"),
        ("heartbeat_s: 30", "heartbeat_s: 0", ":4: heartbeat_s: Input should be greater than or equal to 1"),
        ("    camera: cam-1", "    camera: cam-9", ":10: exits.0.camera: exit 'exit-1' watches camera 'cam-9'"),
        ("source: 0}", "source: clips/absent.mp4}", ":7: cameras.1.source: 'clips/absent.mp4' is neither"),
        (", [200, 300], [10, 300]]", "]", ":11: exits.0.region: List should have at least 3 items"),
        ("adapter: simulated}", "adapter: gas}", ":16: smoke.2.adapter: Input should be"),
        ("{id: smoke-1, adapter: zigbee2mqtt, address: hall-smoke}", "{id: smoke-1, adapter: zigbee2mqtt}",
         "adapter zigbee2mqtt needs an address"),
        ("site: hz-0001", "site: hz 0001", ":1: site: String should match pattern"),
        ("heartbeat_s: 30", "heartbeat_s: 30\ncolour: red", ":5: colour: Extra inputs are not permitted"),
        ("{id: smoke-3, adapter: simulated}", "{id: cam-2, adapter: simulated}",
         ":16: smoke.2.id: device id 'cam-2' is used twice in the site"),
    ],
)
def test_errors_name_the_key_and_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(AgentConfigError, match=None) as info:
        load_agent_config(write(tmp_path, GOOD.replace(old, new)))
    assert message in str(info.value), str(info.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"site.yaml:1: not valid YAML: while parsing a flow sequence"):
        load_agent_config(write(tmp_path, "site: [unclosed\nbroker: x\n"))
    with pytest.raises(AgentConfigError, match=r"site.yaml:4: not valid YAML: .*could not find expected ':'"):
        load_agent_config(write(tmp_path, GOOD.replace("heartbeat_s: 30", "heartbeat_s 30\nx")))
    with pytest.raises(AgentConfigError, match="No such file"):
        load_agent_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"smoke": False, "battery": 87, "tamper": False}, SmokeStatus(SmokeState.NORMAL, 87.0)),
        ({"smoke": True, "battery": 87}, SmokeStatus(SmokeState.ALARM, 87.0)),
        ({"smoke": True, "tamper": True}, SmokeStatus(SmokeState.TAMPER)),
        ({"smoke": False, "test": True, "battery": 50}, SmokeStatus(SmokeState.TEST, 50.0)),
        ({"battery_defect": True, "battery": 3}, SmokeStatus(SmokeState.FAULT, 3.0)),
        ({"smoke": False, "battery": 150, "smoke_density": 12}, SmokeStatus(SmokeState.NORMAL, None, 12.0)),
        ({"smoke": "yes"}, SmokeStatus(SmokeState.NORMAL)),  # only a real true is an alarm
    ],
)
def test_zigbee2mqtt_fields_map_to_the_contract(payload: dict[str, object], expected: SmokeStatus) -> None:
    assert map_zigbee2mqtt(payload) == expected


def test_a_video_file_is_found_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "gate.mp4").write_bytes(b"\x00")
    config = load_agent_config(write(tmp_path, GOOD.replace("source: 0}", "source: clips/gate.mp4}")))
    assert config.cameras[1].source == str(tmp_path.resolve() / "clips" / "gate.mp4")


def test_the_example_config_the_docs_name_passes(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "site.example.yaml"
    config = load_agent_config(example)
    assert config.site == "hz-0001"
    assert (len(config.cameras), len(config.exits), len(config.smoke)) == (2, 1, 2)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "edge-agent.md").read_text(encoding="utf-8")
    assert "deploy/site.example.yaml" in docs
