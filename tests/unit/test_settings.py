"""The gateway's settings obey their sources in order: arguments > environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import FLAT_NAMES, ConfigError, LivenessSettings, Settings, check_settings_file, load_settings

ELSEWHERE = "postgresql://elsewhere/other"
OURS = "postgresql://localhost/ours"


def test_an_exported_variable_cannot_override_a_constructor_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", ELSEWHERE)
    monkeypatch.setenv("SAFEGUARD_ESCALATE_AFTER_S", "5")
    settings = Settings(database_url=OURS)
    assert settings.database.url == OURS
    assert settings.liveness.escalate_after_s == 5  # what the arguments leave unsaid still comes from the environment


def test_an_exported_variable_cannot_override_load_settings_overrides(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"database_url: {ELSEWHERE}\n", encoding="utf-8")
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", ELSEWHERE)
    monkeypatch.setenv("SAFEGUARD_INGEST_LANES", '["alarm", "routine"]')
    settings = load_settings(path, database_url=OURS, ingest_lanes={"alarm"})  # e.g. `ingest --lane alarm`
    assert settings.database.url == OURS
    assert settings.ingest.lanes == {"alarm"}


def test_the_environment_beats_the_yaml_file_and_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"database_url: {ELSEWHERE}\nescalate_after_s: 120\n", encoding="utf-8")
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", OURS)
    monkeypatch.setenv("SAFEGUARD_SWEEP_INTERVAL_S", "0.5")
    settings = load_settings(path)
    assert settings.database.url == OURS  # environment over the file
    assert settings.liveness.sweep_interval_s == 0.5  # environment over the default
    assert settings.liveness.escalate_after_s == 120  # the file over the default
    assert settings.liveness.missed_heartbeats == LivenessSettings.model_fields["missed_heartbeats"].default


def test_a_plain_constructor_reads_no_file_left_by_load_settings(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEGUARD_ESCALATE_AFTER_S", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text("escalate_after_s: 120\n", encoding="utf-8")
    assert load_settings(path).liveness.escalate_after_s == 120
    assert Settings().liveness.escalate_after_s == LivenessSettings.model_fields["escalate_after_s"].default



# The sections (issue 14): every flat name of before still works, as a keyword, a YAML key and a variable.
def test_every_flat_name_has_a_place_in_the_tree() -> None:
    for flat, place in FLAT_NAMES.items():
        section, *field = place
        assert section in Settings.model_fields, flat
        if field:
            model = Settings.model_fields[section].annotation
            assert isinstance(model, type)
            assert field[0] in model.model_fields, flat
        assert flat not in Settings.model_fields, f"{flat} would be both a section and a flat name"


def test_an_exported_flat_variable_fills_the_nested_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", OURS)
    monkeypatch.setenv("SAFEGUARD_MQTT_URL", "mqtts://gw:pw@broker:8883")
    monkeypatch.setenv("SAFEGUARD_MISSED_HEARTBEATS", "5")
    monkeypatch.setenv("SAFEGUARD_BATCH_SIZE", "250")
    monkeypatch.setenv("SAFEGUARD_INGEST_QUEUE_MAX", "700")
    monkeypatch.setenv("SAFEGUARD_INGEST_LANES", '["routine"]')  # JSON, as before
    monkeypatch.setenv("SAFEGUARD_PROBLEM_DEADLINE_DAYS", '{"exit_blocked": 2}')
    monkeypatch.setenv("SAFEGUARD_PROBLEM_TIMEZONE", "UTC")
    settings = Settings()
    assert settings.database.url == OURS
    assert (settings.mqtt.endpoint.host, settings.mqtt.endpoint.port) == ("broker", 8883)
    assert settings.liveness.missed_heartbeats == 5
    assert (settings.ingest.batch_size, settings.ingest.queue_max) == (250, 700)
    assert settings.ingest.lanes == frozenset({"routine"})
    assert settings.problems.deadline_days["exit_blocked"] == 2
    assert settings.problems.deadline_days["detector_fault"] == 7  # the rest: defaults
    assert settings.timezone == "UTC"


def test_an_argument_beats_the_flat_variable_whatever_the_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEGUARD_DATABASE_URL", ELSEWHERE)
    monkeypatch.setenv("SAFEGUARD_BATCH_SIZE", "250")
    assert Settings(database_url=OURS).database.url == OURS
    assert Settings(database={"url": OURS}).database.url == OURS
    both = Settings(ingest={"queue_max": 10})
    assert (both.ingest.queue_max, both.ingest.batch_size) == (10, 250)  # the variable fills what the argument leaves
    monkeypatch.setenv("SAFEGUARD_DATABASE__URL", OURS)  # the nested spelling of a variable over the flat one
    assert Settings().database.url == OURS


def test_the_yaml_file_takes_flat_and_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEGUARD_ESCALATE_AFTER_S", raising=False)
    monkeypatch.delenv("SAFEGUARD_BATCH_SIZE", raising=False)
    monkeypatch.setenv("SAFEGUARD_API_PORT", "9001")
    path = tmp_path / "gateway.yaml"
    path.write_text("liveness:\n  escalate_after_s: 120\n  missed_heartbeats: 4\napi:\n  port: 8100\n"
                    "batch_size: 300\ncompliance:\n  online_share: 0.9\n", encoding="utf-8")
    settings = load_settings(path, missed_heartbeats=6)
    assert (settings.liveness.escalate_after_s, settings.liveness.missed_heartbeats) == (120, 6)
    assert settings.api.port == 9001  # the flat variable over the file's nested key
    assert settings.ingest.batch_size == 300
    assert (settings.compliance.online_share, settings.compliance.delay_p50_s) == (0.9, 10)
    assert check_settings_file(path) == []


def test_updated_takes_flat_and_nested_names_and_validates() -> None:
    settings = Settings(database_url=OURS, escalate_after_s=5)
    changed = settings.updated(escalate_after_s=0.5, mqtt_url="mqtt://broker:1884", ingest={"queue_max": 3})
    assert (changed.liveness.escalate_after_s, changed.liveness.missed_heartbeats) == (0.5, 3)
    assert (changed.mqtt.url, changed.ingest.queue_max, changed.database.url) == ("mqtt://broker:1884", 3, OURS)
    assert settings.liveness.escalate_after_s == 5  # a copy
    with pytest.raises(ValueError, match="greater than 0"):
        settings.updated(escalate_after_s=0)
    with pytest.raises(TypeError, match="escalate_afterwards"):
        settings.updated(escalate_afterwards=1)


def test_one_source_giving_a_setting_both_ways_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("database_url: postgresql://a/b\ndatabase:\n  url: postgresql://c/d\n", encoding="utf-8")
    assert check_settings_file(path) == [f"{path}:1: database_url: given twice: also as database.url"]

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


def test_check_config_names_the_line_of_a_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  url: mysql://db/x\n  pool_timeout_s: 2\ningest:\n  lanes: []\n"
                           "  batch_sise: 10\nliveness: {missed_heartbeats: 0}\nmissed_heartbeats: 2\n")
    assert sorted(check_settings_file(path)) == sorted([
        f"{path}:2: database.url: Value error, must start with postgresql://",
        f"{path}:5: ingest.lanes: Value error, at least one of alarm, routine",
        f"{path}:6: ingest.batch_sise: Extra inputs are not permitted",
        f"{path}:7: liveness.missed_heartbeats: Input should be greater than or equal to 1",
        f"{path}:8: missed_heartbeats: given twice: also as liveness.missed_heartbeats",
    ])


def test_load_settings_names_the_key_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEGUARD_BATCH_SIZE", "many")
    path = write(tmp_path, "database:\n  url: mysql://db/x\nescalate_after_s: soon\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert str(refused.value).split("; ") == [  # a variable by its flat name, as DESIGN section 7 calls it
        f"{path}: database.url: Value error, must start with postgresql://",
        "escalate_after_s: Input should be a valid number, unable to parse string as a number",
        "batch_size: Input should be a valid integer, unable to parse string as an integer",
    ]
