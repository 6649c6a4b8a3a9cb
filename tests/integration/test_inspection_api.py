"""The spot-check sample through the API and the command line."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.runtime import Gateway
from tests.support import Api, role_tokens

pytestmark = pytest.mark.integration

CITY = "杭州市"


@pytest.fixture
def registry(gateway: Gateway) -> dict[str, str]:
    admin = Api(gateway.api_url)
    for i in range(30):
        admin.put_site(f"hz-{i:03d}", name=f"机构 {i}", city=CITY, county=["西湖区", "上城区", "滨江区"][i % 3],
                       category="dance" if i % 5 == 0 else "language")
    admin.put_site("nb-001", name="宁波机构", city="宁波市", county="鄞州区")
    return role_tokens(gateway.settings.database.url, "hz-000")


def test_city_sample_as_json_and_csv(gateway: Gateway, registry: dict[str, str]) -> None:
    inspector = Api(gateway.api_url, registry["inspector"])
    params: dict[str, str | int] = {"level": "city", "city": CITY, "seed": 7}
    body = inspector.http.get("/api/v1/inspections/sample", params=params).json()
    ids = [s["site"] for s in body["sites"]]
    assert body["counties_covered"] >= body["counties_required"] == 2
    assert len(ids) == 3  # ceil(10 % of 30) = 3, and ceil(3 counties / 2) = 2 covered at least
    assert all(i.startswith("hz-") for i in ids)
    again = inspector.http.get("/api/v1/inspections/sample", params=params).json()
    assert again == body, "the same seed draws the same sample"

    response = inspector.http.get("/api/v1/inspections/sample", params={**params, "format": "csv"})
    assert response.status_code == 200
    assert response.content.startswith(b"\xef\xbb\xbf")  # BOM: Excel opens it as UTF-8
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["序号", "场所编号", "场所名称"]
    assert sorted(r[1] for r in rows[1:]) == sorted(ids)


@pytest.mark.parametrize(("who", "code"), [("institution", 403), ("fire_brigade", 403), ("admin", 200)])
def test_who_may_draw(gateway: Gateway, registry: dict[str, str], who: str, code: int) -> None:
    response = Api(gateway.api_url, registry[who]).http.get(
        "/api/v1/inspections/sample", params={"level": "province", "seed": 1})
    assert response.status_code == code, response.text


def test_unknown_city_is_a_clear_400(gateway: Gateway, registry: dict[str, str]) -> None:
    response = Api(gateway.api_url, registry["inspector"]).http.get(
        "/api/v1/inspections/sample", params={"level": "city", "city": "火星市", "seed": 1})
    assert response.status_code == 400
    assert "火星市" in response.json()["detail"]


def test_cli_writes_the_inspection_list(gateway: Gateway, registry: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "list.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    env["SAFEGUARD_DATABASE_URL"] = gateway.settings.database.url
    result = subprocess.run(
        [sys.executable, "-m", "safeguard.cli", "inspect", "sample", "--level", "city", "--city", CITY,
         "--seed", "7", "--out", str(out)], capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sampled 3 of 30 institutions in city 杭州市" in result.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert len(rows) == 4
