"""The gateway's settings obey their sources in order: arguments > environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings, load_settings

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
