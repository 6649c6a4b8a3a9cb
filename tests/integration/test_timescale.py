"""What the TimescaleDB path claims (gateway/store/timescale.sql, docs/operations.md), on a real TimescaleDB:
hypertables, compression and retention policies with the configured intervals, migrate over compressed
chunks, and ingest into a compressed chunk (a redelivered reading stored once).

The rest of the storage-facing suite runs on both paths (tests marked ``storage``; docs/testing.md).
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from gateway.runtime import Gateway
from gateway.store.db import connect, from_epoch
from gateway.store.migrate import migrate
from protocol import MessageType, device_topic
from tests.support import Agent, Api, compressed_chunks, run_timescale_jobs, safeguard, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timescale_only]


def _rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[call-overload, unused-ignore]  # str query: flagged or not by psycopg version


def _policies(url: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(proc, table) -> (job id, schedule, the policy's interval)."""
    return {
        (proc, table): (job, schedule, interval)
        for job, proc, table, schedule, interval in _rows(
            url,
            "SELECT job_id, proc_name, hypertable_name, schedule_interval,"
            " coalesce(config->>'drop_after', config->>'compress_after', '')"
            " FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL",
        )
    }


def _insert_readings(url: str, site: str, device: str, arrivals: list[float]) -> None:
    with connect(url) as conn:
        conn.execute("INSERT INTO sites (id, created_at) VALUES (%s, '2000-01-01Z') ON CONFLICT DO NOTHING", (site,))
        conn.execute("INSERT INTO devices (site, id, kind, created_at)"
            " VALUES (%s, %s, 'camera', '2000-01-01Z') ON CONFLICT DO NOTHING",
                     (site, device))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (ts, received_at, site, device, kind, boot, seq, status, payload)"
                " VALUES (%s, %s, %s, %s, 'camera', 'b1', %s, 'ok', '{}')",
                [(from_epoch(t), from_epoch(t), site, device, seq) for seq, t in enumerate(arrivals)],
            )
        conn.commit()


def test_readings_and_camera_timeline_are_hypertables(database_url: str) -> None:
    assert _rows(database_url, "SELECT hypertable_name, column_name, time_interval"
                               " FROM timescaledb_information.dimensions"
                               " WHERE hypertable_schema = 'public' ORDER BY 1") == [
        ("camera_timeline", "since", timedelta(days=7)),
        ("readings", "ts", timedelta(days=1)),
    ]
    assert _rows(database_url, "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
                               " WHERE hypertable_schema = 'public'"
                               " ORDER BY 1") == [("camera_timeline", False), ("readings", True)]
    assert _rows(database_url, "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc"
                               " FROM timescaledb_information.compression_settings ORDER BY 1") == [
        ("device", 2, None, None), ("site", 1, None, None), ("ts", None, 1, False),
    ]
    # compliance_daily: a real-time continuous aggregate of the timeline, refreshed by the rollup (no policy).
    assert _rows(database_url, "SELECT view_name, hypertable_name, materialized_only"
                               " FROM timescaledb_information.continuous_aggregates") == [
        ("compliance_daily", "camera_timeline", False),
    ]


def test_policies_have_the_configured_intervals(database_url: str) -> None:
    policies = _policies(database_url)
    assert {key: (schedule, interval) for key, (_, schedule, interval) in policies.items()} == {
        ("policy_compression", "readings"): (timedelta(hours=12), "7 days"),
        ("policy_retention", "readings"): (timedelta(days=1), "90 days"),  # readings_retention_days' default
        ("policy_retention", "camera_timeline"): (timedelta(days=1), "90 days"),
    }
    # `safeguard migrate` with another readings_retention_days replaces both retention policies ...
    env = {"SAFEGUARD_READINGS_RETENTION_DAYS": "30"}
    result = safeguard("migrate", database_url=database_url, env=env)
    assert result.returncode == 0, result.stderr
    changed = _policies(database_url)
    assert changed[("policy_retention", "readings")][2] == "30 days"
    assert changed[("policy_retention", "camera_timeline")][2] == "30 days"
    assert changed[("policy_compression", "readings")] == policies[("policy_compression", "readings")]
    # ... and again with the same one leaves them alone.
    assert safeguard("migrate", database_url=database_url, env=env).returncode == 0
    assert _policies(database_url) == changed


def _ten_days_ago() -> float:
    """01:00 UTC ten days ago: readings from then to 22 h later are in one chunk (a UTC day), whatever
    the time the test runs (from ``now - 10 days``, 50 minutes of readings crossed midnight after 23:10)."""
    return (time.time() // 86_400 - 10) * 86_400 + 3_600


def test_migrate_again_over_compressed_chunks(database_url: str) -> None:
    _insert_readings(database_url, "s1", "cam-1", [_ten_days_ago() + 30 * i for i in range(100)])
    assert run_timescale_jobs(database_url, "policy_compression") == 1  # the policy compresses the old chunk
    assert compressed_chunks(database_url) == (1, 1)
    with connect(database_url) as conn:
        assert migrate(conn) == []
        conn.commit()
    assert _rows(database_url, "SELECT count(*) FROM readings") == [(100,)]


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


def test_compressed_batches_are_skipped_by_transaction_and_arrival(database_url: str) -> None:
    """The timeline looks for readings stored since its last run (by txid) every minute, and compliance
    on request by arrival: compressed batches carry both ranges, so old ones are not even decompressed."""
    now = time.time()
    _insert_readings(database_url, "s1", "cam-1", [now - 10 * 86_400 + 30 * i for i in range(2000)])
    run_timescale_jobs(database_url, "policy_compression")
    with psycopg.connect(database_url) as conn:
        conn.execute("ANALYZE readings")
        for column, where in (("txid", "txid >= pg_snapshot_xmin(pg_current_snapshot())"),
                              ("received_at", "received_at >= now() - interval '1 day'")):
            row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM readings WHERE {where}"
                               ).fetchone()
            assert row is not None
            batches = [n for n in _plan_nodes(row[0][0]["Plan"])
                       if n.get("Relation Name", "").startswith("compress_hyper_")]
            assert batches, row[0]  # the compressed chunks were planned ...
            for scan in batches:  # ... and their batches left out by their maximum, none decompressed
                assert f"_ts_meta_v2_max_{column}" in scan.get("Filter", ""), scan
                assert (scan["Actual Rows"], scan["Rows Removed by Filter"] > 0) == (0, True), scan


def test_ingest_into_a_compressed_chunk_stores_a_redelivery_once(gateway: Gateway) -> None:
    """A late reading (after an outage of the agent's uplink) lands in a chunk already compressed; its
    redelivery (at least once) is not stored twice; the device is listed as usual."""
    url = gateway.settings.database.url
    api = Api(gateway.api_url)
    api.put_site("ts-site", name="school")
    agent = Agent(gateway.settings.mqtt.url, "ts-site")
    try:
        agent.birth([{"id": "cam-1", "kind": "camera"}])
        old = _ten_days_ago()
        agent.heartbeat("cam-1", ts=old)
        wait_for(lambda: _rows(url, "SELECT count(*) FROM readings") == [(1,)], what="the late heartbeat stored")
        assert run_timescale_jobs(url, "policy_compression") == 1
        assert compressed_chunks(url) == (1, 1)
        payload = {"ts": old, "boot": agent.boot, "seq": 0, "stream": "ok", "fps": 10.0, "last_frame_ts": old}
        agent.publish_raw(device_topic("ts-site", "cam-1", MessageType.HEARTBEAT), json.dumps(payload))
        agent.heartbeat("cam-1", ts=old + 30)  # into the compressed chunk too, after the redelivery
        wait_for(lambda: _rows(url, "SELECT count(*) FROM readings") == [(2,)], what="the second heartbeat stored")
        assert _rows(url, "SELECT seq, count(*) FROM readings GROUP BY seq ORDER BY seq") == [(0, 1), (1, 1)]
        response = api.http.get("/api/v1/sites/ts-site/devices")
        assert response.status_code == 200, response.text
        (device,) = response.json()["items"]
        assert (device["id"], device["online"], device["status"]) == ("cam-1", True, "ok")
        assert api.dead_letters() == []
    finally:
        agent.close()


def test_the_compose_stack_runs_the_versions_tested_here(database_url: str) -> None:
    """docker-compose.yml pins TimescaleDB and PostgreSQL to what this suite runs on (docs/operations.md)."""
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text(encoding="utf-8"))
    image = compose["services"]["timescaledb"]["image"]
    match = re.fullmatch(r"timescale/timescaledb:(\d+\.\d+\.\d+)-pg(\d+)", image)
    assert match, f"{image}: pin a TimescaleDB version and a PostgreSQL major, not latest"
    ((version, server),) = _rows(database_url, "SELECT extversion, current_setting('server_version_num')::int / 10000"
                                               " FROM pg_extension WHERE extname = 'timescaledb'")
    assert (match[1], int(match[2])) == (version, server)
