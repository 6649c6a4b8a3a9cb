"""Wire-contract fuzz (issue 15 point 8): 100,000 seeded valid, near-valid and garbage topics and
payloads (simulators/wirefuzz.py) straight into the decoder.

The decoder must never raise anything but :class:`Rejection`; a valid message must be accepted and
round-trip (its topic re-built, its payload re-encoded and decoded to the same model); whatever it
accepts must be storable (text without NUL, timestamps within PostgreSQL's and Python's calendar,
a birth's device ids unique). The tests at the end look for each former decoder hole (accepted
but not storable: NUL in text, years past 9999, a device declared twice) and must find none.

``SAFEGUARD_WIRE_FUZZ_CASES`` raises the count (default 100,000); the seeds are hypothesis's,
derandomized, so a run is the same every time and a failure names its seed and case.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.store.db import from_epoch
from protocol import AgentStatus, Rejection, Snapshot, decode
from protocol.messages import Reading
from simulators.wirefuzz import Case, cases

CASES = int(os.environ.get("SAFEGUARD_WIRE_FUZZ_CASES", "100000"))
PER_SEED = 1000
SEEDS = max(1, CASES // PER_SEED)
NUL, YEAR, DUPLICATE = "nul_in_text", "year_past_9999", "duplicate_device_id"
KNOWN_HOLES = (NUL, YEAR, DUPLICATE)
RUN = settings(max_examples=SEEDS, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
               suppress_health_check=list(HealthCheck))


def _strings(value: Any) -> Any:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def unstorable(message: AgentStatus | Reading) -> str | None:
    """Why the tables would refuse an accepted message (one of KNOWN_HOLES, or another word), or None."""
    if any("\x00" in s for s in _strings(message.model_dump(mode="json"))):
        return NUL
    if message.ts is not None:
        try:
            from_epoch(message.ts)
        except (OverflowError, ValueError, OSError):
            return YEAR
    if isinstance(message, AgentStatus):
        ids = [d.id for d in message.devices]
        if len(ids) != len(set(ids)):
            return DUPLICATE
    return None


def check(case: Case, holes: Counter[str], where: str) -> None:
    """The decoder's contract for one case; the known holes are counted, not failed."""
    try:
        topic, message = decode(case.topic, case.payload)
    except Rejection:
        assert not case.valid, f"{where}: a valid message was refused: {case}"
        return
    except Exception as exc:  # noqa: BLE001 - anything but a Rejection is the finding
        pytest.fail(f"{where}: decode raised {type(exc).__name__}: {exc} for {case}")
    assert str(topic) == case.topic, f"{where}: topic does not round-trip: {topic} != {case.topic!r}"
    if isinstance(message, Snapshot):
        assert message.jpeg == case.payload
        return
    why = unstorable(message)
    if why is not None:
        assert why in KNOWN_HOLES, f"{where}: accepted but not storable ({why}): {case}"
        assert not case.valid, f"{where}: the generator made an unstorable valid case ({why}): {case}"
        holes[why] += 1
        return
    again = decode(case.topic, message.model_dump_json().encode())[1]
    assert again == message, f"{where}: does not round-trip: {message!r} -> {again!r}"


SEEN: Counter[str] = Counter()


@given(seed=st.integers(0, 2**32 - 1))
@RUN
def test_decoder_over_100k_cases(seed: int) -> None:
    for i, case in enumerate(cases(seed, PER_SEED)):
        SEEN[case.kind.partition(":")[0]] += 1
        check(case, Counter(), f"seed {seed} case {i}")


def test_the_generator_covers_every_kind_of_case() -> None:
    """Valid and near-valid and garbage, every message type, each known hole; deterministic."""
    kinds: Counter[str] = Counter()
    types: Counter[str] = Counter()
    holes: Counter[str] = Counter()
    first = list(cases(7, 20_000))
    assert first == list(cases(7, 20_000)), "a seed must name the same cases"
    for i, case in enumerate(first):
        kinds[case.kind.split(":")[0]] += 1
        types[str(case.message_type)] += case.valid
        check(case, holes, f"seed 7 case {i}")
    assert {"valid", "mutate", "garbage"} <= set(kinds), kinds
    assert all(types[t] > 100 for t in ("status", "heartbeat", "smoke", "exit", "snapshot")), types
    assert kinds["valid"] > 4000, kinds


@pytest.fixture(scope="module")
def holes() -> dict[str, list[Case]]:
    """Cases the decoder accepts but the database would refuse, per known hole (up to 50 each).

    One scan of 200,000 cases for the three holes (it was one scan per hole: ~25 s each)."""
    found: dict[str, list[Case]] = {NUL: [], YEAR: [], DUPLICATE: []}
    for case in cases(11, 200_000):
        try:
            _, message = decode(case.topic, case.payload)
        except Rejection:
            continue
        hole = None if isinstance(message, Snapshot) else unstorable(message)
        if hole in found and len(found[hole]) < 50:
            found[hole].append(case)
    return found


def test_decoder_refuses_nul_in_text(holes: dict[str, list[Case]]) -> None:
    assert holes[NUL] == []


def test_decoder_refuses_years_past_9999(holes: dict[str, list[Case]]) -> None:
    assert holes[YEAR] == []


def test_decoder_refuses_duplicate_device_ids_in_a_birth(holes: dict[str, list[Case]]) -> None:
    assert holes[DUPLICATE] == []
