"""Where a running ``safeguard demo`` tells the other commands how to reach it.

The demo picks free ports and runs its own PostgreSQL, so nothing the user could type by heart
reaches it. While it runs it writes its settings (a YAML file the gateway's settings loader
reads) and its pid into its data folder; the command line's tools (``inspect``, ``simulate``,
``record``, ``token``, ...) use that file when no ``--config`` is given and the pid is alive.
Serving roles (``serve``, ``ingest``, ...) never do: a production gateway must not find a demo.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_DATA_DIR = Path(".safeguard/demo")
_SETTINGS = "settings.yaml"
_PID = "demo.pid"


def publish(data_dir: Path, values: dict[str, Any]) -> Path:
    """Write the running demo's settings (readable by its user only: it names the database)."""
    path = data_dir / _SETTINGS
    path.write_text("# written by `safeguard demo` while it runs; removed when it stops\n"
                    + yaml.safe_dump(values, allow_unicode=True, sort_keys=True), encoding="utf-8")
    path.chmod(0o600)
    (data_dir / _PID).write_text(f"{os.getpid()}\n", encoding="utf-8")
    return path


def withdraw(data_dir: Path) -> None:
    for name in (_SETTINGS, _PID):
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()


def running(data_dir: Path = DEFAULT_DATA_DIR) -> Path | None:
    """The settings file of a demo running from ``data_dir``, or None (none, or it died)."""
    path, pid_file = data_dir / _SETTINGS, data_dir / _PID
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    if not path.is_file() or not _alive(pid):
        return None
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but not our demo
        return False
    return True
