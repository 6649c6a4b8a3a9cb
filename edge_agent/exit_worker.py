"""One exit's analysis thread: the camera thread hands a frame over and returns (issue 14).

The camera's read thread must hand off quickly (``edge_agent/sources/camera.py``): while it
is busy it reads no frames and sends no heartbeats. The exit detector, the snapshot's JPEG
encoding and the fsynced outbox write can take longer than a frame period on a small edge
box, so each exit gets an :class:`ExitWorker`: a thread of its own and a one-slot mailbox.

:meth:`ExitWorker.offer` puts the frame in the slot and returns at once. A frame still
waiting in the slot is replaced and counted as dropped: the latest frame wins, because an
exit's state is about now and a queue would only fall further behind. Drops are counted in
:meth:`ExitWorker.stats` and logged (the first, then every 100th, and a total at stop), the
way the camera counts its bad frames.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

Process = Callable[[np.ndarray, float], None]


@dataclass(frozen=True, slots=True)
class ExitWorkerStats:
    offered: int  # frames handed over by the camera thread
    analysed: int  # frames given to ``process`` (those that raised included)
    dropped: int  # frames replaced in the slot by a newer one before they were analysed
    errors: int  # ``process`` calls that raised


class ExitWorker:
    """Runs ``process(frame, ts)`` on its own thread for the latest frame offered.

    Constructing does nothing: :meth:`start` starts the thread, :meth:`stop` ends it.
    """

    def __init__(self, exit_id: str, process: Process) -> None:
        self.exit_id = exit_id
        self.process = process
        self._cond = threading.Condition()  # guards everything below
        self._slot: tuple[np.ndarray, float] | None = None
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._offered = self._analysed = self._dropped = self._errors = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"exit {self.exit_id}: worker already started")
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"exit-{self.exit_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread, waiting up to ``timeout`` for the frame in progress; a frame still
        waiting in the slot is not analysed."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._slot = None
            self._cond.notify_all()
        thread.join(timeout)
        if thread.is_alive():
            log.error("exit %s: analysis thread did not stop within %.1f s", self.exit_id, timeout)
        self._thread = None
        stats = self.stats()
        if stats.dropped:
            log.info("exit %s: %d of %d frames dropped in all (analysis slower than the camera)",
                     self.exit_id, stats.dropped, stats.offered)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> ExitWorkerStats:
        with self._cond:
            return ExitWorkerStats(offered=self._offered, analysed=self._analysed, dropped=self._dropped,
                                   errors=self._errors)

    # ------------------------------------------------------------------ the camera thread's side

    def offer(self, frame: np.ndarray, ts: float) -> None:
        """Hand ``frame`` over and return: it replaces (drops) a frame not analysed yet.

        The frame is not copied: ``cv2.VideoCapture.read()`` returns a new array every call.
        """
        with self._cond:
            self._offered += 1
            dropped = 0
            if self._slot is not None:
                self._dropped += 1
                dropped = self._dropped
            self._slot = (frame, ts)
            self._cond.notify_all()
        if dropped == 1 or (dropped and dropped % 100 == 0):  # the first, then a reminder
            log.warning("exit %s: analysis slower than the camera, %d frame(s) dropped so far",
                        self.exit_id, dropped)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no frame is waiting or being analysed; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._slot is None and not self._busy, timeout)

    # ------------------------------------------------------------------ the worker thread

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None or self._stopping)
                if self._stopping or self._slot is None:
                    return
                frame, ts = self._slot
                self._slot = None
                self._busy = True
            failed = 0
            try:
                self.process(frame, ts)
            except Exception:  # a failing analysis must not end the exit's thread
                with self._cond:
                    self._errors += 1
                    failed = self._errors
                if failed == 1 or failed % 100 == 0:
                    log.exception("exit %s: analysis failed (#%d)", self.exit_id, failed)
            finally:
                with self._cond:
                    self._analysed += 1
                    self._busy = False
                    self._cond.notify_all()
