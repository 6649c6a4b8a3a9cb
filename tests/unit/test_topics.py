"""Topic strings of wire contract v1 (DESIGN.md section 3): building, parsing, alert topics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    ALARM_FILTERS,
    ALERTS_FILTER,
    ROUTINE_FILTERS,
    SUBSCRIPTION,
    MessageType,
    Topic,
    alert_topic,
    device_topic,
    is_alarm_topic,
    is_alert_topic,
    parse_topic,
    status_topic,
    valid_id,
)
from protocol.topics import TopicError, _parse_topic_checks

DEVICE_TYPES = [t for t in MessageType if t is not MessageType.STATUS]

GOOD_IDS = ["a", "Z", "0", "_", "-", "site-01", "Cam_2", "A" * 64, "a-b_c-D-9"]
BAD_IDS = [
    "",  # too short
    "A" * 65,  # one over the limit
    "has space",
    "slash/inside",
    "plus+",
    "hash#",
    "dot.ted",
    "colon:",
    "café",  # non-ASCII letter
    "设备",
    "٣",  # non-ASCII digit (Arabic-Indic three)
    "trailing\n",
    "\nleading",
    "tab\t",
    "nul\x00",
]


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("value", GOOD_IDS)
def test_valid_id_accepts_contract_identifiers(value: str) -> None:
    assert valid_id(value)


@pytest.mark.parametrize("value", BAD_IDS)
def test_valid_id_rejects_everything_else(value: str) -> None:
    assert not valid_id(value)


def test_id_length_boundary_is_64() -> None:
    assert valid_id("x" * 64)
    assert not valid_id("x" * 65)


# --------------------------------------------------------------------------- constants


def test_subscription_and_alert_filter() -> None:
    assert SUBSCRIPTION == "sg/v1/#"
    assert ALERTS_FILTER == "sg/v1/alerts/#"


# --------------------------------------------------------------------------- builders


def test_status_topic_layout() -> None:
    assert status_topic("site-1") == "sg/v1/site-1/agent/status"


@pytest.mark.parametrize("message_type", DEVICE_TYPES)
def test_device_topic_layout(message_type: MessageType) -> None:
    assert device_topic("site-1", "dev_2", message_type) == f"sg/v1/site-1/dev_2/{message_type.value}"


def test_device_topic_values_are_the_contract_words() -> None:
    assert {t.value for t in DEVICE_TYPES} == {"heartbeat", "smoke", "exit", "snapshot"}
    assert MessageType.STATUS.value == "status"


def test_alert_topic_layout() -> None:
    assert alert_topic("site-1") == "sg/v1/alerts/site-1"


def test_device_topic_refuses_status_type() -> None:
    with pytest.raises(ValueError, match="not a device message type"):
        device_topic("site-1", "cam-1", MessageType.STATUS)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_status_topic_refuses_bad_site_id(bad: str) -> None:
    with pytest.raises(ValueError, match="site id"):
        status_topic(bad)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_alert_topic_refuses_bad_site_id(bad: str) -> None:
    with pytest.raises(ValueError, match="site id"):
        alert_topic(bad)


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("message_type", DEVICE_TYPES)
def test_device_topic_refuses_bad_site_id(bad: str, message_type: MessageType) -> None:
    with pytest.raises(ValueError, match="site id"):
        device_topic(bad, "cam-1", message_type)


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("message_type", DEVICE_TYPES)
def test_device_topic_refuses_bad_device_id(bad: str, message_type: MessageType) -> None:
    with pytest.raises(ValueError, match="device id"):
        device_topic("site-1", bad, message_type)


def test_builder_error_is_not_a_topic_error_but_a_value_error() -> None:
    # TopicError is itself a ValueError, so callers catching ValueError see both.
    assert issubclass(TopicError, ValueError)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("site", ["s", "site-01", "S" * 64])
@pytest.mark.parametrize("device", ["d", "cam_1", "D" * 64])
@pytest.mark.parametrize("message_type", DEVICE_TYPES)
def test_device_topic_round_trip(site: str, device: str, message_type: MessageType) -> None:
    topic = device_topic(site, device, message_type)
    parsed = parse_topic(topic)
    assert parsed == Topic(site, device, message_type)
    assert parsed.type is message_type
    assert str(parsed) == topic


@pytest.mark.parametrize("site", ["s", "site-01", "S" * 64])
def test_status_topic_round_trip(site: str) -> None:
    topic = status_topic(site)
    parsed = parse_topic(topic)
    assert parsed == Topic(site, None, MessageType.STATUS)
    assert parsed.device is None
    assert parsed.type is MessageType.STATUS
    assert str(parsed) == topic


def test_every_message_type_round_trips() -> None:
    # Guard: the parametrised round trips above cover every type of the contract.
    covered = {*DEVICE_TYPES, MessageType.STATUS}
    assert covered == set(MessageType)


def test_topic_is_frozen_and_hashable() -> None:
    parsed = parse_topic("sg/v1/s/d/smoke")
    assert hash(parsed) == hash(Topic("s", "d", MessageType.SMOKE))
    with pytest.raises(AttributeError):
        parsed.site = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- parse rejections


@pytest.mark.parametrize(
    "topic",
    [
        "sg/v2/s/d/heartbeat",
        "SG/v1/s/d/heartbeat",
        "sg/V1/s/d/heartbeat",
        "/sg/v1/s/d/heartbeat",
        "xx/v1/s/d/heartbeat",
        "sg",
        "",
        "sg/v1x/s/d/heartbeat",
        "sgv1/s/d/heartbeat",
    ],
)
def test_parse_rejects_wrong_prefix(topic: str) -> None:
    with pytest.raises(TopicError, match=r"is not under sg/v1/"):
        parse_topic(topic)


@pytest.mark.parametrize(
    ("topic", "levels"),
    [
        ("sg/v1", 2),
        ("sg/v1/", 3),
        ("sg/v1/s", 3),
        ("sg/v1/s/d", 4),
        ("sg/v1/alerts/s", 4),
        ("sg/v1/s/agent", 4),
    ],
)
def test_parse_rejects_too_few_levels(topic: str, levels: int) -> None:
    with pytest.raises(TopicError, match=rf"has {levels} levels, expected 5"):
        parse_topic(topic)


@pytest.mark.parametrize(
    ("topic", "levels"),
    [
        ("sg/v1/s/d/heartbeat/extra", 6),
        ("sg/v1/s/d/heartbeat/", 6),
        ("sg/v1/s/agent/status/x", 6),
        ("sg/v1/s/d/e/f/smoke", 7),
    ],
)
def test_parse_rejects_too_many_levels(topic: str, levels: int) -> None:
    with pytest.raises(TopicError, match=rf"has {levels} levels, expected 5"):
        parse_topic(topic)


@pytest.mark.parametrize("site", ["", "bad site", "s+", "#", "é", "s.1", "A" * 65])
def test_parse_rejects_bad_site_id(site: str) -> None:
    with pytest.raises(TopicError) as info:
        parse_topic(f"sg/v1/{site}/cam-1/heartbeat")
    assert str(info.value).startswith(f"site id {site!r} does not match")


@pytest.mark.parametrize("device", ["", "bad dev", "d+", "#", "é", "d.1", "A" * 65])
def test_parse_rejects_bad_device_id(device: str) -> None:
    with pytest.raises(TopicError) as info:
        parse_topic(f"sg/v1/site-1/{device}/heartbeat")
    assert str(info.value).startswith(f"device id {device!r} does not match")


def test_parse_accepts_64_char_ids_but_not_65() -> None:
    ok = parse_topic(f"sg/v1/{'s' * 64}/{'d' * 64}/exit")
    assert ok.site == "s" * 64
    assert ok.device == "d" * 64
    with pytest.raises(TopicError, match="site id"):
        parse_topic(f"sg/v1/{'s' * 65}/d/exit")
    with pytest.raises(TopicError, match="device id"):
        parse_topic(f"sg/v1/s/{'d' * 65}/exit")


def test_parse_checks_site_before_device() -> None:
    with pytest.raises(TopicError, match=r"^site id"):
        parse_topic("sg/v1/bad site/bad dev/heartbeat")


@pytest.mark.parametrize("kind", ["temperature", "Heartbeat", "SMOKE", "", "status2", "alerts", "agent"])
def test_parse_rejects_unknown_type(kind: str) -> None:
    with pytest.raises(TopicError, match=rf"unknown message type {kind!r}"):
        parse_topic(f"sg/v1/site-1/cam-1/{kind}")


def test_parse_rejects_unknown_type_on_agent_device() -> None:
    with pytest.raises(TopicError, match="unknown message type 'birth'"):
        parse_topic("sg/v1/site-1/agent/birth")


@pytest.mark.parametrize("device", ["cam-1", "Agent", "AGENT", "agent_", "agents"])
def test_parse_rejects_status_on_non_agent_device(device: str) -> None:
    with pytest.raises(TopicError, match=r"status is published on sg/v1/\{site\}/agent/status only"):
        parse_topic(f"sg/v1/site-1/{device}/status")


def test_topic_error_message_names_the_topic() -> None:
    with pytest.raises(TopicError, match="'sg/v1/s/d/nope'"):
        parse_topic("sg/v1/s/d/nope")
    with pytest.raises(TopicError, match="'sg/v1/s/d'"):
        parse_topic("sg/v1/s/d")
    with pytest.raises(TopicError, match="'other/v1/s/d/smoke'"):
        parse_topic("other/v1/s/d/smoke")


# --------------------------------------------------------------------------- is_alert_topic


@pytest.mark.parametrize("site", ["s", "site-01", "S" * 64])
def test_is_alert_topic_true_for_built_alert_topics(site: str) -> None:
    assert is_alert_topic(alert_topic(site))


@pytest.mark.parametrize(
    "topic",
    [
        "sg/v1/s/agent/status",
        "sg/v1/s/d/heartbeat",
        "sg/v1/s/d/smoke",
        "sg/v1/s/d/exit",
        "sg/v1/s/d/snapshot",
        "sg/v1/alerts",  # the level itself, no site
        "sg/v1/alerts/s/extra",  # too deep
        "sg/v1/alerts/s/d/smoke",
        "sg/v2/alerts/s",
        "sg/v1/Alerts/s",
        "alerts/s",
        "",
    ],
)
def test_is_alert_topic_false_for_everything_else(topic: str) -> None:
    assert not is_alert_topic(topic)


def test_alert_topics_are_not_parsed_as_agent_topics() -> None:
    with pytest.raises(TopicError):
        parse_topic(alert_topic("s"))


def test_alert_topic_matches_the_alerts_filter() -> None:
    prefix = ALERTS_FILTER.removesuffix("#")
    assert alert_topic("site-9").startswith(prefix)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("sg/v1/alerts/agent/status", "site id 'alerts' is reserved"),
        ("sg/v1/alerts/cam-1/heartbeat", "site id 'alerts' is reserved"),
        ("sg/v1/site-1/agent/heartbeat", "device id 'agent' is reserved"),
        ("sg/v1/site-1/agent/smoke", "device id 'agent' is reserved"),
    ],
)
def test_reserved_ids_are_refused(topic: str, reason: str) -> None:
    with pytest.raises(TopicError, match=reason):
        parse_topic(topic)


def test_builders_refuse_reserved_ids() -> None:
    with pytest.raises(ValueError, match="reserved"):
        status_topic("alerts")
    with pytest.raises(ValueError, match="reserved"):
        device_topic("site-1", "agent", MessageType.HEARTBEAT)


# The routine lane acknowledges, unread, exactly what the alarm lane's filters give the alarm
# lane: is_alarm_topic must agree with the broker's matching, or a message is lost or doubled.
LANE_TOPICS = [
    "sg/v1/s/smoke-1/smoke", "sg/v1/s/exit-1/exit", "sg/v1/s/agent/status", "sg/v1/s/cam-1/status",
    "sg/v1/s/cam-1/heartbeat", "sg/v1/s/cam-1/snapshot", "sg/v1/s/cam-1/video", "sg/v1/s//smoke",
    "sg/v1/s/d/smoke/extra", "sg/v1/s/smoke", "sg/v1/smoke", "sg/v1/alerts/s", "sg/v2/s/d/smoke",
    "sgx/v1/s/d/smoke", "sg/v1/s/d/smokey", "sg/v1/s/d/Smoke", "x/sg/v1/s/d/smoke", "sg/v1/s/d/",
]


@pytest.mark.parametrize("topic", LANE_TOPICS)
def test_is_alarm_topic_matches_the_alarm_lane_filters_as_the_broker_does(topic: str) -> None:
    from paho.mqtt.client import topic_matches_sub  # noqa: PLC0415 - the broker-side rule, as paho implements it

    assert is_alarm_topic(topic) == any(topic_matches_sub(f, topic) for f in ALARM_FILTERS)


@pytest.mark.parametrize("topic", LANE_TOPICS)
def test_exact_routine_filters_never_overlap_the_alarm_lane_and_miss_only_unknown_types(topic: str) -> None:
    from paho.mqtt.client import topic_matches_sub  # noqa: PLC0415 - the broker-side rule, as paho implements it

    alarm = any(topic_matches_sub(f, topic) for f in ALARM_FILTERS)
    routine = sum(topic_matches_sub(f, topic) for f in ROUTINE_FILTERS)
    assert routine <= 1  # one subscription per message: no second copy
    assert not (alarm and routine)
    levels = topic.split("/")
    unknown_type = len(levels) == 5 and levels[4] not in {"smoke", "exit", "status", "heartbeat", "snapshot"}
    if topic.startswith("sg/v1/") and not unknown_type:
        assert alarm or routine, topic


_LEVEL = st.one_of(
    st.sampled_from(["sg", "v1", "alerts", "agent", "status", "ack", "smoke", "exit", "heartbeat", "snapshot",
                     "video", "site-1", "cam_2", "x" * 64, "x" * 65, "", "Smoke", "a b", "é", "+", "#", "s\n"]),
    st.text(alphabet="abcAZ09_-/.\n", min_size=0, max_size=8),
)


@settings(max_examples=3_000, deadline=None, derandomize=True)
@given(st.lists(_LEVEL, min_size=0, max_size=6).map("/".join),
       st.sampled_from(["", "sg/v1/", "sg/v2/", "sg/"]))
def test_the_quick_path_agrees_with_the_checks_one_by_one(rest: str, prefix: str) -> None:
    topic = prefix + rest
    try:
        expected: Topic | str = _parse_topic_checks(topic)
    except TopicError as exc:
        expected = str(exc)
    try:
        got: Topic | str = parse_topic(topic)
    except TopicError as exc:
        got = str(exc)
    assert got == expected
