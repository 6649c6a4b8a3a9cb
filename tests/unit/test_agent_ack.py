"""The gateway's confirmation (sg/v1/{site}/agent/ack, issue 15): ranges, the payload and its bound
as the gateway builds it, and an agent's handling of good and bad ones (no broker: a publisher that
is never started confirms straight into its outbox)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from gateway.ingest.batch import Inbound
from gateway.ingest.confirm import RANGES_PER_ENTRY, Confirmer, confirmations, encode
from protocol import ACK_MAX_BYTES, AgentAck, ack_topic, ack_topic_site, decode_ack, is_ack_topic, seq_ranges
from protocol.messages import DeclaredDevice, DeviceKind
from protocol.mqtt import MqttEndpoint, MqttVersion
from protocol.topics import ACK_FILTER, ALARM_FILTERS, ROUTINE_FILTERS, MessageType, TopicError, parse_topic

# ----------------------------------------------------------------------------- ranges and topics


@pytest.mark.parametrize(("seqs", "ranges"), [
    ([], []),
    ([0], [(0, 0)]),
    ([0, 1, 2, 3], [(0, 3)]),
    ([3, 1, 2, 0, 2, 3], [(0, 3)]),  # any order, repeats
    ([99, 0, 1, 2, 50, 51], [(0, 2), (50, 51), (99, 99)]),  # the current state ahead of the backlog
    ([2**63 - 1, 2**63 - 2], [(2**63 - 2, 2**63 - 1)]),
])
def test_seq_ranges_are_the_fewest_covering_ranges(seqs: list[int], ranges: list[tuple[int, int]]) -> None:
    assert seq_ranges(seqs) == ranges


def test_the_ack_topic_is_the_sites_and_no_ingest_filter_takes_it() -> None:
    topic = ack_topic("site-1")
    assert topic == "sg/v1/site-1/agent/ack"
    assert is_ack_topic(topic)
    assert ack_topic_site(topic) == "site-1"
    assert not is_ack_topic("sg/v1/site-1/agent/status")
    assert not is_ack_topic("sg/v1/site-1/cam-1/ack")
    with pytest.raises(TopicError):
        ack_topic_site("sg/v1/alerts/agent/ack")
    with pytest.raises(TopicError, match="confirmation"):
        parse_topic(topic)  # an agent message it is not: dead-lettered if it ever reached decode
    assert mqtt.topic_matches_sub(ACK_FILTER, topic)
    assert not any(mqtt.topic_matches_sub(f, topic) for f in (*ALARM_FILTERS, *ROUTINE_FILTERS))
    with pytest.raises(ValueError, match="reserved"):
        ack_topic("alerts")


# ----------------------------------------------------------------------------- the gateway's side


def inbound(site: str, device: str, seq: int, boot: str = "b1", kind: MessageType = MessageType.HEARTBEAT) -> Inbound:
    payload = {"ts": 1.0, "boot": boot, "seq": seq, "stream": "ok", "fps": 1.0}
    return Inbound(f"sg/v1/{site}/{device}/{kind}", json.dumps(payload).encode(), 1.0, seq + 1, 1)


def test_a_batch_is_confirmed_per_site_with_ranges_per_device_and_boot() -> None:
    stored = [("s-1", "cam-1", "b1", s) for s in (0, 1, 2, 5)] + [("s-1", "cam-1", "b0", 0)]
    stored += [("s-2", "smoke-1", "b1", 9)]
    dead = [inbound("s-1", "cam-1", 3)]
    other = [  # refused too, but with nothing to confirm them by
        Inbound("sg/v1/s-1/agent/status", b'{"online":true,"ts":1.0,"boot":"b1"}', 1.0),  # no seq
        Inbound("sg/v1/s-1/exit-1/snapshot", b"\xff\xd8\xff", 1.0),  # no seq
        Inbound("sg/v1/s-1/cam-1/heartbeat", b"not json", 1.0),  # nothing to name
        Inbound("sg/v1/s-1/cam-1/video", b"{}", 1.0),  # not a contract topic
    ]
    out = confirmations(stored, dead + other, ts=123.5)
    assert [t for t, _ in out] == ["sg/v1/s-1/agent/ack", "sg/v1/s-2/agent/ack"]
    first, second = (decode_ack(p) for _, p in out)
    assert first.ts == 123.5
    assert {(a.device, a.boot): (a.seq, a.refused) for a in first.acks} == {
        ("cam-1", "b1"): (((0, 2), (5, 5)), ((3, 3),)),
        ("cam-1", "b0"): (((0, 0),), ()),
    }
    assert [(a.device, a.seq) for a in second.acks] == [("smoke-1", ((9, 9),))]
    assert confirmations([], other, ts=1.0) == []


def test_a_big_confirmation_is_split_below_the_bound_and_loses_no_range() -> None:
    # Every other seq of 40 devices: 2,500 single ranges each, the worst case for ranges.
    devices = {(f"device-{d:02d}-{'x' * 50}", "b" * 64): ([s * 2 for s in range(2_500)], [1]) for d in range(40)}
    payloads = encode(devices, ts=time.time())
    assert len(payloads) > 1
    assert all(len(p) <= ACK_MAX_BYTES for p in payloads)
    seen: dict[tuple[str, str], list[tuple[int, int]]] = {}
    refused: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for payload in payloads:
        ack = AgentAck.model_validate_json(payload)
        for entry in ack.acks:
            assert len(entry.seq) + len(entry.refused) <= RANGES_PER_ENTRY
            seen.setdefault((entry.device, entry.boot), []).extend(entry.seq)
            refused.setdefault((entry.device, entry.boot), []).extend(entry.refused)
    assert seen == {k: [(s * 2, s * 2) for s in range(2_500)] for k in devices}
    assert refused == {k: [(1, 1)] for k in devices}


def test_ids_that_need_escaping_survive_the_written_out_json() -> None:
    boot = 'b\u00e9"\\1\n'  # a boot id is any text without NUL
    (payload,) = encode({("cam-1", boot): ([1, 2, 3, 7], [9])}, ts=1.5)
    (entry,) = decode_ack(payload).acks
    assert (entry.device, entry.boot, entry.seq, entry.refused) == ("cam-1", boot, ((1, 3), (7, 7)), ((9, 9),))


def test_a_seq_both_stored_and_dead_lettered_in_one_batch_is_stored() -> None:
    payload = encode({("cam-1", "b1"): ([1, 2], [2, 3])}, ts=1.0)
    (ack,) = (decode_ack(p) for p in payload)
    assert ack.acks[0].seq == ((1, 2),)
    assert ack.acks[0].refused == ((3, 3),)


def test_a_lanes_confirmations_are_gathered_one_message_per_site_per_flush() -> None:
    sent: list[tuple[str, bytes]] = []
    confirmer = Confirmer(lambda topic, payload: sent.append((topic, payload)), interval_s=3600)  # flushed by hand
    confirmer.add([("s-1", "cam-1", "b1", s) for s in range(0, 5)], [])
    confirmer.add([("s-1", "cam-1", "b1", s) for s in range(5, 9)] + [("s-2", "cam-1", "b1", 0)], [])
    assert sent == []
    assert confirmer.flush() == 2
    assert [t for t, _ in sent] == ["sg/v1/s-1/agent/ack", "sg/v1/s-2/agent/ack"]
    assert decode_ack(sent[0][1]).acks[0].seq == ((0, 8),)  # ranges merged across batches
    assert confirmer.flush() == 0  # nothing pending
    confirmer.add([("s-1", "cam-1", "b1", 9)], [])
    confirmer.stop()  # publishes what is pending
    assert decode_ack(sent[-1][1]).acks[0].seq == ((9, 9),)


# ----------------------------------------------------------------------------- the agent's side


@pytest.fixture
def pub(tmp_path: Path) -> Iterator[Publisher]:
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        publisher = Publisher(
            MqttEndpoint.parse("mqtt://127.0.0.1:1"), "site-1", MqttVersion.V5, outbox, heartbeat_s=60,
            devices=[DeclaredDevice(id="cam-1", kind=DeviceKind.CAMERA)], client_id="agent-site-1",
            agent_version="test",
        )
        publisher.boot = "b1"  # as start() would, without a thread or a broker
        for _ in range(10):
            publisher.send("cam-1", MessageType.HEARTBEAT, {"stream": "ok", "fps": 1.0})
        yield publisher


def ack(*entries: dict[str, object]) -> bytes:
    return json.dumps({"ts": 1.0, "acks": list(entries)}).encode()


def test_a_confirmation_deletes_what_it_covers_and_counts_refusals(pub: Publisher,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    pub.confirm(ack_topic("site-1"), ack({"device": "cam-1", "boot": "b1", "seq": [[0, 3], [8, 8]],
                                          "refused": [[9, 9]]}))
    assert len(pub.outbox) == 4
    stats = pub.stats()
    assert (stats.confirmed, stats.gateway_refused, stats.bad_acks) == (5, 1, 0)
    assert "gateway refused 1" in caplog.text
    # Newer gateways may add fields: ignored (v1's forward compatibility).
    pub.confirm(ack_topic("site-1"), json.dumps({"ts": 2.0, "v": 2, "acks": [
        {"device": "cam-1", "boot": "b1", "seq": [[4, 4]], "extra": True}]}).encode())
    assert len(pub.outbox) == 3


@pytest.mark.parametrize(("topic", "payload", "why"), [
    ("sg/v1/site-2/agent/ack", ack({"device": "cam-1", "boot": "b1", "seq": [[0, 9]]}), "not this site's"),
    ("sg/v1/site-1/agent/ack", b"{not json", "JSON"),
    ("sg/v1/site-1/agent/ack", b"\x00\xff", "JSON"),
    ("sg/v1/site-1/agent/ack", ack({"device": "cam-1", "boot": "b1", "seq": [[9, 0]]}), "ends before it starts"),
    ("sg/v1/site-1/agent/ack", ack({"device": "cam-1", "boot": "b1", "seq": [[-1, 3]]}), "greater than or equal"),
    ("sg/v1/site-1/agent/ack", ack({"device": "cam 1", "boot": "b1", "seq": [[0, 9]]}), "pattern"),
    ("sg/v1/site-1/agent/ack", ack({"device": "cam-1", "boot": "b1", "seq": [[0, "9"]]}), "integer"),
    ("sg/v1/site-1/agent/ack", ack({"device": "cam-1", "boot": "b1", "seq": [[0, 1, 2]]}), "seq"),
    ("sg/v1/site-1/agent/ack", b'{"acks": []}', "ts"),
    ("sg/v1/site-1/agent/ack", ack({"device": "cam-1", "boot": "b1", "seq": [[0, 9]]})[:-1]
     + b', "pad": "' + b"x" * ACK_MAX_BYTES + b'"}', "limit"),
])
def test_a_bad_confirmation_is_ignored_logged_and_counted(
    pub: Publisher, caplog: pytest.LogCaptureFixture, topic: str, payload: bytes, why: str
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.publisher")
    pub.confirm(topic, payload)  # never raises
    assert len(pub.outbox) == 10  # deletes nothing
    assert pub.stats().bad_acks == 1
    (record,) = [r for r in caplog.records if "ignored a confirmation" in r.getMessage()]
    assert why in record.getMessage()


def test_the_default_keeps_readings_for_the_gateway_and_timeouts_are_checked(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as outbox:
        args = (MqttEndpoint.parse("mqtt://127.0.0.1:1"), "site-1", MqttVersion.V5, outbox)
        kwargs = {"heartbeat_s": 60, "devices": [], "client_id": "a", "agent_version": "t"}
        publisher = Publisher(*args, **kwargs)  # type: ignore[arg-type]
        assert publisher.gateway_ack
        assert 30 <= publisher.ack_timeout_s <= 60
        with pytest.raises(ValueError, match="ack_timeout"):
            Publisher(*args, **kwargs, ack_timeout_s=10, ack_timeout_max_s=5)  # type: ignore[arg-type]
