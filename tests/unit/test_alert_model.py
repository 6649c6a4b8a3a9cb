"""protocol.Alert: the alert message of sg/v1/alerts/{site}, as the gateway has always sent it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.ingest.batch import Inbound
from gateway.ingest.provisional import provisional_alerts
from gateway.store import alerts as alert_store
from protocol import Alert, AlertKind, AlertState, MessageType, Severity, alert_key, device_topic

T0 = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
T1 = datetime(2026, 11, 23, 9, 30, 0, 200_000, tzinfo=UTC)


def _rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def hand_built(row: Mapping[str, Any]) -> dict[str, Any]:
    """``gateway.store.alerts.alert_json`` as it was before the model (the dict written by hand)."""
    return {
        "id": row["id"],
        "key": alert_key(row["site"], row["device"], row["kind"]),
        "site": row["site"],
        "device": row["device"],
        "kind": row["kind"],
        "severity": row["severity"],
        "state": row["state"],
        "opened_at": _rfc3339(row["opened_at"]),
        "updated_at": _rfc3339(row["updated_at"]),
        "acknowledged_at": _rfc3339(row["acknowledged_at"]),
        "acknowledged_by": row["acknowledged_by"],
        "resolved_at": _rfc3339(row["resolved_at"]),
        "resolved_by": row["resolved_by"],
        "count": row["count"],
        "detail": row["detail"],
    }


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 17, "site": "hz-0001", "device": "smoke-1", "kind": "fire_alarm", "severity": "critical",
        "state": "open", "opened_at": T0, "updated_at": T1, "acknowledged_at": None, "acknowledged_by": None,
        "resolved_at": None, "resolved_by": None, "count": 1, "detail": {"state": "alarm", "obscuration_pct": 9.5},
    }
    return base | fields


ROWS = [
    row(),  # open: every optional field None
    row(device=None, kind="agent_offline", severity="major", detail={}),  # site-level
    row(state="acknowledged", acknowledged_at=T1, acknowledged_by="brigade-7", count=3),
    row(kind="exit_blocked", device="exit-1", severity="major", state="resolved", acknowledged_at=T1,
        acknowledged_by="重庆消防", resolved_at=T1 + timedelta(seconds=61), resolved_by="system",
        detail={"resolution": "exit clear", "blocked_ratio": 0.65, "nested": {"a": [1, None]}}),
    row(opened_at=datetime(2026, 11, 23, 17, 30, tzinfo=timezone(timedelta(hours=8)))),  # not UTC in, Z out
]


def from_row(r: Mapping[str, Any]) -> Alert:
    return Alert(
        id=r["id"], key=alert_key(r["site"], r["device"], r["kind"]), site=r["site"], device=r["device"],
        kind=AlertKind(r["kind"]), severity=Severity(r["severity"]), state=AlertState(r["state"]),
        opened_at=r["opened_at"], updated_at=r["updated_at"], acknowledged_at=r["acknowledged_at"],
        acknowledged_by=r["acknowledged_by"], resolved_at=r["resolved_at"], resolved_by=r["resolved_by"],
        count=r["count"], detail=r["detail"],
    )


@pytest.mark.parametrize("r", ROWS)
def test_the_models_json_is_the_hand_built_json(r: dict[str, Any]) -> None:
    before = hand_built(r)
    alert = from_row(r)
    assert alert.model_dump(mode="json") == before
    assert list(alert.model_dump(mode="json")) == list(before)  # same fields, same order, nothing added
    assert json.loads(alert.model_dump_json()) == before
    assert json.dumps(alert.model_dump(mode="json"), ensure_ascii=False) == json.dumps(before, ensure_ascii=False)


@pytest.mark.parametrize("r", ROWS)
def test_what_is_published_parses_back_to_the_same_alert(r: dict[str, Any]) -> None:
    alert = from_row(r)
    assert Alert.model_validate_json(json.dumps(hand_built(r))) == alert
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


def test_a_relayed_change_carries_its_change_id_and_a_provisional_alert_its_mark() -> None:
    relayed = Alert.model_validate_json(json.dumps({**hand_built(row()), "change_id": 41}))
    assert relayed.change_id == 41
    assert not relayed.provisional
    assert json.loads(relayed.model_dump_json())["change_id"] == 41
    provisional = Alert.model_validate_json(json.dumps({**hand_built(row(id=None)), "provisional": True}))
    assert provisional.provisional
    assert provisional.id is None
    dumped = provisional.model_dump(mode="json")
    assert dumped["provisional"] is True
    assert "change_id" not in dumped


def test_unknown_fields_are_ignored_and_bad_values_refused() -> None:
    newer = {**hand_built(row()), "added_in_v1_later": {"x": 1}}
    assert Alert.model_validate_json(json.dumps(newer)) == from_row(row())
    for bad in ({"kind": "tsunami"}, {"state": "closed"}, {"count": "3"}, {"opened_at": "yesterday"}):
        with pytest.raises(ValidationError):
            Alert.model_validate_json(json.dumps({**hand_built(row()), **bad}))


def test_the_alert_is_frozen() -> None:
    alert = from_row(row())
    with pytest.raises(ValidationError):
        alert.count = 2  # type: ignore[misc]


@pytest.mark.parametrize("r", ROWS)
def test_the_gateway_publishes_what_it_built_by_hand_before(r: dict[str, Any]) -> None:
    published = alert_store.alert_json(r)
    assert published == hand_built(r)
    assert json.dumps(published, ensure_ascii=False) == json.dumps(hand_built(r), ensure_ascii=False)
    assert Alert.model_validate_json(json.dumps(published)) == alert_store.alert(r)


def test_a_provisional_alert_is_what_ingest_built_by_hand_before() -> None:
    reading = {"ts": 1_700_000_002.0, "boot": "b1", "seq": 2, "state": "alarm", "obscuration_pct": 9.5}
    inbound = Inbound(device_topic("site-p", "smoke-1", MessageType.SMOKE), json.dumps(reading).encode(),
                      1_700_000_100.25)
    [published] = provisional_alerts([inbound])
    assert published == {
        "id": None, "key": "site-p/smoke-1/fire_alarm", "provisional": True, "site": "site-p", "device": "smoke-1",
        "kind": "fire_alarm", "severity": "critical", "state": "open", "opened_at": "2023-11-14T22:13:22Z",
        "updated_at": "2023-11-14T22:15:00.250000Z", "acknowledged_at": None, "acknowledged_by": None,
        "resolved_at": None, "resolved_by": None, "count": 1,
        "detail": {"state": "alarm", "obscuration_pct": 9.5, "detector_normal": False, "boot": "b1", "seq": 2,
                   "provisional_reason": "database unavailable; not stored yet"},
    }
    parsed = Alert.model_validate_json(json.dumps(published, ensure_ascii=False))
    assert (parsed.provisional, parsed.id, parsed.change_id) == (True, None, None)
