"""`safeguard check-config FILE`: the gateway's settings file as an operator checks it before a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import safeguard

pytestmark = pytest.mark.integration


def test_check_config_says_ok_or_every_mistake_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("database_url: postgresql://db/safeguard\nescalate_after_s: 120\n", encoding="utf-8")
    result = safeguard("check-config", str(path), env={"SAFEGUARD_BATCH_SIZE": "none"})  # the file alone is read
    assert (result.returncode, result.stdout) == (0, f"{path}: OK\n"), result.stderr

    path.write_text("database_url: mysql://db/safeguard\nescalate_after_s: soon\nbatch_sise: 10\n", encoding="utf-8")
    result = safeguard("check-config", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"safeguard: error: {path}:1: database_url: Value error, must start with postgresql://",
        f"{path}:2: escalate_after_s: Input should be a valid number, unable to parse string as a number",
        f"{path}:3: batch_sise: Extra inputs are not permitted",
    ]


def test_check_config_names_the_line_of_a_nested_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("database:\n  url: postgresql://db/safeguard\nliveness:\n  escalate_after_s: 120\n",
                    encoding="utf-8")
    result = safeguard("check-config", str(path))
    assert (result.returncode, result.stdout) == (0, f"{path}: OK\n"), result.stderr

    path.write_text("database:\n  url: mysql://db/safeguard\nliveness:\n  escalate_after_s: soon\n"
                    "ingest: {batch_sise: 10}\n", encoding="utf-8")
    result = safeguard("check-config", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"safeguard: error: {path}:2: database.url: Value error, must start with postgresql://",
        f"{path}:4: liveness.escalate_after_s: Input should be a valid number, unable to parse string as a number",
        f"{path}:5: ingest.batch_sise: Extra inputs are not permitted",
    ]
