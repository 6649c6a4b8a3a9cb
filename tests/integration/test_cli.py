"""The `safeguard` command line against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import Role, authenticate
from gateway.store.db import connect
from tests.support import safeguard

pytestmark = pytest.mark.integration

HEADER = "id,name,city,county,category,address,cameras_required"


def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    result = safeguard("migrate", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "schema up to date" in result.stderr


def test_sites_import_then_institution_token(tmp_path: Path, database_url: str) -> None:
    csv_file = tmp_path / "sites.csv"
    csv_file.write_text(
        "id,name,city,county,category,address,cameras_required\n"
        "hz-0001,西湖艺术学校,杭州市,西湖区,dance,文三路 1 号,3\n"
        "hz-0002,钱塘英语,杭州市,上城区,language,,2\n",
        encoding="utf-8",
    )
    result = safeguard("sites", "import", str(csv_file), database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "registered 2 sites" in result.stderr
    with connect(database_url) as conn:
        row = conn.execute("SELECT name, county, cameras_required FROM sites WHERE id = 'hz-0001'").fetchone()
    assert row == {"name": "西湖艺术学校", "county": "西湖区", "cameras_required": 3}

    result = safeguard("token", "create", "--role", "institution", "--site", "hz-0001", "--name", "school",
                       database_url=database_url)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    with connect(database_url) as conn:
        principal = authenticate(conn, token, None)
        stored = conn.execute("SELECT token_hash FROM api_tokens").fetchone()
    assert principal is not None
    assert (principal.role, principal.site) == (Role.INSTITUTION, "hz-0001")
    assert stored is not None
    assert token.encode() not in bytes(stored["token_hash"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"{HEADER}\nhz-0001,A,c,d,e,f,1\nbad id!,B,c,d,e,f,1\n", "line 3: id: String should match pattern"),
        (f"{HEADER}\nhz-0001,A,c,d,e,f,many\n", "line 2: cameras_required"),
        (f"{HEADER}\nhz-0001,A,c,d,e,f,1\nhz-0001,B,c,d,e,f,1\n", "line 3: site 'hz-0001' appears twice"),
        ("id,name,colour\nA,B,red\n", "missing ['city', 'county', 'category', 'address', 'cameras_required'],"
                                       " unknown ['colour']"),
        (f"{HEADER}\nalerts,A,c,d,e,f,1\n", "site id 'alerts' is reserved"),
        (f"{HEADER}\nhz-0001,A,杭州市\n", "line 2: 3 fields, the header has 7"),
        (f"{HEADER}\nhz-0001,A,c,d,e,f,1,extra\n", "line 2: 8 fields, the header has 7"),
    ],
)
def test_sites_import_names_the_bad_line(tmp_path: Path, database_url: str, content: str, message: str) -> None:
    csv_file = tmp_path / "sites.csv"
    csv_file.write_text(content, encoding="utf-8")
    result = safeguard("sites", "import", str(csv_file), database_url=database_url)
    assert result.returncode == 2
    assert message in result.stderr
    with connect(database_url) as conn:
        count = conn.execute("SELECT count(*) AS n FROM sites").fetchone()
    assert count == {"n": 0}, "a bad file registers nothing"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_sites_import_reads_what_excel_saves(tmp_path: Path, database_url: str, encoding: str) -> None:
    csv_file = tmp_path / "sites.csv"
    csv_file.write_bytes(f"{HEADER}\r\nhz-0001,西湖艺术学校,杭州市,西湖区,舞蹈,文三路 1 号,3\r\n".encode(encoding))
    result = safeguard("sites", "import", str(csv_file), database_url=database_url)
    assert result.returncode == 0, result.stderr
    with connect(database_url) as conn:
        row = conn.execute("SELECT name, county, category FROM sites WHERE id = 'hz-0001'").fetchone()
    assert row == {"name": "西湖艺术学校", "county": "西湖区", "category": "舞蹈"}


def test_sites_import_of_a_missing_or_binary_file_is_one_line(tmp_path: Path, database_url: str) -> None:
    missing = safeguard("sites", "import", str(tmp_path / "absent.csv"), database_url=database_url)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"safeguard: error: {tmp_path / 'absent.csv'}: No such file or directory"
    binary = tmp_path / "sites.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00\x81\xff" * 10)
    result = safeguard("sites", "import", str(binary), database_url=database_url)
    assert result.returncode == 2
    assert "not UTF-8 or GBK/GB 18030 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_create_refuses_a_site_for_other_roles(database_url: str) -> None:
    result = safeguard("token", "create", "--role", "admin", "--site", "x", "--name", "n", database_url=database_url)
    assert result.returncode == 2
    assert "only an institution token takes one" in result.stderr


def test_bad_setting_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("mqtt_url: http://broker\nmissed_heartbeats: 0\n", encoding="utf-8")
    result = safeguard("migrate", "--config", str(config))
    assert result.returncode == 2
    assert "mqtt_url" in result.stderr
    assert "missed_heartbeats" in result.stderr
