"""docker-compose.yml speaks the gateway's settings: every SAFEGUARD_* variable it sets is one."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.config import FLAT_NAMES, Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_every_safeguard_variable_in_compose_is_a_setting() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    names = {f"SAFEGUARD_{name.upper()}" for name in [*Settings.model_fields, *FLAT_NAMES]}  # sections, flat names
    used = {key for service in compose["services"].values() for key in (service.get("environment") or {})
            if key.startswith("SAFEGUARD_")}
    assert used, "no SAFEGUARD_* variables found: the compose file changed shape"
    assert used <= names, sorted(used - names)


def test_each_lane_has_its_own_ingest_service_with_stable_ids_on_exact_filters() -> None:
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    lanes = {}
    for name in ("ingest-alarm", "ingest"):
        service = services[name]
        command = service["command"]
        lanes[command[command.index("--lane") + 1]] = name
        assert service["hostname"]  # worker ids come from it; a container id would change on re-creation
        settings = Settings(ingest_catch_all=service["environment"]["SAFEGUARD_INGEST_CATCH_ALL"])
        assert settings.ingest.catch_all is False
    assert set(lanes) == {"alarm", "routine"}
