"""Flight: one backend fetch that any number of threads and tasks wait for.

A flight runs off every caller's stack: a sync fetch on one of the process's fetch
threads (daemon threads that never exit, see :class:`_Workers`), a native async fetch as
a task on the loop of the caller that started it. Callers wait for
its outcome with a deadline (real time: timeouts are real), so a hung backend never holds
a request longer than the cache's ``fetch_timeout``, and a waiter that gives up or is
cancelled never cancels the fetch for the others.

A flight can also be *orphaned*: its task was cancelled because the loop it ran on shut
down (a short ``asyncio.run()`` that timed out, a closed loop). That is no backend
failure: its waiters are woken with no outcome and simply ask the cache again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported where they are used: asyncio costs ~15 ms at cold start (Lambda).
    import asyncio
    import queue

from ._fork import PerProcess
from ._key import ApiKey
from ._schedule import FetchKind

__all__ = ["FETCH_THREAD", "Flight", "quiesce", "running_loop", "start_thread"]

# How often a waiter looks again at a flight whose task lives on another event loop, to
# notice that loop is gone (it can no longer finish the fetch).
_LIVENESS_CHECK = 0.5


class Flight:
    """One fetch in progress, and its outcome once it has one."""

    __slots__ = (
        "abandoned",
        "async_waiters",
        "deadline",
        "done",
        "error",
        "finished",
        "key",
        "kind",
        "loop",
        "number",
        "orphaned",
        "rejected",
        "stamp",
        "task",
    )

    def __init__(
        self,
        kind: FetchKind,
        timeout: float,
        rejected: ApiKey | None = None,
        number: int = 0,
    ) -> None:
        self.kind = kind
        self.number = number  # flights of one cache are numbered in the order they start
        self.rejected = rejected  # a forced fetch after the API rejected this key
        self.deadline = time.monotonic() + timeout  # real time: timeouts are real
        self.done = threading.Event()
        self.finished = False
        self.abandoned = False  # past its deadline: counted as failed, its result still used
        self.orphaned = False  # its task was cancelled with its loop: no outcome
        self.key: ApiKey | None = None
        self.error: BaseException | None = None
        self.stamp: object = None  # the provider's stamp, taken before the fetch
        self.async_waiters: list[asyncio.Future[None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None

    def can_finish(self) -> bool:
        """False once the fetch can no longer end on its own: its task's loop is closed
        or no longer running."""
        loop = self.loop
        if self.finished or loop is None:
            return True
        return not loop.is_closed() and loop.is_running()

    def wake(self) -> None:
        """Wake every waiter (call once ``finished`` or ``orphaned`` is set)."""
        waiters, self.async_waiters = self.async_waiters, []
        self.done.set()
        for waiter in waiters:
            try:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # that waiter's loop is closed: nobody is waiting there
                pass

    def wait(self) -> bool:
        """Block until the flight ends (True), or its deadline passes or it can no longer
        end (False)."""
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return self.done.is_set()
            step = remaining if self.loop is None else min(remaining, _LIVENESS_CHECK)
            if self.done.wait(step):
                return True
            if not self.can_finish():
                return False

    async def await_end(self) -> bool:
        """:meth:`wait` for asyncio: only this caller's own future is ever cancelled."""
        import asyncio

        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.async_waiters.append(waiter)
        if self.finished or self.orphaned or self.done.is_set():
            _wake(waiter)
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return waiter.done()
            step = remaining if self.loop in (None, loop) else min(remaining, _LIVENESS_CHECK)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), step)
                return True
            except asyncio.TimeoutError:
                if not self.can_finish():
                    return False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Workers:
    """The daemon threads sync fetches run on, which never exit.

    A thread that exits while the process forks can leave a lock of the C runtime held
    forever in the child: OpenSSL's per-thread clean-up takes a process-wide lock, and the
    child's first TLS context then hangs (seen with gunicorn ``--preload``, whose master
    warms the cache and forks right after). So a fetch thread, once started, waits for the
    next fetch instead of exiting; one more is started only when every one is busy (a
    hung backend keeps its thread until the provider's own timeouts end the call).
    """

    def __init__(self) -> None:
        import queue  # here, not at import: a cold start may never fetch synchronously

        self._jobs: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._idle = 0
        self._running = 0

    def submit(self, job: Callable[[], Any]) -> None:
        with self._changed:
            spare = self._idle > 0
            if spare:
                self._idle -= 1
            self._running += 1
        if not spare:
            try:
                threading.Thread(target=self._serve, name=FETCH_THREAD, daemon=True).start()
            except BaseException:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()
                raise
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException:  # noqa: S110 - a job reports its own outcome
                pass
            finally:
                del job  # an idle thread keeps nothing alive (a cache, a flight)
                with self._changed:
                    self._running -= 1
                    self._idle += 1
                    self._changed.notify_all()

    def quiesce(self, timeout: float) -> bool:
        """Wait until no fetch is running in this process (True), or ``timeout`` passed."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout)


FETCH_THREAD = "scaling-credentials-fetch"
_workers: PerProcess[_Workers] = PerProcess(_Workers)


def start_thread(target: Callable[[], Any]) -> None:
    """Run ``target`` (a sync fetch) on one of the process's fetch threads. Raises
    :class:`RuntimeError` when no thread can be started."""
    _workers.get().submit(target)


def quiesce(timeout: float = 30.0) -> bool:
    """Wait until no sync fetch is running in this process, for at most ``timeout``
    seconds (tests and benchmarks use it to let background fetches land)."""
    workers = _workers.peek()
    return True if workers is None else workers.quiesce(timeout)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any (without importing asyncio when
    nothing could be running)."""
    import sys

    if "asyncio" not in sys.modules:  # no loop can be running without asyncio
        return None
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
