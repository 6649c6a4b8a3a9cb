"""YAML config files whose every error names the file, the line and the key.

Shared by the edge agent's ``site.yaml`` and the gateway's settings file (``safeguard agent
check-config``, ``safeguard check-config``): one reader, one line lookup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigFileError(ValueError):
    """A config file that cannot be read as YAML; the message is ``FILE[:LINE]: what``."""


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its node tree (for :func:`line_of`); raise ConfigFileError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark  # where the construct began: the line to fix
        where = f"{path}:{mark.line + 1}" if mark is not None else f"{path}"
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigFileError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    return data, root


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if match is None:
                match = next((k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            match = node.value[part]
        else:
            match = None
        if match is None:
            break
        node = match
        line = node.start_mark.line + 1
    return line


def at(path: Path, root: yaml.Node | None, loc: tuple[int | str, ...], message: str) -> str:
    """``FILE:LINE: key: message`` for the key at ``loc`` (without the line when there is none)."""
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = line_of(root, loc)
    return f"{path}:{line}: {key}: {message}" if line else f"{path}: {key}: {message}"


def key_of(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """A validation error's location as the keys of the data: without validator and union steps."""
    # "function-after[...]", "tuple[...]" in the location are no key.
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "tuple["))))


def validation_problems(path: Path, root: yaml.Node | None, exc: ValidationError) -> list[str]:
    """One :func:`at` line per error of ``exc``, validating the data of the file ``path``."""
    return [at(path, root, key_of(error["loc"]), error["msg"]) for error in exc.errors(include_url=False)]
