"""The gateway's settings obey their sources in order: arguments > environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings, check_settings_file, load_settings

ELSEWHERE = "postgresql://elsewhere/other"
OURS = "postgresql://localhost/ours"


def test_an_exported_variable_cannot_override_a_constructor_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", ELSEWHERE)
    monkeypatch.setenv("SAFEGUARD_ESCALATE_AFTER_S", "5")
    settings = Settings(database_url=OURS)
    assert settings.database_url == OURS
    assert settings.escalate_after_s == 5  # what the arguments leave unsaid still comes from the environment


def test_an_exported_variable_cannot_override_load_settings_overrides(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"database_url: {ELSEWHERE}\n", encoding="utf-8")
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", ELSEWHERE)
    monkeypatch.setenv("SAFEGUARD_INGEST_LANES", '["alarm", "routine"]')
    settings = load_settings(path, database_url=OURS, ingest_lanes={"alarm"})  # e.g. `ingest --lane alarm`
    assert settings.database_url == OURS
    assert settings.ingest_lanes == {"alarm"}


def test_the_environment_beats_the_yaml_file_and_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"database_url: {ELSEWHERE}\nescalate_after_s: 120\n", encoding="utf-8")
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", OURS)
    monkeypatch.setenv("SAFEGUARD_SWEEP_INTERVAL_S", "0.5")
    settings = load_settings(path)
    assert settings.database_url == OURS  # environment over the file
    assert settings.sweep_interval_s == 0.5  # environment over the default
    assert settings.escalate_after_s == 120  # the file over the default
    assert settings.missed_heartbeats == Settings.model_fields["missed_heartbeats"].default


def test_a_plain_constructor_reads_no_file_left_by_load_settings(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEGUARD_ESCALATE_AFTER_S", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text("escalate_after_s: 120\n", encoding="utf-8")
    assert load_settings(path).escalate_after_s == 120
    assert Settings().escalate_after_s == Settings.model_fields["escalate_after_s"].default


# `safeguard check-config FILE`: the settings file checked as the gateway reads it, each mistake with its line.
GOOD = """\
mqtt_url: mqtts://safeguard-gateway:secret@broker.example.gov.cn:8883
database_url: postgresql://safeguard:secret@db:5432/safeguard
escalate_after_s: 120
ingest_lanes: [alarm]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_config_finds_nothing_wrong_in_a_good_file(tmp_path: Path) -> None:
    assert check_settings_file(write(tmp_path, GOOD)) == []
    assert check_settings_file(write(tmp_path, "")) == []  # nothing set: every default, as --config reads it


def test_check_config_names_the_line_of_a_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "batch_size: many\n")
    [problem] = check_settings_file(path)
    assert problem.startswith(f"{path}:5: batch_size: Input should be a valid integer")


def test_check_config_names_the_line_of_an_unknown_key_and_of_every_other_mistake(tmp_path: Path) -> None:
    path = write(tmp_path, "escalate_after_s: 120\nmqtt_urll: mqtt://broker\nnotify:\n  channels:\n"
                           "    x: {type: webhook, url: 'http://h', secret: short}\n")
    assert sorted(check_settings_file(path)) == [
        f"{path}:2: mqtt_urll: Extra inputs are not permitted",
        f"{path}:5: notify.channels.x.webhook.secret: Value should have at least 16 items after validation, not 5",
    ]


def test_check_config_of_a_missing_file_or_not_yaml(tmp_path: Path) -> None:
    assert check_settings_file(tmp_path / "absent.yaml") == [f"{tmp_path / 'absent.yaml'}: No such file or directory"]
    path = write(tmp_path, "escalate_after_s: 120\nnotify: {channels: [1, 2}\n")
    [problem] = check_settings_file(path)
    assert problem.startswith(f"{path}:2: not valid YAML: while parsing a flow sequence")
    assert check_settings_file(write(tmp_path, "just words\n")) == [
        f"{path}:1: expected a mapping of settings at the top level"]


def test_check_config_reads_the_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEGUARD_BATCH_SIZE", "1000")  # would hide the file's mistake if it were read
    monkeypatch.setenv("SAFEGUARD_API_PORT", "not a port")  # would add one
    path = write(tmp_path, "batch_size: many\n")
    [problem] = check_settings_file(path)
    assert problem.startswith(f"{path}:1: batch_size:")
