"""Every shipped scenario passes `--check` against a real gateway; a wrong expectation fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.rules.model import GATEWAY_KINDS, AlertKind
from gateway.runtime import Gateway
from simulators.scenario import AlertWatch, Scenario, ScenarioRunner, format_table, judge, load_scenario
from tests.support import ADMIN_TOKEN, Api

pytestmark = pytest.mark.integration

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "simulators" / "scenarios").glob("*.yaml"))


def _check(gateway: Gateway, scenario: Scenario) -> tuple[bool, str]:
    api = Api(gateway.api_url)
    for site in scenario.sites:
        api.put_site(site.id, name=site.name or site.id, cameras_required=len(site.cameras))
    runner = ScenarioRunner(scenario, gateway.settings.mqtt.url, gateway.settings.mqtt.version, seed=1)
    verdicts = judge(scenario, runner.run(AlertWatch({s.id for s in scenario.sites})))
    return all(v.ok for v in verdicts), format_table(scenario, verdicts)


def test_the_shipped_scenarios_cover_every_alert_kind() -> None:
    expected = {e.kind for path in SCENARIOS for e in load_scenario(path).expect}
    assert expected == set(AlertKind) - GATEWAY_KINDS  # notifier_failing: tests/integration/test_notify.py
    assert any(f.kind == "any" and not load_scenario(p).expect for p in SCENARIOS for f in load_scenario(p).forbid)
    assert len(SCENARIOS) >= 8


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes(gateway: Gateway, path: Path) -> None:
    ok, table = _check(gateway, load_scenario(path))
    assert ok, table


def test_a_wrong_expectation_fails(gateway: Gateway, tmp_path: Path) -> None:
    data = yaml.safe_load((SCENARIOS[0].parent / "fire-alarm.yaml").read_text(encoding="utf-8"))
    data["expect"].append({"kind": "exit_blocked", "site": "sc-fire-a", "device": "exit-1", "at": 2, "within": 5})
    data["forbid"].append({"kind": "fire_alarm", "site": "sc-fire-a", "device": "smoke-1"})
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    result = subprocess.run(
        [sys.executable, "-m", "safeguard.cli", "simulate", "--scenario", str(wrong), "--check",
         "--mqtt-url", gateway.settings.mqtt.url, "--api-url", gateway.api_url, "--token", ADMIN_TOKEN],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("PASS  fire_alarm open at sc-fire-a/smoke-1") for line in lines), result.stdout
    assert any("FAIL  exit_blocked open at sc-fire-a/exit-1" in line and "never happened" in line for line in lines)
    assert any("FAIL  no fire_alarm alert at sc-fire-a/smoke-1" in line for line in lines)
    assert lines[-1] == "4 passed, 2 failed"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"events": [{"at": 1, "site": "nowhere", "do": "agent_crash"}]}, "unknown site 'nowhere'"),
        ({"events": [{"at": 1, "site": "sc-fire-a", "device": "cam-9", "do": "camera_silent"}]}, "no device 'cam-9'"),
        ({"events": [{"at": 1, "site": "sc-fire-a", "device": "smoke-1", "do": "smoke"}]}, "smoke needs a value"),
        ({"expect": [{"kind": "fire_alarm", "site": "sc-fire-a", "at": 10, "within": 30}]}, "past the duration"),
        ({"expect": [{"kind": "fire", "site": "sc-fire-a", "within": 3}]}, "expect.0.kind"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_scenario_names_the_key(tmp_path: Path, patch: dict[str, object], message: str) -> None:
    data = yaml.safe_load((SCENARIOS[0].parent / "fire-alarm.yaml").read_text(encoding="utf-8"))
    data.update(patch)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_scenario(path)
