"""Rotation under load, as a reusable harness: real threads or asyncio tasks send requests
through an auth while a callback rotates the key. The project's own rotation tests use it
for every provider; a third-party provider's tests can use it the same way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import NamedTuple

import httpx

from ._fake_api import FakeScalingAPI

__all__ = ["RotationRun", "rotate_and_revoke", "run_rotation_tasks", "run_rotation_threads"]

PATH = "/oncall/schedules"


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

    def record(self, worker: int, response: httpx.Response) -> None:
        with self.changed:
            self.counts[worker] += 1
            self.statuses.append(response.status_code)
            self.retried += len(response.history)
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


def run_rotation_threads(
    api: FakeScalingAPI,
    auth: httpx.Auth,
    rotate: Callable[[int], None],
    *,
    threads: int = 8,
    rotations: int = 3,
    timeout: float = 60.0,
) -> RotationRun:
    """``threads`` threads, each with its own :class:`httpx.Client`, send requests to
    ``api`` through ``auth`` while ``rotate(n)`` is called ``rotations`` times, each time
    after every thread has completed a few more requests. Bounded: every wait has a
    timeout and every thread is joined."""
    progress = _Progress(threads)
    stop = threading.Event()

    def worker(index: int) -> None:
        with httpx.Client(base_url=api.url, auth=auth, timeout=30) as client:
            for _ in range(100_000):  # bounded; stopped by the event
                if stop.is_set():
                    return
                progress.record(index, client.get(PATH))

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    try:
        progress.wait_all_advanced(3, timeout)
        for number in range(rotations):
            rotate(number)
            progress.wait_all_advanced(3, timeout)
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=timeout)
    if any(thread.is_alive() for thread in workers):
        raise AssertionError("a worker thread did not stop")
    return RotationRun(progress.statuses, progress.retried)


def run_rotation_tasks(
    api: FakeScalingAPI,
    auth: httpx.Auth,
    rotate: Callable[[int], None],
    *,
    tasks: int = 200,
    rotations: int = 3,
    timeout: float = 120.0,
) -> RotationRun:
    """A wave of ``tasks`` concurrent requests on one :class:`httpx.AsyncClient`, then for
    each of ``rotations``: another wave with ``rotate(n)`` called while it is in flight
    (in a worker thread, so that a blocking rotation does not stall the loop)."""
    statuses: list[int] = []
    retried = 0

    async def wave(client: httpx.AsyncClient) -> None:
        nonlocal retried
        responses = await asyncio.gather(*(client.get(PATH) for _ in range(tasks)))
        statuses.extend(r.status_code for r in responses)
        retried += sum(len(r.history) for r in responses)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api.url, auth=auth, timeout=30) as client:
            await wave(client)
            for number in range(rotations):
                running = asyncio.ensure_future(wave(client))
                await asyncio.sleep(0)
                await asyncio.to_thread(rotate, number)
                await running

    asyncio.run(asyncio.wait_for(scenario(), timeout))
    return RotationRun(statuses, retried)
