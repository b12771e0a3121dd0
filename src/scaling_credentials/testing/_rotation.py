"""Rotation under load, as a reusable harness: real threads or asyncio tasks send requests
through an auth while a callback rotates the key. The project's own rotation tests use it
for every provider; a third-party provider's tests can use it the same way."""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import NamedTuple, TypeVar

import httpx

from .._auth import ScalingAuth
from ._children import reap_child
from ._fake_api import FakeScalingAPI

__all__ = [
    "AsyncClientFactory",
    "ClientFactory",
    "PreforkRun",
    "RotationRun",
    "WorkerReport",
    "rotate_and_revoke",
    "run_prefork_rotation",
    "run_rotation_tasks",
    "run_rotation_threads",
]

PATH = "/oncall/schedules"

# What one request came to: the final status, and how many answers came before it (a
# request resent after a rejected key has one).
Answer = tuple[int, int]
#: Opens a client for a base URL (a context manager) and gives the function that sends
#: ``GET <path>`` through it and returns the final status and how many answers came
#: before it: how :func:`run_rotation_threads` drives any HTTP library.
ClientFactory = Callable[[str], AbstractContextManager[Callable[[str], Answer]]]
#: The asyncio twin of :data:`ClientFactory`, for :func:`run_rotation_tasks`.
AsyncClientFactory = Callable[
    [str], AbstractAsyncContextManager[Callable[[str], Awaitable[Answer]]]
]
_F = TypeVar("_F")


class RotationRun(NamedTuple):
    """What a rotation run saw: every final status, and how many requests were resent
    after a rejected key."""

    statuses: list[int]
    retried: int

    @property
    def failed(self) -> int:
        """Requests whose final answer was not 200."""
        return sum(1 for status in self.statuses if status != 200)


def rotate_and_revoke(api: FakeScalingAPI, write: Callable[[str], None], old: str) -> str:
    """The runbook's order: issue a new key, put it in the source, then revoke the old one.
    Returns the new key."""
    new = api.rotate()
    write(new)
    api.revoke(old)
    return new


class _Progress:
    """Per-worker completed-request counters: rotate again only once every worker has moved
    on, so that no request still carries a key two rotations old (the auth retries once)."""

    def __init__(self, workers: int) -> None:
        self.counts = [0] * workers
        self.statuses: list[int] = []
        self.retried = 0
        self.changed = threading.Condition()

    def record(self, worker: int, answer: Answer) -> None:
        with self.changed:
            self.counts[worker] += 1
            self.statuses.append(answer[0])
            self.retried += answer[1]
            self.changed.notify_all()

    def wait_all_advanced(self, by: int, timeout: float) -> None:
        with self.changed:
            start = list(self.counts)
            moved = self.changed.wait_for(
                lambda: all(c >= s + by for c, s in zip(self.counts, start, strict=True)),
                timeout,
            )
        if not moved:
            raise AssertionError(f"workers stopped making progress within {timeout} s")


def httpx_client(auth: httpx.Auth) -> ClientFactory:
    """The default :data:`ClientFactory`: an :class:`httpx.Client` with ``auth``."""

    @contextlib.contextmanager
    def open_client(base_url: str) -> Iterator[Callable[[str], Answer]]:
        with httpx.Client(base_url=base_url, auth=auth, timeout=30) as client:

            def send(path: str) -> Answer:
                response = client.get(path)
                return response.status_code, len(response.history)

            yield send

    return open_client


def httpx_async_client(auth: httpx.Auth) -> AsyncClientFactory:
    """The default :data:`AsyncClientFactory`: an :class:`httpx.AsyncClient` with
    ``auth``."""

    @contextlib.asynccontextmanager
    async def open_client(base_url: str) -> AsyncIterator[Callable[[str], Awaitable[Answer]]]:
        async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=30) as client:

            async def send(path: str) -> Answer:
                response = await client.get(path)
                return response.status_code, len(response.history)

            yield send

    return open_client


def run_rotation_threads(
    api: FakeScalingAPI,
    auth: httpx.Auth | None,
    rotate: Callable[[int], None],
    *,
    threads: int = 8,
    rotations: int = 3,
    gap: float = 0.0,
    timeout: float = 60.0,
    client: ClientFactory | None = None,
) -> RotationRun:
    """``threads`` threads, each with its own client (an :class:`httpx.Client` with
    ``auth``, or what ``client`` opens: requests, say), send requests to ``api`` while
    ``rotate(n)`` is called ``rotations`` times, each time after every thread has
    completed a few more requests and at least ``gap`` seconds (real time) after the
    previous rotation: rotations that close together are what a cache with a refetch
    floor must survive. Bounded: every wait has a timeout and every thread is joined."""
    open_client = _client_factory(auth, client, httpx_client)
    progress = _Progress(threads)
    stop = threading.Event()

    def worker(index: int) -> None:
        with open_client(api.url) as send:
            for _ in range(100_000):  # bounded; stopped by the event
                if stop.is_set():
                    return
                progress.record(index, send(PATH))

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    try:
        progress.wait_all_advanced(3, timeout)
        for number in range(rotations):
            rotate(number)
            paced = time.monotonic() + gap
            progress.wait_all_advanced(3, timeout)
            stop.wait(max(0.0, paced - time.monotonic()))  # pacing the load, not a TTL
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=timeout)
    if any(thread.is_alive() for thread in workers):
        raise AssertionError("a worker thread did not stop")
    return RotationRun(progress.statuses, progress.retried)


def run_rotation_tasks(
    api: FakeScalingAPI,
    auth: httpx.Auth | None,
    rotate: Callable[[int], None],
    *,
    tasks: int = 200,
    rotations: int = 3,
    gap: float = 0.0,
    timeout: float = 120.0,
    client: AsyncClientFactory | None = None,
) -> RotationRun:
    """A wave of ``tasks`` concurrent requests on one client (an
    :class:`httpx.AsyncClient` with ``auth``, or what ``client`` opens: aiohttp, say),
    then for each of ``rotations``: another wave with ``rotate(n)`` called while it is in
    flight (in a worker thread, so that a blocking rotation does not stall the loop), at
    least ``gap`` seconds (real time) after the previous rotation."""
    open_client = _client_factory(auth, client, httpx_async_client)
    statuses: list[int] = []
    retried = 0

    async def wave(send: Callable[[str], Awaitable[Answer]]) -> None:
        nonlocal retried
        answers = await asyncio.gather(*(send(PATH) for _ in range(tasks)))
        statuses.extend(status for status, _ in answers)
        retried += sum(before for _, before in answers)

    async def scenario() -> None:
        async with open_client(api.url) as send:
            await wave(send)
            for number in range(rotations):
                paced = time.monotonic() + gap
                running = asyncio.ensure_future(wave(send))
                await asyncio.sleep(0)
                await asyncio.to_thread(rotate, number)
                await running
                await asyncio.sleep(max(0.0, paced - time.monotonic()))  # pacing the load

    asyncio.run(asyncio.wait_for(scenario(), timeout))
    return RotationRun(statuses, retried)


def _client_factory(
    auth: httpx.Auth | None, client: _F | None, default: Callable[[httpx.Auth], _F]
) -> _F:
    if client is not None:
        if auth is not None:
            raise TypeError("pass either auth (an httpx.Auth) or client, not both")
        return client
    if auth is None:
        raise TypeError("pass auth (an httpx.Auth) or client")
    return default(auth)


class WorkerReport(NamedTuple):
    """What one forked worker reported: requests answered 200 and not, forced-or-TTL
    fetches it made itself, the last value of the probe (1 true, 0 false), and whether it
    finished its loop (1) rather than dying."""

    ok: int
    failed: int
    fetches: int
    probe: int
    done: int


class PreforkRun(NamedTuple):
    """Every worker's exit code (-9 when it had to be killed) and report."""

    codes: list[int]
    workers: list[WorkerReport]


_SLOT = struct.Struct("qqqqq")


class _Board:
    """Shared memory between the parent and its forked workers: a stop flag, then one
    report slot per worker."""

    def __init__(self, workers: int) -> None:
        self.memory = mmap.mmap(-1, 8 + _SLOT.size * workers)
        self.workers = workers

    def stop(self) -> None:
        self.memory[0:8] = struct.pack("q", 1)

    @property
    def stopping(self) -> bool:
        return bool(struct.unpack("q", self.memory[0:8])[0])

    def write(self, index: int, report: WorkerReport) -> None:
        offset = 8 + _SLOT.size * index
        self.memory[offset : offset + _SLOT.size] = _SLOT.pack(*report)

    def read(self, index: int) -> WorkerReport:
        offset = 8 + _SLOT.size * index
        return WorkerReport(*_SLOT.unpack(self.memory[offset : offset + _SLOT.size]))

    def wait_all_advanced(self, by: int, timeout: float) -> None:
        since = [self.read(i).ok for i in range(self.workers)]
        deadline = time.monotonic() + timeout
        while not all(self.read(i).ok >= since[i] + by for i in range(self.workers)):
            if time.monotonic() > deadline:
                reports = [self.read(i) for i in range(self.workers)]
                raise AssertionError(f"workers stopped making progress: {reports}")
            time.sleep(0.01)  # polling the workers' shared counters, not a TTL


def _wait_child(pid: int, timeout: float) -> int:
    code = reap_child(pid, timeout)
    return -9 if code is None else code  # killed by the pid we started


def run_prefork_rotation(
    api: FakeScalingAPI,
    auth: ScalingAuth,
    rotate: Callable[[int], None],
    *,
    workers: int = 3,
    rotations: int = 1,
    probe: Callable[[], bool] | None = None,
    timeout: float = 60.0,
) -> PreforkRun:
    """The pre-fork server pattern (gunicorn ``--preload``, uWSGI, Celery prefork): the
    caller warms ``auth``'s cache in the parent; this forks ``workers`` processes, each
    sending requests through ``auth`` on its own :class:`httpx.Client` (created after the
    fork), while ``rotate(n)`` is called ``rotations`` times in the parent. ``probe`` runs
    in each worker after every request (say, "does this worker use its own backend
    client?"). ``api`` must run in the parent: its thread does not survive a fork."""
    if not hasattr(os, "fork"):
        raise RuntimeError("run_prefork_rotation needs os.fork")
    cache = auth.cache
    board = _Board(workers)

    def work(index: int) -> int:
        ok = failed = last_probe = 0
        start = cache.stats.fetches
        with httpx.Client(base_url=api.url, auth=auth, timeout=10) as client:
            for _ in range(100_000):  # bounded; the parent says when to stop
                if board.stopping:
                    break
                try:
                    status = client.get(PATH).status_code
                except httpx.HTTPError:
                    status = 0
                ok, failed = (ok + 1, failed) if status == 200 else (ok, failed + 1)
                last_probe = int(probe()) if probe is not None else 1
                fetches = cache.stats.fetches - start
                board.write(index, WorkerReport(ok, failed, fetches, last_probe, 0))
        board.write(index, WorkerReport(ok, failed, cache.stats.fetches - start, last_probe, 1))
        return 0 if failed == 0 else 3

    pids: list[int] = []
    codes: list[int] = []
    try:
        for index in range(workers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    code = work(index)
                except BaseException:  # the exit code says it failed
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
        board.wait_all_advanced(3, timeout)
        for number in range(rotations):
            rotate(number)
            board.wait_all_advanced(3, timeout)
    finally:
        board.stop()
        codes = [_wait_child(pid, timeout) for pid in pids]
    return PreforkRun(codes, [board.read(i) for i in range(workers)])
