"""`safeguard serve` runs the alarm lane in a child process of its own (issue 10), against the real
Mosquitto and PostgreSQL: a fire alarm is stored through it, the child is restarted when it dies,
and it does not outlive a parent killed outright. ``--one-process`` keeps everything in one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from safeguard.devservers import MosquittoServer, free_port
from tests.support import ADMIN_TOKEN, Agent, Api, child_pids, scalar, wait_for

pytestmark = pytest.mark.integration

SITE = "site-serve"


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
    except FileNotFoundError:
        return []


def alarm_lane_child(pid: int) -> int | None:
    return next((c for c in child_pids(pid) if command_line(c)[-3:] == ["ingest", "--lane", "alarm"]), None)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@contextlib.contextmanager
def serve(mosquitto: MosquittoServer, database_url: str, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    env |= {"SAFEGUARD_MQTT_URL": mosquitto.url, "SAFEGUARD_DATABASE_URL": database_url,
            "SAFEGUARD_API_HOST": "127.0.0.1", "SAFEGUARD_API_PORT": str(port),
            "SAFEGUARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN, "SAFEGUARD_BATCH_INTERVAL_S": "0.05"}
    proc = subprocess.Popen([sys.executable, "-m", "safeguard.cli", "serve", *extra], env=env)
    api = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(api), timeout=60, what="safeguard serve ready")
        yield proc, api
    finally:
        for pid in child_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=30)


def _ready(api: str) -> bool:
    try:
        return httpx.get(f"{api}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def metric(api: str, name: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{api}/metrics", timeout=10).text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


def raise_alarm(mosquitto: MosquittoServer, database_url: str, device: str) -> None:
    agent = Agent(mosquitto.url, SITE)
    try:
        agent.birth([{"id": device, "kind": "smoke"}])
        # Sent again until stored: the lane may still be connecting (its session is new).
        def stored() -> bool:
            agent.smoke(device, "alarm")
            return scalar(database_url, "SELECT count(*) FROM alerts WHERE site = %s AND device = %s"
                          " AND kind = 'fire_alarm'", SITE, device) == 1
        wait_for(stored, timeout=60, what=f"the fire alarm of {device} stored")
    finally:
        agent.close()


def test_serve_runs_the_alarm_lane_apart_and_restarts_it(mosquitto: MosquittoServer, database_url: str) -> None:
    with serve(mosquitto, database_url) as (proc, api):
        Api(api).put_site(SITE, name="Serve")
        first = wait_for(lambda: alarm_lane_child(proc.pid), what="the alarm lane's child process")
        accepted = metric(api, "sg_messages_accepted_total")
        raise_alarm(mosquitto, database_url, "smoke-1")
        # The API's /metrics counts what the child stored too (gateway/metrics_merge.py).
        wait_for(lambda: metric(api, "sg_messages_accepted_total") >= accepted + 2 or None,
                 what="the alarm lane's birth and alarm counted in serve's /metrics")

        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (c := alarm_lane_child(proc.pid)) != first and c, timeout=30,
                          what="the alarm lane restarted")
        assert running(second)
        raise_alarm(mosquitto, database_url, "smoke-2")

        proc.kill()  # no SIGTERM handler runs: the child must notice on its own
        proc.wait(timeout=30)
        wait_for(lambda: not running(second), timeout=30, what="the orphaned alarm lane stopped")


def test_serve_one_process_has_no_child(mosquitto: MosquittoServer, database_url: str) -> None:
    with serve(mosquitto, database_url, "--one-process") as (proc, api):
        Api(api).put_site(SITE, name="Serve")
        raise_alarm(mosquitto, database_url, "smoke-1")
        assert child_pids(proc.pid) == []
