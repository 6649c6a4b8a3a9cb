"""The layers (docs/architecture.md): no package imports one above it.

Every import in a package's modules counts, at the top or inside a function, so a lazy import
cannot hide an upward one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = frozenset({"protocol", "edge_agent", "simulators", "gateway", "dashboards", "safeguard", "bench", "tests"})

# What each package may import of ours (itself aside).
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset(),
    "dashboards": frozenset(),
    "edge_agent": frozenset({"protocol"}),
    "simulators": frozenset({"protocol"}),
    "gateway": frozenset({"protocol", "dashboards"}),
    "safeguard": frozenset({"protocol", "gateway", "edge_agent", "simulators", "dashboards"}),
}
# Files allowed an import their package may not make ("path": the extra packages); none today.
# test_the_exceptions_are_still_needed fails on an entry that no longer needs its extras.
EXCEPTIONS: dict[str, frozenset[str]] = {}


def imported_packages(path: Path) -> set[str]:
    """Our top-level packages that ``path`` imports (absolute imports; relative ones stay inside)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_upwards(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        allowed = ALLOWED[package] | {package} | EXCEPTIONS.get(relative, frozenset())
        for name in sorted(imported_packages(path) - allowed):
            wrong.append(f"{relative} imports {name}")
    assert wrong == []


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from gateway.config import Settings\n    import simulators.load\n",
                      encoding="utf-8")
    assert imported_packages(module) == {"gateway", "simulators"}


def test_the_exceptions_are_still_needed() -> None:
    for relative, names in EXCEPTIONS.items():
        assert names <= imported_packages(ROOT / relative), f"{relative}: drop what it no longer imports"


def gateway_modules(path: Path) -> set[str]:
    """The ``gateway.X...`` modules ``path`` imports (absolute imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        found.update(n for n in names if n.startswith("gateway.") and n.count(".") >= 1)
    return found


# Features' pure rules the store may take its types from, besides gateway.rules: modules of
# dataclasses, enums and pure functions that import nothing of ours (test_the_pure_rules_stay_pure).
# gateway/store/problems.py reads and writes the problem list's Condition, OpenProblem and Change.
PURE_RULES = frozenset({"gateway.problems.rules"})


def test_the_store_imports_nothing_above_it_in_the_gateway() -> None:
    # The schema and the SQL sit below the code that decides (compliance, ingest, api, supervisor):
    # only the pure rules' types and the store itself.
    wrong = [f"{p.relative_to(ROOT).as_posix()} imports gateway.{part}"
             for p in sorted((ROOT / "gateway" / "store").rglob("*.py"))
             for part in sorted({n.split(".")[1] for n in gateway_modules(p) - PURE_RULES} - {"store", "rules"})]
    assert wrong == []


@pytest.mark.parametrize("module", sorted(PURE_RULES))
def test_the_pure_rules_stay_pure(module: str) -> None:
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    assert imported_packages(path) == set()


# The start of a SQL statement in a string literal (an f-string's literal parts count).
_SQL = re.compile(
    r"^\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|COPY\s+\w+|WITH\s+\w+\s+AS\s*\("
    r"|CREATE\s+(TEMP\s+|UNIQUE\s+)?(TABLE|INDEX|MATERIALIZED|VIEW)\s|ALTER\s+TABLE\s|DROP\s+(TABLE|INDEX)\s)",
    # Upper case only, as this code base writes SQL: "select the camera" in a message is not SQL.
)


def sql_literals(path: Path) -> list[str]:
    """``path:line`` of every string literal in ``path`` that starts a SQL statement."""
    return [
        f"{path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name}:{node.lineno}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.match(node.value)
    ]


def test_the_gateways_sql_is_in_the_store_only() -> None:
    # Issue 14: the SQL is named and in one place per feature under gateway/store/, none in the
    # API, the supervisor or the ingest's deciding code.
    outside = [p for p in sorted((ROOT / "gateway").rglob("*.py")) if "store" not in p.relative_to(ROOT).parts]
    assert [where for path in outside for where in sql_literals(path)] == []


def test_the_sql_check_sees_statements_in_f_strings(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('t = "x"\nq = f"SELECT a FROM {t}"\nr = "select the camera"\ns = " INSERT INTO x VALUES (1)"\n',
                      encoding="utf-8")
    assert sorted(sql_literals(module)) == ["m.py:2", "m.py:4"]
