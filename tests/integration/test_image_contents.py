"""The production image serves the console: the package built from what the Dockerfile copies
contains the console and the SQL it needs (built here as the image builds it, without Docker)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _copied_paths() -> list[str]:
    """The sources of the Dockerfile's COPY lines (what the image's `pip install .` sees)."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if match := re.match(r"COPY\s+(.+)\s+\S+$", line.strip()):
            sources += match.group(1).split()
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the image's ``pip install .`` builds, from what the Dockerfile copies."""
    tmp_path = tmp_path_factory.mktemp("image")
    context = tmp_path / "context"
    context.mkdir()
    for source in _copied_paths():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
         str(context)], capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    (found,) = wheels.glob("*.whl")
    return found


def test_the_images_package_contains_the_console(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for console_file in ("index.html", "app.js", "app.css", "i18n.js"):
        assert f"dashboards/web/{console_file}" in names
    assert "dashboards/grafana/provisioning/dashboards/json/alerts.json" in names
    assert "gateway/store/schema.sql" in names


def test_the_images_package_contains_its_entry_point(wheel: Path) -> None:
    """`safeguard` (the image's ENTRYPOINT) runs ``safeguard.cli:main``: that package is copied too."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    (line,) = (line for line in scripts.splitlines() if line.split("=")[0].strip() == "safeguard")
    module = line.split("=")[1].strip().split(":")[0]
    assert f"{module.replace('.', '/')}.py" in names


def test_an_installed_gateway_finds_the_console_in_its_package(wheel: Path, tmp_path: Path) -> None:
    """The gateway serves the console found through the ``dashboards`` package (importlib.resources),
    not relative to a source tree: from the installed wheel, run far from this checkout."""
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel, unpacked: what pip install lays down
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from dashboards import CONSOLE_DIR;"
              " print(CONSOLE_DIR); print((CONSOLE_DIR / 'index.html').is_file())")
    ran = subprocess.run([sys.executable, "-c", script, str(site)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    console_dir, found = ran.stdout.split()
    assert Path(console_dir) == site / "dashboards" / "web"
    assert found == "True"


def test_the_demo_broker_is_an_extra_the_image_goes_without(wheel: Path) -> None:
    """amqtt serves `safeguard demo` only: the image's `pip install .` (no extra) does not get it."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line for line in archive.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    amqtt = [line for line in requires if line.split()[1].lower().startswith("amqtt")]
    assert amqtt
    assert all('extra == "demo"' in line for line in amqtt), amqtt
    assert "[demo]" not in (ROOT / "Dockerfile").read_text(encoding="utf-8")
