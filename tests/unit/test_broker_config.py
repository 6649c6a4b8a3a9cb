"""The broker files `safeguard broker-config` renders, and the shipped broker/compose wiring."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from gateway import broker_config as bc
from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _settings(**extra: object) -> Settings:
    return Settings(mqtt_url="mqtts://safeguard-gateway:gw-pw@broker:8883", **extra)


def _sections(acl: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    user = None
    for line in acl.splitlines():
        if line.startswith("user "):
            user = line.split()[1]
            sections[user] = []
        elif line.startswith("topic ") and user is not None:
            sections[user].append(line)
    return sections


def test_each_site_gets_its_own_section_and_no_pattern_applies_to_service_accounts() -> None:
    accounts = [bc.Account(s, bc.hash_password("x")) for s in ("site-b", "site-a", "dispatch", "safeguard-gateway-h")]
    files = bc.render(_settings(broker_dispatch_password=SecretStr("d")), accounts)
    assert files.sites == ("site-a", "site-b")
    assert files.skipped == ("dispatch", "safeguard-gateway-h")
    external = files.files[bc.EXTERNAL_ACL]
    assert "pattern" not in external
    sections = _sections(external)
    assert sections["site-a"] == [
        "topic write sg/v1/site-a/agent/status", "topic write sg/v1/site-a/+/heartbeat",
        "topic write sg/v1/site-a/+/smoke", "topic write sg/v1/site-a/+/exit", "topic write sg/v1/site-a/+/snapshot",
        "topic read sg/v1/site-a/agent/ack"]
    assert sections["dispatch"] == ["topic read sg/v1/alerts/#"]
    assert set(sections) == {"site-a", "site-b", "dispatch"}
    assert _sections(files.files[bc.INTERNAL_ACL]) == {"safeguard-gateway": [
        "topic write sg/v1/alerts/#", "topic write sg/v1/+/agent/ack", "topic read sg/v1/#"]}
    users = {f: [line.split(":", 1)[0] for line in files.files[f].splitlines()]
             for f in (bc.EXTERNAL_PASSWORDS, bc.INTERNAL_PASSWORDS)}
    assert users == {bc.EXTERNAL_PASSWORDS: ["site-a", "site-b", "dispatch"],
                     bc.INTERNAL_PASSWORDS: ["safeguard-gateway"]}
    gateway_hash = files.files[bc.INTERNAL_PASSWORDS].strip().split(":", 1)[1]
    assert bc.verify_password("gw-pw", gateway_hash)
    assert "gw-pw" not in "".join(files.files.values())


def test_no_dispatch_account_without_its_password_and_no_gateway_account_without_one() -> None:
    files = bc.render(_settings(broker_dispatch_password=SecretStr("")), [])
    assert "dispatch" not in files.files[bc.EXTERNAL_PASSWORDS] + files.files[bc.EXTERNAL_ACL]
    with pytest.raises(bc.BrokerConfigError, match="mqtt_url must carry"):
        bc.render(Settings(mqtt_url="mqtts://broker:8883"), [])


def test_reserved_ids_follow_the_settings() -> None:
    settings = _settings(mqtt_client_id="gw", broker_dispatch_user="brigade",
                         broker_reserved_site_ids=frozenset({"ops"}))
    for site in ("gw", "gw-host-alarm", "brigade", "ops", "safeguard-gateway", "alerts"):
        with pytest.raises(bc.ReservedSiteId):
            bc.check_site_id(settings, site)
    for site in ("dispatch", "gwx", "site-a"):
        bc.check_site_id(settings, site)


def test_write_files_replaces_them_with_mode_0640(tmp_path: Path) -> None:
    files = bc.render(_settings(), [bc.Account("site-a", bc.hash_password("a"))])
    bc.write_files(tmp_path / "auth", files)
    bc.write_files(tmp_path / "auth", files)
    written = sorted(p.name for p in (tmp_path / "auth").iterdir())
    assert written == sorted(files.files)  # no temporary file left behind
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "auth").iterdir()} == {0o640}


def test_the_shipped_broker_reads_the_generated_files_per_listener() -> None:
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    assert "per_listener_settings true" in conf
    listeners = {m[1]: m[2] for m in re.finditer(r"^listener (\d+)\n(.*?)(?=^listener |\Z)", conf, re.S | re.M)}
    external, internal = listeners["8883"], listeners["1883"]
    assert "use_username_as_clientid true" in external
    assert "certfile" in external
    assert f"/mosquitto/auth/{bc.EXTERNAL_PASSWORDS}" in external
    assert f"/mosquitto/auth/{bc.EXTERNAL_ACL}" in external
    assert f"/mosquitto/auth/{bc.INTERNAL_PASSWORDS}" in internal
    assert f"/mosquitto/auth/{bc.INTERNAL_ACL}" in internal
    assert not (ROOT / "deploy" / "mosquitto" / "acl").exists()  # generated, never shipped


def test_compose_writes_the_broker_files_before_the_broker_and_keeps_them_current() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    assert "broker-config-init" in services["mosquitto"]["depends_on"]
    assert "mosquitto-auth:/mosquitto/auth:ro" in services["mosquitto"]["volumes"]
    init, watch = services["broker-config-init"], services["broker-config"]
    assert init["command"][0] == watch["command"][0] == "broker-config"
    assert "--watch" in watch["command"]
    assert watch["pid"] == "service:mosquitto"
    assert "mosquitto" not in init["depends_on"]  # it runs before the broker
