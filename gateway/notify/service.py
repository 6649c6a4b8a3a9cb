"""``safeguard notify``: the notifier's loop.

One thread plans (alert changes -> scheduled deliveries) and claims due deliveries; a pool of
``concurrency`` threads sends them, each with its own timeout, so a receiver that hangs holds one
thread, never the others. It wakes on every committed alert change (a listener thread on
``LISTEN sg_alert_changes``), whenever a send finishes, and at least every ``poll_interval_s``.
Ingest never waits for it: it only reads what ingest committed. Any number may run
(gateway/notify/outbox.py says how they share the work).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import psycopg
from prometheus_client import Counter, Histogram
from psycopg_pool import ConnectionPool

from gateway.config import Settings
from gateway.notify import outbox
from gateway.notify.channels import build_channel
from gateway.notify.channels.base import Channel, Outcome
from gateway.notify.render import render
from gateway.store import history
from gateway.store import notify as store
from gateway.store.db import Conn, connect, open_pool

log = logging.getLogger(__name__)

DELIVERIES = Counter("sg_notify_attempts_total", "Notification delivery attempts", ["channel", "result"])
DELIVERY_SECONDS = Histogram(
    "sg_notify_delivery_seconds", "Time of one delivery attempt", ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_HEALTH_EVERY_S = 5.0
# Deliveries claimed per sending thread: the claiming loop, not the sends, is the bottleneck of a
# burst (a regional event), so a few wait in the pool's queue. Their lease covers the wait.
_QUEUED_PER_THREAD = 4


class Notifier:
    def __init__(self, settings: Settings, pool: ConnectionPool[Conn] | None = None) -> None:
        self._settings = settings
        self._config = settings.notify
        self._own_pool = pool is None
        self._pool = pool
        self._channels: dict[str, Channel] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()  # an alert change committed, or a send finished
        self._busy = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._last_health = 0.0
        timeouts = [getattr(c, "timeout_s", None) or self._config.timeout_s for c in self._config.channels.values()]
        self._lease_s = max(timeouts, default=self._config.timeout_s) * _QUEUED_PER_THREAD + self._config.lease_margin_s

    def start(self) -> None:
        if self._pool is None:
            self._pool = open_pool(self._settings.database.url, max_size=self._config.concurrency + 2, name="notify")
        self._channels = {name: build_channel(name, cfg, self._config.timeout_s)
                          for name, cfg in self._config.channels.items()}
        self._executor = ThreadPoolExecutor(self._config.concurrency, thread_name_prefix="notify-send")
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()
        self._listener = threading.Thread(target=self._listen, name="notifier-listen", daemon=True)
        self._listener.start()
        log.info("notifier started: %d channels, %d routes", len(self._channels), len(self._config.routes))

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._listener is not None:
            self._listener.join(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        for channel in self._channels.values():
            channel.close()
        if self._own_pool and self._pool is not None:
            self._pool.close()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                wait = self.step(time.time())
            except psycopg.OperationalError as exc:
                log.warning("notifier lost the database (%s); retrying", exc)
                wait = self._config.poll_interval_s
            except Exception:
                log.exception("notifier step failed; retrying")
                wait = self._config.poll_interval_s
            self._wake.wait(wait)

    def _listen(self) -> None:
        """Wake the loop on every committed alert change."""
        while not self._stopping.is_set():
            try:
                with connect(self._settings.database.url, autocommit=True) as listener:
                    history.listen(listener)
                    while not self._stopping.is_set():
                        for _ in listener.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except psycopg.OperationalError as exc:
                log.warning("notifier's listener lost the database (%s); retrying", exc)
                self._stopping.wait(1.0)

    def step(self, now: float) -> float:
        """Plan, check the channels' health, claim and hand out due deliveries; how long to wait."""
        assert self._pool is not None
        config = self._config
        with self._pool.connection() as conn:
            conn.autocommit = True  # each store function makes its own transaction
            try:
                while outbox.plan_pending(conn, config, now) == store.PLAN_BATCH:
                    pass
                if now - self._last_health >= min(_HEALTH_EVERY_S, max(config.poll_interval_s, config.failing_after_s)):
                    self._last_health = now
                    outbox.check_health(conn, sorted(self._channels), now, config.failing_after_s)
                with self._lock:
                    free = config.concurrency * _QUEUED_PER_THREAD - self._busy
                targets = {name: ch.target for name, ch in self._channels.items()}
                claimed = store.claim(conn, now, free, self._lease_s, targets)
                due = store.next_due(conn)
            finally:
                conn.autocommit = False
        groups: dict[tuple[str, str], list[store.Claimed]] = defaultdict(list)
        for c in claimed:
            if c.purpose == "digest":
                groups[(c.channel, "digest")].append(c)  # one message per channel
            else:
                groups[(c.channel, str(c.id))].append(c)
        assert self._executor is not None
        for batch in groups.values():
            with self._lock:
                self._busy += len(batch)
            self._executor.submit(self._deliver, batch)
        wait = config.poll_interval_s
        if due is not None:
            wait = min(wait, max(0.01, due - time.time()))
        return wait

    # ------------------------------------------------------------------ one send

    def _deliver(self, batch: list[store.Claimed]) -> None:
        first = batch[0]
        channel = self._channels.get(first.channel)
        assert self._pool is not None
        try:
            if channel is None:
                outcome = Outcome("error", None, f"channel {first.channel!r} is no longer configured")
            else:
                after_s = 0.0
                route = next((r for r in self._config.routes if r.name == first.route), None)
                if route is not None and first.step < len(route.steps):
                    after_s = route.steps[first.step].after_s
                message = render(
                    "digest" if first.purpose == "digest" else "all_clear" if first.purpose == "all_clear" else "alert",
                    route=first.route, step=first.step, delivery=",".join(str(c.id) for c in batch),
                    alerts=[c.alert for c in batch], sites={c.site: c.site_info for c in batch},
                    language=self._config.language, zone=self._settings.timezone, after_s=after_s,
                    console_url=self._config.console_url,
                )
                outcome = channel.send(message)
        except Exception as exc:  # a bug or a lost database: recorded, retried like a failed send
            log.exception("delivery %s failed before its outcome", first.id)
            outcome = Outcome("error", None, f"{type(exc).__name__}: {exc}"[:500])
        DELIVERIES.labels(first.channel, outcome.result).inc(len(batch))
        DELIVERY_SECONDS.labels(first.channel).observe(outcome.latency_ms / 1000.0)
        if not outcome.ok:
            log.warning("notification %s via %s: %s", first.id, first.channel, outcome.error)
        try:
            with self._pool.connection() as conn:
                conn.autocommit = True  # one statement, one round trip
                try:
                    outbox.finish(conn, batch, outcome, time.time(), self._config)
                finally:
                    conn.autocommit = False
        except Exception:
            log.exception("could not record delivery %s (its lease ends, and it is sent again)", first.id)
        finally:
            with self._lock:
                self._busy -= len(batch)
            self._wake.set()  # a free thread: claim the next
