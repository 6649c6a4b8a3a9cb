"""No traceback for a user mistake anywhere in the command line: every sub-command, given bad
input, says what is wrong on one line and exits non-zero (issue 13 point 4)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from safeguard.cli import build_parser
from tests.support import safeguard

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


NO_DB = f"postgresql://safeguard@127.0.0.1:{_closed_port()}/nothing"
NO_BROKER = f"mqtt://127.0.0.1:{_closed_port()}"

# (arguments, what the one line must say). FILE is a file that does not exist; BAD a file of junk.
MISTAKES: list[tuple[tuple[str, ...], str]] = [
    (("demo", "--api-port", "eighty"), "invalid int value"),
    (("serve", "--config", "FILE"), "No such file"),
    (("ingest", "--config", "BAD"), "expected a mapping"),
    (("supervise", "--config", "BAD"), "expected a mapping"),
    (("api", "--config", "FILE"), "No such file"),
    (("migrate",), "cannot use the database"),
    (("check-config", "FILE"), "No such file"),
    (("check-config", "BAD"), "1: expected a mapping"),
    (("sites", "import", "FILE"), "No such file"),
    (("sites", "import", "BAD"), "line 1 must name the columns"),
    (("sites", "delete", "hz-0001"), "give --yes"),
    (("sites", "delete", "hz-0001", "--yes"), "cannot use the database"),
    (("token", "create", "--role", "chief", "--name", "x"), "invalid choice"),
    (("token", "create", "--role", "admin", "--name", "x", "--expires", "soon"), "--from 'soon'"),
    (("token", "list"), "cannot use the database"),
    (("token", "revoke", "seven"), "invalid int value"),
    (("simulate", "--sites", "1", "--duration", "1", "--mqtt-url", NO_BROKER), "cannot reach the MQTT broker"),
    (("simulate", "--scenario", "FILE"), "No such file"),
    (("simulate", "--sites", "1", "--api-url", "http://127.0.0.1:1"), "--api-url needs --token"),
    (("agent", "--config", "FILE"), "No such file"),
    (("agent", "check-config", "BAD"), "expected the agent's settings"),
    (("agent",), "give the site's config"),
    (("inspect", "sample", "--level", "city", "--seed", "1"), "cannot use the database"),
    (("inspect", "compliance", "--from", "yesterday"), "--from 'yesterday'"),
    (("inspect", "ledger", "--out", "x.pdf"), "cannot use the database"),
    (("inspect", "summary", "--out", "x.html"), "the summary is per city"),
    (("record", "out.jsonl", "--mqtt-url", NO_BROKER, "--mqtt-version", "5"), "cannot reach the MQTT broker"),
    (("replay", "FILE", "--mqtt-url", NO_BROKER), "No such file"),
    (("replay", "BAD", "--mqtt-url", NO_BROKER), "is not a safeguard-record/1 header"),
    (("clips", "--bogus"), "unrecognized arguments"),
    (("broker-config",), "the following arguments are required: --out"),
    (("notify", "--config", "FILE"), "No such file"),
    (("notify", "--config", "BAD"), "expected a mapping"),
    (("broker-config", "--out", "FILE"), "cannot use the database"),
    (("sites", "broker-secret", "alerts"), "reserved"),
]


def test_every_sub_command_has_a_mistake_here() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # argparse keeps sub-commands there
    assert commands is not None
    tried = {args[0] for args, _ in MISTAKES}
    assert set(commands) <= tried, f"no bad-input case for: {sorted(set(commands) - tried)}"


def _case_id(value: object) -> str:
    """A case's arguments, the closed ports' URLs by name: ids must not change between collections
    (pytest-xdist's workers each collect, and compare)."""
    if not isinstance(value, tuple):
        return ""
    return " ".join(value).replace(NO_BROKER, "NO_BROKER").replace(NO_DB, "NO_DB")


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=_case_id)
def test_a_mistake_is_one_line_and_a_non_zero_exit(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"just words\n")
    files = {"FILE": str(tmp_path / "absent.yaml"), "BAD": str(bad)}
    argv = [files.get(a, a) for a in args]
    result = safeguard(*argv, env={"SAFEGUARD_DATABASE_URL": NO_DB, "SAFEGUARD_MQTT_URL": NO_BROKER})
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], result.stderr
