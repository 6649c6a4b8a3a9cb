"""Every API input is validated at the boundary (issue 15 point 8, finding 7): what the fuzz of
``/openapi.json`` found, one request each, answering 4xx with the API's JSON error and not 500.

A NUL in a string reached PostgreSQL (psycopg.DataError), a date at the calendar's edge overflowed
the daily compliance's day arithmetic (OverflowError), an id past bigint reached PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.api.app import create_app
from gateway.config import Settings
from gateway.store.db import open_pool
from tests.support import ADMIN_TOKEN

pytestmark = pytest.mark.integration

BIG = str(2**63)  # one past bigint
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, bootstrap_token=SecretStr(ADMIN_TOKEN))
    pool = open_pool(database_url, max_size=4)
    try:
        with TestClient(create_app(settings, pool, broker_ready=lambda: True)) as c:
            c.headers.update(ADMIN)
            assert c.put("/api/v1/sites/s1", json={"name": "one", "city": "Hangzhou"}).status_code == 200
            yield c
    finally:
        pool.close()


# (method, URL, query parameters, JSON body): each one answered 500 before.
BAD: list[tuple[str, str, dict[str, str], Any]] = [
    # NUL in a query string, on every route the fuzz found and the others with free text.
    ("GET", "/api/v1/alerts", {"site": "s\x001"}, None),
    ("GET", "/api/v1/alerts", {"cursor": "MQ\x00"}, None),
    ("GET", "/api/v1/dead-letters", {"reason": "bad\x00"}, None),
    ("GET", "/api/v1/problems", {"city": "Hang\x00zhou"}, None),
    ("GET", "/api/v1/problems", {"county": "\x00"}, None),
    ("GET", "/api/v1/inspections/sample", {"level": "city", "seed": "1", "city": "\x00"}, None),
    ("GET", "/api/v1/sites", {"city": "\x00"}, None),
    ("GET", "/api/v1/sites", {"q": "a\x00"}, None),
    ("GET", "/api/v1/reports/ledger", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                                        "city": "\x00"}, None),
    # A cursor whose value decodes to NUL (base64 of "a\0").
    ("GET", "/api/v1/sites", {"cursor": "YQA"}, None),
    # NUL in the path.
    ("GET", "/api/v1/sites/s%001", {}, None),
    # NUL in a JSON body.
    ("PUT", "/api/v1/sites/s2", {}, {"name": "a\x00b"}),
    ("POST", "/api/v1/alerts/1/ack", {}, {"note": "\x00"}),
    # Ids past bigint.
    ("GET", f"/api/v1/alerts/{BIG}", {}, None),
    ("GET", f"/api/v1/problems/{BIG}", {}, None),
    ("POST", f"/api/v1/problems/{BIG}/note", {}, {"note": "x"}),
    # Dates at the calendar's edge, and far outside any real period.
    ("GET", "/api/v1/sites/s1/compliance/daily", {"from": "0001-01-01", "to": "0001-01-02"}, None),
    ("GET", "/api/v1/sites/s1/compliance/daily", {"to": "0001-01-01"}, None),
    ("GET", "/api/v1/sites/s1/compliance/daily", {"from": "9999-12-31"}, None),
    ("GET", "/api/v1/sites/s1/compliance", {"to": "0001-01-01T00:00:00Z"}, None),
    ("GET", "/api/v1/sites/s1/compliance", {"from": "9999-12-31T23:00:00Z", "to": "9999-12-31T23:59:59-12:00"},
     None),
    ("GET", "/api/v1/alerts", {"since": "9999-12-31T23:59:59-23:00"}, None),
    ("GET", "/api/v1/reports/summary", {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z",
                                         "city": "Hangzhou"}, None),
]


@pytest.mark.parametrize(("method", "url", "params", "body"), BAD, ids=[f"{m} {u} {p or b}" for m, u, p, b in BAD])
def test_bad_input_is_a_4xx_with_a_json_error(
    client: TestClient, method: str, url: str, params: dict[str, str], body: Any
) -> None:
    response = client.request(method, url, params=params, json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json()


def test_a_nul_anywhere_in_the_url_is_a_400_before_any_route(client: TestClient) -> None:
    """The belt-and-braces guard: even a parameter no route declares, even on an unknown route."""
    for url in ("/api/v1/me?unknown=%00", "/healthz?x=a%00b", "/no/such/route?%00=1", "/api/v1/sites/%00"):
        response = client.get(url)
        assert response.status_code == 400, (url, response.text)
        assert response.json() == {"detail": "the URL must not contain the NUL character (%00)"}


def test_good_input_still_passes(client: TestClient) -> None:
    """The bounds are wide: today's dates, ids within bigint, text without NUL."""
    assert client.get("/api/v1/alerts", params={"since": "2026-01-01T00:00:00+08:00", "site": "s1"}).status_code == 200
    assert client.get(f"/api/v1/alerts/{2**63 - 1}").status_code == 404
    assert client.get("/api/v1/problems", params={"city": "杭州市", "county": "西湖区"}).status_code == 200
    assert client.get("/api/v1/sites/s1/compliance/daily", params={"from": "2026-01-01", "to": "2026-01-07"},
                      ).status_code == 200
    assert client.put("/api/v1/sites/s3", json={"name": "名字 \u00e9\U0001f525"}).status_code == 200
