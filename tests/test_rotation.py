"""The rotation story end to end: real clients, real threads and tasks, FakeScalingAPI over
sockets, keys rotated in a file (written atomically, like a Kubernetes secret volume) and
in the environment while requests flow, with the library's default settings. Zero failed
requests, one fetch per rotation, however close together the rotations come; a source
that never updates costs one forced fetch per min_refresh_interval and one warning per
minute that names the likely cause."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from scaling_credentials import (
    ApiKey,
    EnvProvider,
    FileProvider,
    KeyCache,
    Provider,
    ScalingAuth,
)
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    SecretVolume,
    rotate_and_revoke,
    run_rotation_tasks,
    run_rotation_threads,
)
from scaling_credentials.toolkit import mask

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


def assert_one_fetch_per_rotation(cache: KeyCache, provider: Provider) -> None:
    # One fetch at first use, then one per rotation: not one per request. A file source
    # may see the change itself (its stamp) before any 401; the environment cannot.
    stats = cache.stats
    assert stats.fetches == 1 + ROTATIONS
    if isinstance(provider, EnvProvider):
        assert stats.forced_fetches == ROTATIONS
    else:
        assert stats.forced_fetches <= ROTATIONS


@pytest.mark.slow
def test_rotations_1_s_apart_with_default_settings_under_8_threads(
    api: FakeScalingAPI, source: Source
) -> None:
    # The refetch floor (min_refresh_interval, 5 s by default) holds only a key rejected
    # again after its forced fetch: each new rejected key is refetched at once.
    provider, write = source
    keys = [api.issue_key()]
    write(keys[0])
    cache = KeyCache(provider, ttl=3600)
    assert cache.min_refresh_interval == 5.0
    run = run_rotation_threads(
        api,
        ScalingAuth(cache),
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        threads=THREADS,
        rotations=ROTATIONS,
        gap=1.0,
    )
    assert run.failed == 0, f"{run.failed} failed requests"
    assert_one_fetch_per_rotation(cache, provider)


def test_back_to_back_rotations_with_default_settings_under_8_threads(
    api: FakeScalingAPI, source: Source
) -> None:
    provider, write = source
    keys = [api.issue_key()]
    write(keys[0])
    cache = KeyCache(provider, ttl=3600)
    run = run_rotation_threads(
        api,
        ScalingAuth(cache),
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        threads=THREADS,
        rotations=ROTATIONS,
    )
    assert run.failed == 0, f"{run.failed} failed requests"
    assert_one_fetch_per_rotation(cache, provider)


@pytest.mark.slow
def test_rotations_1_s_apart_with_default_settings_under_200_tasks(
    api: FakeScalingAPI, source: Source
) -> None:
    provider, write = source
    keys = [api.issue_key()]
    write(keys[0])
    cache = KeyCache(provider, ttl=3600)
    run = run_rotation_tasks(
        api,
        ScalingAuth(cache),
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        tasks=TASKS,
        rotations=ROTATIONS,
        gap=1.0,
    )
    assert len(run.statuses) == TASKS * (1 + ROTATIONS)
    assert run.failed == 0, f"{run.failed} failed requests"
    assert_one_fetch_per_rotation(cache, provider)


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


def test_a_subpath_file_that_never_updates_warns_once_a_minute_naming_the_cause(
    api: FakeScalingAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A Kubernetes subPath mount shows the key as a plain file that never changes again.
    volume = SecretVolume(tmp_path / "volume")
    (tmp_path / "volume").mkdir()
    key = api.issue_key()
    volume.write(key)
    pinned = volume.pin(tmp_path / "api-key")
    clock = FakeClock()
    cache = KeyCache(FileProvider(pinned), ttl=3600, clock=clock)
    auth = ScalingAuth(cache)
    with httpx.Client(base_url=api.url, auth=auth) as client:
        assert client.get("/oncall/schedules").status_code == 200
        api.revoke(key)
        volume.write(api.rotate())  # the volume moves on; the subPath file does not
        with caplog.at_level(logging.DEBUG, logger="scaling_credentials"):
            statuses = [client.get("/oncall/schedules").status_code for _ in range(50)]
            clock.advance(61)
            statuses += [client.get("/oncall/schedules").status_code for _ in range(10)]
    assert statuses == [401] * 60
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one per key per minute, not one per request
    assert "not inside a kubelet ..data directory" in warnings[0]
    assert "subPath mount, it never updates" in warnings[0]
    assert "min_refresh_interval" in warnings[0] or "still holds it" in warnings[0]
    assert "(49 more rejections of this key since the last warning)" in warnings[1]
    assert mask(key) in warnings[0] and key not in caplog.text
    # The refetch floor held: one forced fetch, then one per min_refresh_interval.
    assert cache.stats.forced_fetches == 2


def test_a_kubelet_swap_is_picked_up_without_a_401(api: FakeScalingAPI, tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    old = api.issue_key()
    volume.write(old)
    clock = FakeClock()
    cache = KeyCache(FileProvider(volume.path), ttl=3600, clock=clock)
    auth = ScalingAuth(cache)
    with httpx.Client(base_url=api.url, auth=auth) as client:
        assert client.get("/oncall/schedules").status_code == 200
        new = api.rotate()
        volume.write(new)
        clock.advance(1.0)  # the cache looks at the file's stamp at most once a second
        assert client.get("/oncall/schedules").status_code == 200  # sees the change
        flight = cache._flight
        if flight is not None:  # the refetch runs in the background
            assert flight.done.wait(10)
        api.revoke(old)
        assert client.get("/oncall/schedules").status_code == 200
    assert [r.status for r in api.requests] == [200, 200, 200]  # never a 401
    assert cache.stats.forced_fetches == 0 and cache.stats.fetches == 2
    assert cache.peek() is not None and cache.peek() == ApiKey(new)
