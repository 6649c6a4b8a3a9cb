"""The leader-elected loop: liveness sweeps, escalation, retention, and the alert relay to MQTT.

Any number of supervisors may run; the one holding a PostgreSQL session advisory
lock is the leader. If its process or connection dies the lock is released and
another supervisor takes over within one ``sweep_interval_s``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool

from gateway import metrics
from gateway.compliance import rollup
from gateway.config import Settings
from gateway.problems import actions as problem_actions
from gateway.rules import engine
from gateway.rules.model import Change, OpenAlerts
from gateway.store import alerts as alert_store
from gateway.store import history as history_store
from gateway.store import liveness as liveness_store
from gateway.store import retention as retention_store
from gateway.store.db import Conn, connect, from_epoch, lock_sites, try_session_lock
from gateway.store.migrate import retention_policies
from protocol import DeviceKind, alert_topic
from protocol.mqtt import new_client

log = logging.getLogger(__name__)

LEADER_LOCK = 0x5A_FE_6A_01
_CATCH_UP_S = 5.0  # the compliance timeline's catching up, per call at most
_PRUNE_EVERY_S = 3600.0
_RELAY_BATCH = 500


class AlertRelay:
    """Publishes committed alert changes to ``sg/v1/alerts/{site}`` (QoS 1), in order.

    At least once: each change is marked relayed as soon as the broker acknowledged it, one at a
    time, so a relay killed at any instant publishes at most the one change in flight again (it was
    up to a whole batch before issue 15). Every payload carries ``change_id`` (the
    ``alert_history`` id, the SSE event id) for consumers to drop such a repeat.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()

    def start(self) -> None:
        endpoint = self._settings.mqtt.endpoint
        client_id = f"{self._settings.mqtt.client_id}-relay-{uuid.uuid4().hex[:8]}"
        client = new_client(endpoint, client_id, self._settings.mqtt.version)
        client.on_connect = lambda _c, _u, _f, reason, _p: (
            self._connected.clear() if reason.is_failure else self._connected.set()
        )
        client.on_disconnect = lambda *_args: self._connected.clear()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_async(endpoint.host, endpoint.port, keepalive=30)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def relay(self, pool: ConnectionPool[Conn]) -> int:
        """Publish pending changes; mark each relayed once the broker acknowledged it."""
        client = self._client
        if client is None or not self._connected.is_set():
            return 0
        with pool.connection() as conn:
            rows = history_store.unrelayed(conn, _RELAY_BATCH)
            conn.commit()
            done = 0
            for row in rows:
                info = client.publish(alert_topic(row["site"]), json.dumps(relayed_alert(row)), qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:  # paho refuses silently past its in-flight limit
                    log.warning("alert relay publish refused (rc=%s); will retry", info.rc)
                    break
                info.wait_for_publish(timeout=10)
                if not info.is_published():
                    break
                history_store.mark_relayed(conn, row["id"])
                conn.commit()
                done += 1
            if done:
                metrics.RELAYED.inc(done)
            return done


def relayed_alert(row: dict[str, Any]) -> dict[str, Any]:
    """The MQTT payload of one change: the alert, and ``change_id`` to drop a repeat by."""
    return {**row["alert"], "change_id": row["id"]}


class Supervisor:
    def __init__(self, settings: Settings, pool: ConnectionPool[Conn]) -> None:
        self._settings = settings
        self._pool = pool
        self._relay = AlertRelay(settings)
        self._stopping = threading.Event()
        self._leader = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._last_run: dict[str, float] = {}  # periodic steps of the tick: when each last ran
        self._last_compliance_sweep: float | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    def start(self) -> None:
        self._relay.start()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._relay.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with connect(self._settings.database.url, autocommit=True) as conn:
                    self._campaign(conn)
            except psycopg.OperationalError as exc:
                log.warning("supervisor lost the database (%s); retrying", exc)
            except Exception:
                log.exception("supervisor step failed; retrying")
            finally:
                self._leader.clear()
            self._stopping.wait(self._settings.liveness.sweep_interval_s)

    def _campaign(self, conn: Conn) -> None:
        """Wait for leadership on ``conn``; lead until stopped or the connection dies."""
        while not self._stopping.is_set():
            if try_session_lock(conn, LEADER_LOCK):
                break
            self._stopping.wait(self._settings.liveness.sweep_interval_s)
        else:
            return
        log.info("supervisor is the leader")
        self._leader.set()
        history_store.listen(conn)
        next_sweep = 0.0
        while not self._stopping.is_set():
            now = time.time()
            if now >= next_sweep:
                self.tick(now)
                next_sweep = now + self._settings.liveness.sweep_interval_s
            self._relay.relay(self._pool)
            wait = max(0.05, min(next_sweep - time.time(), 0.5))
            for _ in conn.notifies(timeout=wait, stop_after=1):
                pass

    def tick(self, now: float) -> None:
        """One round of the leader's time-based rules (public for tests and tools)."""
        self.sweep_silent(now)
        self.sweep_unheard(now)
        self.escalate(now)
        self._periodic("problem sweep", self._settings.problems.sweep_s, now, self.sweep_problems)
        self._periodic("daily compliance", self._settings.compliance.timeline_every_s, now, self.keep_daily)
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self.prune(now)
            self._last_prune = now

    def _periodic(self, name: str, every_s: float, now: float, step: Callable[[float], object]) -> None:
        """Run ``step`` at most every ``every_s``; its failure must not stop the alert sweeps and the relay."""
        last = self._last_run.get(name)
        if last is not None and now - last < every_s:
            return
        self._last_run[name] = now
        try:
            step(now)
        except psycopg.OperationalError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %s s", name, every_s)

    def _persist(self, conn: Conn, changes: list[Change], now: float) -> None:
        for recorded in alert_store.persist(conn, changes, from_epoch(now)):
            metrics.ALERT_CHANGES.labels(recorded.alert["kind"], recorded.alert["state"]).inc()

    def sweep_silent(self, now: float) -> None:
        """camera_offline / detector_offline for devices past their deadline (one indexed query)."""
        at = from_epoch(now)
        with self._pool.connection() as conn, conn.transaction():
            sites = liveness_store.silent_sites(conn, at)
            if not sites:
                return
            lock_sites(conn, sites)
            rows = liveness_store.mark_silent_offline(conn, at, sites)
            alerts = alert_store.load_open(conn, sites)
            changes: list[Change] = []
            for r in rows:
                step = engine.evaluate_silence(
                    r["site"], r["device"], DeviceKind(r["kind"]),
                    last_seen=r["last_seen"], timeout_s=r["timeout_s"], now=now, alerts=alerts,
                )
                alerts = engine.apply(alerts, step)
                changes += step
            self._persist(conn, changes, now)

    def sweep_unheard(self, now: float) -> None:
        """camera_offline / detector_offline for declared devices that never sent anything."""
        settings = self._settings
        at = from_epoch(now)

        def find(conn: Conn, sites: list[str] | None) -> list[DictRow]:
            return liveness_store.unheard_devices(conn, at, sites, heartbeats=settings.liveness)

        self._sweep_locked(now, find, lambda r, alerts: engine.evaluate_unheard(
            r["site"], r["device"], DeviceKind(r["kind"]), declared_at=r["declared_at"], timeout_s=r["timeout_s"],
            now=now, alerts=alerts,
        ))

    def escalate(self, now: float) -> None:
        """Escalate open critical alerts no one acknowledged within ``escalate_after_s``."""
        cutoff = from_epoch(now - self._settings.liveness.escalate_after_s)
        self._sweep_locked(now, lambda conn, sites: alert_store.escalation_due(conn, cutoff, sites),
                           lambda row, _alerts: engine.evaluate_escalation(
                               alert_store.open_alert(row), opened_at=row["opened_at"].timestamp(), now=now,
                               after_s=self._settings.liveness.escalate_after_s,
                           ))

    def _sweep_locked(
        self, now: float, find: Callable[[Conn, list[str] | None], list[DictRow]],
        evaluate: Callable[[Any, OpenAlerts], list[Change]],
    ) -> None:
        """Find the rows (``find``'s sites None: every site), lock their sites, find them again under
        the lock (only those sites), evaluate each against the sites' open alerts (kept up to date as
        changes are made) and persist the changes."""
        with self._pool.connection() as conn, conn.transaction():
            sites = sorted({r["site"] for r in find(conn, None)})
            if not sites:
                return
            lock_sites(conn, sites)
            alerts = alert_store.load_open(conn, sites)
            changes: list[Change] = []
            for row in find(conn, sites):
                step = evaluate(row, alerts)
                alerts = engine.apply(alerts, step)
                changes += step
            self._persist(conn, changes, now)

    def sweep_problems(self, now: float) -> problem_actions.SweepResult:
        """The problem list (docs/problems.md); not_compliant at most every ``problem_compliance_every_s``."""
        last = self._last_compliance_sweep
        compliance = last is None or now - last >= self._settings.problems.compliance_every_s
        with self._pool.connection() as conn:
            result = problem_actions.sweep(conn, now, self._settings, compliance=compliance)
        if compliance:
            self._last_compliance_sweep = now
        if result.opened or result.overdue or result.rectified:
            log.info("problem list: %d opened, %d overdue, %d rectified", result.opened, result.overdue,
                     result.rectified)
        return result

    def keep_daily(self, now: float) -> rollup.Advance:
        """Extend the compliance timeline; materialise the finished days, and again those rewritten
        after late readings (:func:`rollup.rollup`: the table, or the continuous aggregate).

        Taking in a long history takes many runs: they go on for up to ``_CATCH_UP_S`` per call,
        and again on the next call, so that the alert sweeps are never held up for long."""
        settings = self._settings
        with self._pool.connection() as conn:
            done = rollup.catch_up(conn, now, settle_s=settings.compliance.settle_s, zone=settings.timezone,
                                   heartbeats=settings.liveness, budget_s=_CATCH_UP_S)
            rollup.rollup(conn, zone=settings.timezone)
        return done

    def prune(self, now: float) -> dict[str, Any]:
        """Retention: raw readings (plain PostgreSQL only; TimescaleDB has a policy) and dead letters."""
        counts: dict[str, Any] = {}
        with self._pool.connection() as conn, conn.transaction():
            # What the schema has, not what the server offers: a database migrated before TimescaleDB
            # was installed has no policy until it is migrated again, and is pruned here meanwhile.
            policies = retention_policies(conn)
            cutoff = from_epoch(now - self._settings.database.readings_retention_days * 86_400)
            # The exactly-once keys (migrations/0005), a plain table on both paths: kept as long as readings.
            # Keys first, then readings: the order ingest takes them in, so the two never wait in a cycle.
            counts["reading_keys"] = retention_store.delete_reading_keys_before(conn, cutoff)
            if "readings" not in policies:
                counts["readings"] = retention_store.delete_readings_before(conn, cutoff)
            if "camera_timeline" not in policies:
                # the daily figures rolled up from it stay
                counts["camera_timeline"] = retention_store.delete_timeline_before(conn, cutoff)
            cutoff = from_epoch(now - self._settings.database.dead_letter_retention_days * 86_400)
            counts["dead_letters"] = retention_store.delete_dead_letters_before(conn, cutoff)
        log.info("retention pruned %s", counts)
        return counts
