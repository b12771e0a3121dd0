"""Fork safety: a KeyCache (and a ScalingAuth) warmed before ``os.fork()`` works in the
child, and the pre-fork server pattern (gunicorn ``--preload``, uWSGI, Celery prefork):
warm up in the parent, fork workers, rotate the key while they serve.

FakeScalingAPI runs in the parent (its thread does not survive a fork); the children
reach it over loopback. Children report through an anonymous shared memory map and
always leave with ``os._exit`` (never through pytest); every wait is bounded and a child
that does not finish in time is killed by its pid.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from scaling_credentials import ApiKey, FileProvider, KeyCache, ScalingAuth
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    MemoryProvider,
    rotate_and_revoke,
    run_prefork_rotation,
    wait_child,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

PATH = "/oncall/schedules"
K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"
CHILD_TIMEOUT = 60.0
SLOT = struct.Struct("qqqq")  # ok, failed, fetches, done


def write_key(path: Path, value: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Board:
    """Shared memory between the parent and its children: one slot (ok, failed, fetches,
    done) per child."""

    def __init__(self, children: int) -> None:
        self.memory = mmap.mmap(-1, 8 + SLOT.size * children)

    def write(self, child: int, ok: int, failed: int, fetches: int, done: int = 0) -> None:
        offset = 8 + SLOT.size * child
        self.memory[offset : offset + SLOT.size] = SLOT.pack(ok, failed, fetches, done)

    def read(self, child: int) -> tuple[int, int, int, int]:
        offset = 8 + SLOT.size * child
        ok, failed, fetches, done = SLOT.unpack(self.memory[offset : offset + SLOT.size])
        return ok, failed, fetches, done


def fork_child(body: Callable[[], int]) -> int:
    """Fork; the child runs ``body`` and leaves with its exit code (1 on any error)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = body()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def test_a_warm_cache_and_auth_work_in_the_child(api: FakeScalingAPI, tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    write_key(path, api.issue_key())
    cache = KeyCache(FileProvider(path), ttl=3600)
    auth = ScalingAuth(cache)  # created before the fork, like a module-level client's auth
    cache.get()
    fetches = cache.stats.fetches
    board = Board(1)

    def child() -> int:
        # httpx clients are not fork-safe (pooled sockets): create them after the fork.
        with httpx.Client(base_url=api.url, auth=auth, timeout=10) as client:
            statuses = [client.get(PATH).status_code for _ in range(5)]

        async def async_part() -> list[int]:
            async with httpx.AsyncClient(base_url=api.url, auth=auth, timeout=10) as client:
                responses = await asyncio.gather(*(client.get(PATH) for _ in range(5)))
                return [r.status_code for r in responses]

        statuses += asyncio.run(async_part())
        ok = statuses.count(200)
        board.write(0, ok, len(statuses) - ok, cache.stats.fetches - fetches, 1)
        return 0 if ok == len(statuses) else 3

    assert wait_child(fork_child(child), CHILD_TIMEOUT) == 0
    assert board.read(0) == (10, 0, 0, 1)  # served from the inherited key: no fetch
    assert cache.stats.fetches == fetches  # the parent is untouched


def test_a_child_fetches_on_its_own_after_rotation(api: FakeScalingAPI, tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    old = api.issue_key()
    write_key(path, old)
    cache = KeyCache(FileProvider(path), ttl=3600, min_refresh_interval=0)
    cache.get()
    new = api.rotate()
    write_key(path, new)
    api.revoke(old)
    board = Board(1)

    def child() -> int:
        with httpx.Client(base_url=api.url, auth=ScalingAuth(cache), timeout=10) as client:
            response = client.get(PATH)
        board.write(0, int(response.status_code == 200), 0, cache.stats.forced_fetches, 1)
        return 0

    assert wait_child(fork_child(child), CHILD_TIMEOUT) == 0
    assert board.read(0) == (1, 0, 1, 1)  # a 401, one forced fetch in the child, retried
    assert cache.peek() == ApiKey(old)


@pytest.mark.parametrize("children", [4])
def test_pre_fork_server_pattern_with_rotation(
    api: FakeScalingAPI, tmp_path: Path, children: int
) -> None:
    """Warm up in the parent, fork workers, rotate the key three times (new key in the
    file, then the old one revoked) while every worker sends requests: all workers exit
    0 with zero failed requests."""
    path = tmp_path / "api-key"
    keys = [api.issue_key()]
    write_key(path, keys[0])
    cache = KeyCache(FileProvider(path), ttl=3600, min_refresh_interval=0)
    auth = ScalingAuth(cache)
    cache.get()  # warm-up before the fork
    run = run_prefork_rotation(
        api,
        auth,
        lambda _: keys.append(rotate_and_revoke(api, lambda v: write_key(path, v), keys[-1])),
        workers=children,
        rotations=3,
    )
    slots = run.workers
    assert run.codes == [0] * children, slots
    assert all(w.failed == 0 and w.done == 1 for w in slots), slots
    # Each worker fetched on its own, once per rotation it noticed (at most three).
    assert all(1 <= w.fetches <= 3 for w in slots), slots
    rejected = [r for r in api.requests if r.status == 401]
    assert len(rejected) <= children * 3 * 2, "workers looped on 401s"


def test_a_forced_fetch_in_flight_at_fork_is_owed_to_the_child() -> None:
    # The parent's forced fetch for a rejected key never finishes in the child (its
    # thread is gone): the child's next rejection of that key still earns one at once,
    # rather than waiting out min_refresh_interval as if the source had been asked.
    provider = MemoryProvider(K1)
    cache = KeyCache(provider, ttl=3600, jitter=0, clock=FakeClock())
    key = cache.get()
    provider.gate = threading.Event()
    provider.started.clear()
    parent_refresh = threading.Thread(target=lambda: cache.refresh(rejected=key), daemon=True)
    parent_refresh.start()
    assert provider.started.wait(10)

    def child() -> int:
        provider.gate = None
        provider.value = K2
        fresh, outcome = cache._refresh(key)
        return 0 if (fresh.reveal(), outcome) == (K2, "fetched") else 3

    try:
        assert wait_child(fork_child(child), CHILD_TIMEOUT) == 0
    finally:
        provider.gate.set()
        parent_refresh.join(timeout=10)


def test_a_subscriber_lock_held_at_fork_is_not_held_in_the_child() -> None:
    cache = KeyCache(MemoryProvider(K1), clock=FakeClock())
    cache.get()
    holding, release = threading.Event(), threading.Event()

    def subscribing() -> None:  # a thread in the middle of subscribe() at the fork
        with cache._events._lock:
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=subscribing, daemon=True)
    thread.start()
    assert holding.wait(10)

    def child() -> int:
        subscriber = threading.Thread(target=lambda: cache.subscribe(lambda event: None))
        subscriber.start()
        subscriber.join(timeout=10)
        return 4 if subscriber.is_alive() else 0

    try:
        assert wait_child(fork_child(child), CHILD_TIMEOUT) == 0
    finally:
        release.set()
        thread.join(timeout=10)
