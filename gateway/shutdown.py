"""Stopping a long-running command on SIGINT (Ctrl-C) or SIGTERM (``docker stop``, systemd), written once.

Used by the command line (``safeguard/cli.py``) and the demo (``safeguard/demo.py``); it imports
nothing of the project, so either may use it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> threading.Event:
    """An event that SIGINT or SIGTERM sets. The handlers are installed now (Python allows that in
    the main thread only) and replace the default ones: Ctrl-C no longer raises KeyboardInterrupt."""
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for_signal(tick: Callable[[], bool | None] | None = None, every_s: float = 1.0) -> None:
    """Block until SIGINT or SIGTERM, or until ``tick`` (called every ``every_s`` if given) returns True."""
    stop = stop_on_signals()
    while not stop.wait(every_s if tick else None):
        if tick is not None and tick():
            return
