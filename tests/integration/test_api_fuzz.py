"""API fuzz (issue 15 point 8): schemathesis generates requests from ``/openapi.json`` (valid and
invalid: NUL bytes, huge numbers, dates at the calendar's edge, wrong types) against the real app
on a real PostgreSQL, with the admin token and an institution (site) token. Every answer must be
below 500 and, where the schema describes it, conform to the response schema.

Bounded and deterministic by default (``SAFEGUARD_FUZZ_EXAMPLES`` per operation, default 25,
derandomized); ``SAFEGUARD_FUZZ_EXAMPLES=2000`` is the long run (docs/testing.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from gateway.runtime import Gateway
from protocol import MessageType, device_topic
from tests.support import ADMIN_TOKEN, Agent, Api, role_tokens, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("SAFEGUARD_FUZZ_EXAMPLES", "25"))
SITE_A, SITE_B = "fuzz-a", "fuzz-b"
DEVICES: list[dict[str, Any]] = [
    {"id": "smoke-1", "kind": "smoke", "name": "hall", "location": "1F"},
    {"id": "exit-1", "kind": "exit", "name": "east exit", "location": "1F"},
    {"id": "cam-1", "kind": "camera", "name": "gate", "location": "1F"},
]
# An SSE stream never ends: it has tests of its own (test_sse_and_mqtt.py).
NOT_FUZZED = "/api/v1/alerts/stream"
# No shrinking: the unshrunk failing request is reported, and a failing run stays short.
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


@pytest.fixture
def fuzz_gateway(gateway: Gateway) -> Iterator[Gateway]:
    """Two sites with devices, an open fire alarm and a dead letter, so ids and filters can hit rows."""
    admin = Api(gateway.api_url)
    for site in (SITE_A, SITE_B):
        admin.put_site(site, name=f"{site} school", city="Hangzhou", county="Xihu", cameras_required=1)
    agent = Agent(gateway.settings.mqtt.url, SITE_A)
    try:
        agent.birth(DEVICES)
        agent.smoke("smoke-1", "alarm")
        agent.publish_raw(device_topic(SITE_A, "smoke-1", MessageType.SMOKE), b"{not json")
        wait_for(lambda: admin.alert(kind="fire_alarm", site=SITE_A), what="the fire alarm")
        wait_for(admin.dead_letters, what="the dead letter")
        yield gateway
    finally:
        with contextlib.suppress(Exception):
            agent.close()


@pytest.fixture(params=["admin", "institution"])
def fuzz_token(request: pytest.FixtureRequest, fuzz_gateway: Gateway) -> str:
    if request.param == "admin":
        return ADMIN_TOKEN
    return role_tokens(fuzz_gateway.settings.database.url, SITE_A)["institution"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error(fuzz_gateway: Gateway, fuzz_token: str, mode: GenerationMode) -> None:
    """Every operation, ``EXAMPLES`` generated requests each; all failures are collected, then reported."""
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway.api_url}/openapi.json").exclude(path=NOT_FUZZED)
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an invalid operation: {result.err()}"
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode))
        @FUZZ
        def call(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

        try:
            call()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request can be made"
            continue  # no parameter to get wrong (GET /healthz)
        except Exception as exc:  # noqa: BLE001 - collected: one report of every failing operation
            failures.append(f"{operation.label} ({mode}): {str(exc)[:1500]}")
    assert operations > 20, "the schema lost its operations"
    assert not failures, "\n\n".join(failures)
