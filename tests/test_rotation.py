"""The rotation story end to end: real clients, real threads and tasks, FakeScalingAPI over
sockets, keys rotated in a file (written atomically, like a Kubernetes secret volume) and
in the environment while requests flow. Zero failed requests, one fetch per rotation."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from scaling_credentials import EnvProvider, FileProvider, KeyCache, Provider, ScalingAuth
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    rotate_and_revoke,
    run_rotation_tasks,
    run_rotation_threads,
)

ROTATIONS = 3
THREADS = 8
TASKS = 200


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


def test_rotation_under_8_threads(api: FakeScalingAPI, source: Source) -> None:
    provider, write = source
    keys = [api.issue_key()]
    write(keys[0])
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    run = run_rotation_threads(
        api,
        ScalingAuth(cache),
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        threads=THREADS,
        rotations=ROTATIONS,
    )
    assert run.failed == 0, f"{run.failed} failed requests"
    assert run.retried >= ROTATIONS  # the rotations were really exercised
    # One fetch at first use, then one forced fetch per rotation: not one per request.
    assert cache.stats.fetches == 1 + ROTATIONS
    assert cache.stats.forced_fetches == ROTATIONS


def test_rotation_under_200_tasks(api: FakeScalingAPI, source: Source) -> None:
    provider, write = source
    keys = [api.issue_key()]
    write(keys[0])
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    run = run_rotation_tasks(
        api,
        ScalingAuth(cache),
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        tasks=TASKS,
        rotations=ROTATIONS,
    )
    assert len(run.statuses) == TASKS * (1 + ROTATIONS)
    assert run.failed == 0, f"{run.failed} failed requests"
    assert run.retried >= ROTATIONS
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
