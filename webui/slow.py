"""A per-process gate for slow queries (audio through Whisper, image uploads), so they cannot take every worker
thread or every core and starve text queries.

At most ``SLOW_SLOTS`` slow queries run at once in a process and at most
``SLOW_QUEUE`` more wait, each for up to ``SLOW_WAIT_SECONDS``; anything beyond is
answered at once (or after the wait) with 503 and ``Retry-After``. The other worker
threads stay free for fast queries (words, stored items), which never touch the gate.

Pictures and recordings wait at two gates of their own (``webui.slow_image``, ``webui.slow``), so a
picture (tens of milliseconds) never waits behind Whisper (seconds) for the one slot.

Threads are not enough on a small machine: Whisper and the image tower keep every core busy, and a typed
query waiting for a core took 5x its quiet time (p99 321 ms with 8 audio clients on 2 cores). So slow queries
run on the gate's own threads, started with a lower scheduling priority (``SLOW_NICE``, Linux nice is per
thread): the threads that Whisper (CTranslate2) and torch start from them inherit it, and a typed query that
arrives gets the cores first. When nothing else runs, slow queries use the cores as before. Towers are loaded
by the first query that needs them, so Whisper's threads are started by a gate thread; a tower loaded from a
normal thread (the text tower's warm-up) keeps the normal priority.
"""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from .errors import ApiError

T = TypeVar("T")
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(head: bytes) -> bool:
    """Whether an upload's first bytes are a picture's (which gate it waits at; the decoder sniffs again)."""
    return head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


class SlowBusy(ApiError):
    status = 503
    code = "busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def lower_thread_priority(nice: int) -> None:
    """Raise this thread's nice value by ``nice`` (Linux: per thread; elsewhere, or when refused, nothing)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not permitted here: slow queries then share the cores evenly, as before
        pass


class SlowGate:
    def __init__(self, slots: int, queue: int, wait_s: float, nice: int = 0) -> None:
        if slots < 1 or queue < 0 or wait_s < 0 or not 0 <= nice <= 19:
            raise ValueError("SLOW_SLOTS must be >= 1, SLOW_QUEUE >= 0, SLOW_WAIT_SECONDS >= 0 and SLOW_NICE 0..19")
        self.slots, self.queue, self.wait_s, self.nice = slots, queue, wait_s, nice
        self._admit = threading.BoundedSemaphore(slots + queue)
        self._run = threading.BoundedSemaphore(slots)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="slow-query",
                                        initializer=lower_thread_priority, initargs=(nice,))

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

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a slow slot, on one of the gate's lower-priority threads, in the caller's context (Flask's
        request and app context travel with it); its result or exception comes back to the caller."""
        with self.enter():
            return self._pool.submit(contextvars.copy_context().run, fn).result()
