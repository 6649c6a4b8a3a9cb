"""`safeguard demo` end to end: its API shows the scripted incidents, and Ctrl-C leaves no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from safeguard.devservers import free_port
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_demo_shows_incidents_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "safeguard.cli", "demo", "--data-dir", str(data_dir), "--api-port", str(api_port),
         "--mqtt-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        token = proc.stdout.readline().strip()
        assert token.startswith("sg_"), f"no token printed; stderr: {proc.stderr.read() if proc.stderr else ''}"
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"})

        wanted = {("demo-hz-001", "fire_alarm"), ("demo-hz-001", "exit_blocked"),
                  ("demo-hz-001", "fire_alarm_exit_blocked"), ("demo-nb-001", "camera_offline")}
        seen: set[tuple[str, str]] = set()

        def incidents() -> bool:
            items = api.get("/api/v1/alerts", params={"limit": 100}).json()["items"]
            seen.update((a["site"], a["kind"]) for a in items)
            return wanted <= seen

        try:
            wait_for(incidents, timeout=60, what="the demo's fire alarm, blocked exit and offline camera")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; wanted {sorted(wanted)}, seen {sorted(seen)}") from None
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    assert _processes_mentioning(str(data_dir)) == [], "the demo left a process running"
