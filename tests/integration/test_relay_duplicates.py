"""The MQTT alert relay killed mid-relay (issue 15): at most the change in flight goes out twice, and
every payload carries ``change_id`` so that a consumer drops the repeat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from gateway.config import Settings
from gateway.store.db import connect
from tests.support import AlertSubscriber, scalar, wait_for

pytestmark = pytest.mark.integration

SITE = "site-relay"
CHANGES = 3000


def supervisor(settings: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")} | {
        "SAFEGUARD_MQTT_URL": settings.mqtt.url, "SAFEGUARD_DATABASE_URL": settings.database.url,
        "SAFEGUARD_MQTT_CLIENT_ID": settings.mqtt.client_id, "SAFEGUARD_SWEEP_INTERVAL_S": "0.2",
    }
    return subprocess.Popen([sys.executable, "-m", "safeguard.cli", "supervise"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_relay_killed_mid_relay_repeats_at_most_one_change_and_consumers_drop_it(settings: Settings) -> None:
    url = settings.database.url
    with connect(url) as conn:
        conn.execute("INSERT INTO sites (id, name) VALUES (%s, 'relay')", (SITE,))
        alert = conn.execute(
            "INSERT INTO alerts (site, device, kind, severity, state, opened_at, updated_at)"
            " VALUES (%s, 'smoke-1', 'detector_fault', 'minor', 'open', now(), now()) RETURNING id", (SITE,),
        ).fetchone()
        assert alert is not None
        conn.execute(  # committed changes not yet relayed, as after a burst
            "INSERT INTO alert_history (alert_id, site, at, state, action, by, alert)"
            " SELECT %(a)s, %(s)s, now(), 'open', 'repeated', 'system',"
            "        jsonb_build_object('id', %(a)s::bigint, 'site', %(s)s::text, 'kind', 'detector_fault', 'count', g)"
            " FROM generate_series(1, %(n)s) AS g",
            {"a": alert["id"], "s": SITE, "n": CHANGES},
        )
        conn.commit()
        all_ids = [r["id"] for r in conn.execute("SELECT id FROM alert_history ORDER BY id")]
    watcher = AlertSubscriber(settings.mqtt.url)
    received: list[dict[str, object]] = []

    def take(at_least: int) -> bool | None:
        received.extend(message for _, message in watcher.drain())
        return len(received) >= at_least or None

    first = supervisor(settings)
    try:
        wait_for(lambda: take(CHANGES // 10), timeout=60, what="the relay under way")
        first.kill()  # mid-relay: at least 90 % still to go
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    relayed_by_first = scalar(url, "SELECT count(*) FROM alert_history WHERE relayed")
    assert relayed_by_first < CHANGES
    time.sleep(0.5)  # what the broker had from the first relay reaches the watcher before the second starts
    take(0)
    second = supervisor(settings)
    try:
        wait_for(lambda: take(CHANGES + 1) or (len({m.get("change_id") for m in received}) >= CHANGES or None),
                 timeout=120, what="every change relayed")
        wait_for(lambda: scalar(url, "SELECT count(*) FROM alert_history WHERE NOT relayed") == 0 or None,
                 timeout=60, what="every change marked relayed")
        time.sleep(0.5)
        take(0)
    finally:
        second.terminate()
        second.wait(30)
        watcher.close()

    change_ids = [m["change_id"] for m in received]  # KeyError before issue 15: no change id to drop by
    repeats = sum(n - 1 for n in Counter(change_ids).values())
    assert repeats <= 1, f"{repeats} changes published twice (one relay kill: at most the one in flight)"
    first_seen = list(dict.fromkeys(change_ids))
    assert first_seen == all_ids  # after dropping repeats: every change, once, in order
    for message in received:
        assert message["count"] == all_ids.index(message["change_id"]) + 1  # the change id names its payload
