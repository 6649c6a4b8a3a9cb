"""amqtt is the demo extra's (issue 14): without it `safeguard demo` says how to install it, in one
line, before it starts anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from safeguard.cli import main
from safeguard.demo import EmbeddedBroker


@pytest.fixture
def no_amqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "amqtt" or m.startswith("amqtt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "amqtt", None)  # as if not installed: importing it raises


@pytest.mark.usefixtures("no_amqtt")
def test_the_demo_without_amqtt_names_the_install_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data-dir", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("safeguard: error: the demo's MQTT broker (amqtt) is not installed")
    assert "pip install -e '.[demo]'" in err
    assert not (tmp_path / "demo").exists(), "nothing started: PostgreSQL's data folder not even made"


@pytest.mark.usefixtures("no_amqtt")
def test_the_embedded_broker_without_amqtt_says_so() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[demo\]'"):
        EmbeddedBroker(1883).start()
