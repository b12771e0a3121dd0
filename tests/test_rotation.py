"""The rotation story end to end: real clients, real threads and tasks, FakeScalingAPI over
sockets, keys rotated in a file (written atomically, like a Kubernetes secret volume) and
in the environment while requests flow. Zero failed requests, one fetch per rotation."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from scaling_credentials import EnvProvider, FileProvider, KeyCache, Provider, ScalingAuth
from scaling_credentials.testing import FakeClock, FakeScalingAPI

ROTATIONS = 3
THREADS = 8
TASKS = 200


@pytest.fixture
def api() -> Iterator[FakeScalingAPI]:
    with FakeScalingAPI() as server:
        yield server


def atomic_write(path: Path, value: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


Source = tuple[Provider, Callable[[str], None]]


@pytest.fixture(params=["file", "env"])
def source(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Source:
    if request.param == "file":
        path = tmp_path / "api-key"
        return FileProvider(path), lambda value: atomic_write(path, value)
    monkeypatch.setenv("SCALING_ROTATION_TEST_KEY", "unset")
    return EnvProvider("SCALING_ROTATION_TEST_KEY"), lambda value: os.environ.__setitem__(
        "SCALING_ROTATION_TEST_KEY", value
    )


class Progress:
    """Per-worker completed-request counters, to rotate only once every worker moved on."""

    def __init__(self, workers: int) -> None:
        self.counts = [0] * workers
        self.statuses: list[int] = []
        self.retried = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def record(self, worker: int, response: httpx.Response) -> None:
        with self.changed:
            self.counts[worker] += 1
            self.statuses.append(response.status_code)
            self.retried += len(response.history)
            self.changed.notify_all()

    def wait_all_advanced(self, by: int, timeout: float = 20.0) -> None:
        with self.changed:
            start = list(self.counts)
            ok = self.changed.wait_for(
                lambda: all(c >= s + by for c, s in zip(self.counts, start, strict=False)), timeout
            )
        assert ok, "workers stopped making progress"


def rotate(api: FakeScalingAPI, write: Callable[[str], None], old: str) -> str:
    new = api.rotate()
    write(new)  # the new key reaches the source first...
    api.revoke(old)  # ...then the old one is deleted, as the runbook says
    return new


def test_rotation_under_8_threads(api: FakeScalingAPI, source: Source) -> None:
    provider, write = source
    key = api.issue_key()
    write(key)
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    auth = ScalingAuth(cache)
    progress = Progress(THREADS)
    stop = threading.Event()

    def worker(index: int) -> None:
        with httpx.Client(base_url=api.url, auth=auth) as client:
            for _ in range(5000):  # bounded
                if stop.is_set():
                    return
                progress.record(index, client.get("/oncall/schedules"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        progress.wait_all_advanced(3)
        for _ in range(ROTATIONS):
            key = rotate(api, write, key)
            progress.wait_all_advanced(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    failed = [s for s in progress.statuses if s != 200]
    assert failed == [], f"{len(failed)} failed requests"
    assert progress.retried >= ROTATIONS  # the rotations were really exercised
    # One fetch at first use, then one forced fetch per rotation: not one per request.
    assert cache.stats.fetches == 1 + ROTATIONS
    assert cache.stats.forced_fetches == ROTATIONS


def test_rotation_under_200_tasks(api: FakeScalingAPI, source: Source) -> None:
    provider, write = source
    key = api.issue_key()
    write(key)
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    auth = ScalingAuth(cache)
    statuses: list[int] = []
    retried = 0

    async def wave(client: httpx.AsyncClient) -> None:
        nonlocal retried
        responses = await asyncio.gather(*(client.get("/oncall/schedules") for _ in range(TASKS)))
        statuses.extend(r.status_code for r in responses)
        retried += sum(len(r.history) for r in responses)

    async def scenario() -> None:
        nonlocal key
        async with httpx.AsyncClient(base_url=api.url, auth=auth) as client:
            await wave(client)
            for _ in range(ROTATIONS):
                # Rotate while a wave of 200 tasks is in flight.
                running = asyncio.ensure_future(wave(client))
                await asyncio.sleep(0)
                key = rotate(api, write, key)
                await running

    asyncio.run(asyncio.wait_for(scenario(), 120))
    failed = [s for s in statuses if s != 200]
    assert failed == [], f"{len(failed)} failed requests"
    assert retried >= ROTATIONS
    assert cache.stats.fetches == 1 + ROTATIONS
    assert cache.stats.forced_fetches == ROTATIONS


def test_revoked_key_with_no_new_key_does_not_loop(api: FakeScalingAPI, tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    key = api.issue_key()
    atomic_write(path, key)
    clock = FakeClock()
    cache = KeyCache(FileProvider(path), ttl=3600, min_refresh_interval=5, clock=clock)
    auth = ScalingAuth(cache)
    with httpx.Client(base_url=api.url, auth=auth) as client:
        assert client.get("/oncall/schedules").status_code == 200
    api.revoke(key)  # and nothing new in the source
    api.clear_requests()
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=api.url, auth=auth) as client:
            for _ in range(20):
                status = client.get("/oncall/schedules").status_code
                with lock:
                    statuses.append(status)

    def burst() -> None:
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)

    burst()
    assert statuses == [401] * (THREADS * 20)
    assert len(api.requests) <= 2 * len(statuses)  # each request sent at most twice
    assert cache.stats.forced_fetches == 1  # the floor holds while the clock stands still
    clock.advance(5)
    burst()
    assert cache.stats.forced_fetches == 2
    assert len(api.requests) <= 2 * len(statuses)
