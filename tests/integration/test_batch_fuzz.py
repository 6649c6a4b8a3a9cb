"""Wire-contract fuzz into the batch processor (issue 15 point 8) on a real PostgreSQL: seeded
valid, near-valid and garbage messages (simulators/wirefuzz.py), a third of them for registered
sites and devices, some sent twice, in batches as the ingest lanes make them.

No exception escapes ``BatchProcessor.process``; every message is accepted, a duplicate or a dead
letter with a code and a reason (the accounting adds up), and the dead letters are stored. The
messages that were decoder holes (test_wire_fuzz.py: accepted by the decoder, refused by the tables)
are tried on their own at the end: each must be a dead letter now.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from gateway.ingest.batch import BatchProcessor, BatchResult, Inbound, Rules
from gateway.store.db import Conn, connect
from protocol import MessageType, Rejection, Snapshot, decode
from simulators import wirefuzz
from tests.support import scalar
from tests.unit.test_wire_fuzz import unstorable

pytestmark = [pytest.mark.integration, pytest.mark.storage]

MESSAGES = int(os.environ.get("SAFEGUARD_BATCH_FUZZ_MESSAGES", "3000"))
BATCH = 100
SITES = ("fz-a", "fz-b", "fz-c")
DEVICES = {"cam-1": MessageType.HEARTBEAT, "smoke-1": MessageType.SMOKE, "exit-1": MessageType.EXIT,
           "snap-1": MessageType.SNAPSHOT}
ARRIVAL = wirefuzz.TS_HIGH + 60  # after every valid case's ts


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as c:
        for site in SITES:
            c.execute("INSERT INTO sites (id, name) VALUES (%s, %s)", (site, site))
        c.commit()
        yield c


def _storable(case: wirefuzz.Case) -> bool:
    try:
        _, message = decode(case.topic, case.payload)
    except Rejection:
        return True
    return isinstance(message, Snapshot) or unstorable(message) is None


def messages(seed: int, n: int) -> list[Inbound]:
    """``n`` messages: fuzz cases, valid ones for the registered sites, and repeats of earlier ones."""
    rng = random.Random(seed)
    out: list[Inbound] = []
    fuzz = wirefuzz.cases(seed, 10**9)
    while len(out) < n:
        roll = rng.random()
        arrival = ARRIVAL + len(out) * 0.01
        if roll < 0.3:
            device = rng.choice(tuple(DEVICES))
            kind = DEVICES[device]
            if kind is MessageType.SNAPSHOT:
                topic, payload = f"sg/v1/{rng.choice(SITES)}/{device}/snapshot", wirefuzz.JPEG + rng.randbytes(64)
            else:
                topic, body, _ = wirefuzz.valid(rng, kind, site=rng.choice(SITES), device=device)
                payload = wirefuzz.dumps(body)
            out.append(Inbound(topic, payload, arrival))
        elif roll < 0.4 and out:
            out.append(rng.choice(out)._replace(received_at=arrival))  # redelivered
        elif roll < 0.45:
            topic, body, _ = wirefuzz.valid(rng, MessageType.STATUS, site=rng.choice(SITES))
            out.append(Inbound(topic, wirefuzz.dumps(body), arrival))
        else:
            case = next(fuzz)
            if _storable(case):
                out.append(Inbound(case.topic, case.payload, arrival))
    return out


def run(conn: Conn, batch: list[Inbound]) -> BatchResult:
    result = BatchProcessor(Rules()).process(conn, batch)
    conn.commit()
    return result


def test_every_message_is_accepted_a_duplicate_or_a_dead_letter(conn: Conn, database_url: str) -> None:
    processor_totals = {"accepted": 0, "duplicates": 0, "dead": 0}
    everything = messages(2026, MESSAGES)
    for start in range(0, len(everything), BATCH):
        batch = everything[start:start + BATCH]
        result = run(conn, batch)  # raises on an escape: that is the failure
        assert result.accepted + result.duplicates + len(result.dead) == len(batch), (
            f"batch at {start}: accepted {result.accepted} + duplicate {result.duplicates}"
            f" + dead {len(result.dead)} != {len(batch)}")
        assert all(d.code and d.reason for d in result.dead)
        processor_totals["accepted"] += result.accepted
        processor_totals["duplicates"] += result.duplicates
        processor_totals["dead"] += len(result.dead)
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == processor_totals["dead"]
    # The run exercised every outcome.
    assert all(n > 50 for n in processor_totals.values()), processor_totals


def _former_holes(seed: int, n: int) -> list[Inbound]:
    """Messages the decoder once accepted and the tables refused: NUL in text, a ts past 9999,
    a birth declaring one device twice; for registered sites (the holes show past the site check)."""
    rng = random.Random(seed)
    out: list[Inbound] = []
    for i in range(n):
        site = rng.choice(SITES)
        hole = i % 3
        if hole == 2:
            topic, body, _ = wirefuzz.valid(rng, MessageType.STATUS, site=site)
            device = {"id": "twice", "kind": "smoke"}
            body["devices"] = [*body.get("devices", []), device, dict(device)]
        else:
            topic, body, _ = wirefuzz.valid(rng, rng.choice((MessageType.SMOKE, MessageType.EXIT)), site=site,
                                            device=rng.choice(("smoke-1", "exit-1")))
            if hole == 0:
                body["boot"] = "bo\x00ot"
            else:
                body["ts"] = 253_402_300_800.0 + rng.uniform(0, 1e9)  # 10000-01-01 and later
        out.append(Inbound(topic, wirefuzz.dumps(body), ARRIVAL + i))
    return out


def test_what_only_the_database_refuses_is_a_dead_letter(conn: Conn) -> None:
    for i, message in enumerate(_former_holes(7, 60)):
        result = run(conn, [message])  # before the boundary checks: OverflowError, ValueError, psycopg.DataError
        assert len(result.dead) == 1, f"message {i}: {message}"
        assert result.dead[0].code == "invalid_schema", result.dead[0]
