"""A per-process gate for slow queries (audio through Whisper, image uploads), so they cannot take every worker
thread and starve text queries.

At most ``SLOW_SLOTS`` slow queries run at once in a process and at most
``SLOW_QUEUE`` more wait, each for up to ``SLOW_WAIT_SECONDS``; anything beyond is
answered at once (or after the wait) with 503 and ``Retry-After``. The other worker
threads stay free for fast queries (words, stored items), which never touch the gate.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import ApiError


class SlowBusy(ApiError):
    status = 503
    code = "busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SlowGate:
    def __init__(self, slots: int, queue: int, wait_s: float) -> None:
        if slots < 1 or queue < 0 or wait_s < 0:
            raise ValueError("SLOW_SLOTS must be >= 1, SLOW_QUEUE >= 0 and SLOW_WAIT_SECONDS >= 0")
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
        self._admit = threading.BoundedSemaphore(slots + queue)
        self._run = threading.BoundedSemaphore(slots)

    def _busy(self) -> SlowBusy:
        return SlowBusy(f"the server is busy with {self.slots} spoken or image queries per process; try again in a "
                        "moment (typed words are answered meanwhile)", max(1, round(self.wait_s)))

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Hold a slow slot for the block, or raise :class:`SlowBusy` (503) when none frees up in time."""
        if not self._admit.acquire(blocking=False):
            raise self._busy()
        try:
            if not self._run.acquire(timeout=self.wait_s):
                raise self._busy()
            try:
                yield
            finally:
                self._run.release()
        finally:
            self._admit.release()
