"""Provisional alerts: a fire alarm the database cannot store yet still reaches people (issue 15).

Alerts are decided and written in the ingest transaction, so while PostgreSQL is away a smoke alarm
would reach no one until it is back. When a batch cannot be stored, the lane worker (its retry
branch) hands the batch here: :func:`provisional_alerts` picks, in pure code, what would raise a
critical alert, and :class:`ProvisionalAlarms` publishes each on ``sg/v1/alerts/{site}`` marked
``"provisional": true``, once per batch and key however often the batch is retried. The API
processes take them from there to their SSE streams (``gateway.api.live.ProvisionalFeed``). The
batch itself stays unacknowledged until it commits, as before; the stored alert then follows,
through the relay and LISTEN/NOTIFY as always, with the same ``key``, and replaces it.

The rule, without the database (no open-alert snapshot, no device registry, no earlier state):

* a smoke reading ``alarm`` → a provisional ``fire_alarm`` for ``(site, device)``: whether a fire
  alarm is already open cannot be known, so one is published all the same (a provisional alert
  too many is better than an alarm that reaches no one; the key matches it to the open one);
* an exit reading ``blocked`` at a site with such an alarm *in the same batch* → a provisional
  ``fire_alarm_exit_blocked`` for the site. An exit already known blocked from before the outage
  is in the database and not seen here: that compound alert waits for the database.

Nothing else is provisional: other alerts are major or minor and wait for the database. An
unregistered site's alarm is published too (the registry is in the database): the stored path then
dead-letters it and no stored alert follows (docs/wire-contract.md says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from gateway.ingest.batch import Inbound
from protocol import (
    Alert,
    AlertKind,
    AlertState,
    ExitReading,
    Rejection,
    Severity,
    SmokeReading,
    alert_key,
    alert_topic,
    decode,
)
from protocol.messages import ExitState, SmokeState

log = logging.getLogger(__name__)

PUBLISHED = Counter("sg_provisional_alerts_total", "Provisional alerts published while the database was away",
                    ["kind"])


def _alert(site: str, device: str | None, kind: AlertKind, ts: float, received_at: float,
           detail: dict[str, Any]) -> dict[str, Any]:
    """Shaped as a stored alert (``protocol.Alert``), with no id: it has none until it is stored."""
    return Alert(
        id=None,
        key=alert_key(site, device, kind.value),
        provisional=True,
        site=site,
        device=device,
        kind=kind,
        severity=Severity.CRITICAL,
        state=AlertState.OPEN,
        opened_at=datetime.fromtimestamp(ts, UTC),
        updated_at=datetime.fromtimestamp(received_at, UTC),
        count=1,
        detail={**detail, "provisional_reason": "database unavailable; not stored yet"},
    ).model_dump(mode="json")


def provisional_alerts(batch: Sequence[Inbound]) -> list[dict[str, Any]]:
    """The critical alerts ``batch`` would raise, judged without the database (the module's rule)."""
    fires: dict[tuple[str, str], dict[str, Any]] = {}
    exits: dict[str, list[tuple[str, float, float]]] = {}
    for message in batch:
        try:
            topic, decoded = decode(message.topic, message.payload)
        except Rejection:
            continue  # the stored path dead-letters it
        if topic.device is None:
            continue
        if isinstance(decoded, SmokeReading) and decoded.state is SmokeState.ALARM:
            if (topic.site, topic.device) not in fires:  # the first alarm of the device in the batch
                fires[(topic.site, topic.device)] = _alert(
                    topic.site, topic.device, AlertKind.FIRE_ALARM, decoded.ts, message.received_at,
                    {"state": "alarm", "obscuration_pct": decoded.obscuration_pct, "detector_normal": False,
                     "boot": decoded.boot, "seq": decoded.seq},
                )
        elif isinstance(decoded, ExitReading) and decoded.state is ExitState.BLOCKED:
            exits.setdefault(topic.site, []).append((topic.device, decoded.ts, message.received_at))
    alerts = list(fires.values())
    for site, blocked in exits.items():
        detectors = sorted(device for s, device in fires if s == site)
        if detectors:
            ts = min(t for _, t, _ in blocked)
            alerts.append(_alert(site, None, AlertKind.FIRE_ALARM_EXIT_BLOCKED, ts, max(r for _, _, r in blocked),
                                 {"detectors": detectors, "exits": sorted({d for d, _, _ in blocked})}))
    return alerts


Publish = Callable[[str, str], bool]  # (topic, payload) -> handed to the broker client


class ProvisionalAlarms:
    """One lane's provisional alerts: each key published once for the batch in hand.

    A batch is retried until it commits, and the next batch is only taken after that; so "a batch
    not seen before" means the database was back in between, and its alarms are new.
    """

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._batch: Sequence[Inbound] | None = None
        self._sent: set[str] = set()

    def announce(self, batch: Sequence[Inbound]) -> int:
        """Publish what ``batch`` would raise and was not published for it yet; how many were."""
        if batch is not self._batch:
            self._batch, self._sent = batch, set()
        published = 0
        for alert in provisional_alerts(batch):
            if alert["key"] in self._sent:
                continue
            if not self._publish(alert_topic(alert["site"]), json.dumps(alert, ensure_ascii=False)):
                continue  # broker away as well: tried again at the next retry
            self._sent.add(alert["key"])
            PUBLISHED.labels(alert["kind"]).inc()
            log.warning("provisional %s alert published for %s (database unavailable)", alert["kind"], alert["key"])
            published += 1
        return published
