"""KeyCache: TTL, jitter, single-flight, forced refresh, refresh-ahead, stale-if-error,
backoff, timeouts. Real threads and tasks; a fake clock for every TTL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import threading
from datetime import timedelta

import pytest

from scaling_credentials import (
    ApiKey,
    CacheEvent,
    ConfigurationError,
    KeyCache,
    ProviderError,
    ProviderTimeoutError,
    SecretNotFoundError,
)
from scaling_credentials.testing import (
    FakeClock,
    MemoryProvider,
    memory_cache,
    run_in_threads,
    wait_child,
)
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret

K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"
K3 = "scl_live_thirdkey0123456789mnop"


# ---------------------------------------------------------------------------- TTL


def test_first_get_fetches_then_serves_from_cache() -> None:
    cache, provider, _clock = memory_cache(K1, ttl=60)
    assert_key_is(cache.get(), K1)
    for _ in range(100):
        assert_key_is(cache.get(), K1)
    assert provider.fetches == 1
    stats = cache.stats
    assert stats.fetches == 1
    assert stats.hits >= 100
    assert stats.last_fetch_at is not None
    assert stats.last_fetch_duration is not None


def test_expiry_fetches_again() -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=0)
    cache.get()
    provider.value = K2
    clock.advance(59.9)
    assert_key_is(cache.get(), K1)
    clock.advance(0.2)
    assert_key_is(cache.get(), K2)
    assert provider.fetches == 2


def test_ttl_accepts_timedelta_and_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KeyCache(MemoryProvider(K1), ttl=timedelta(minutes=2)).ttl == 120.0
    monkeypatch.setenv("SCALING_API_KEY_TTL", "42")
    assert KeyCache(MemoryProvider(K1)).ttl == 42.0
    monkeypatch.setenv("SCALING_API_KEY_TTL", "soon")
    with pytest.raises(ConfigurationError, match="SCALING_API_KEY_TTL"):
        KeyCache(MemoryProvider(K1))


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"max_stale": -1},
        {"min_refresh_interval": "5"},
        {"fetch_timeout": 0},
    ],
)
def test_bad_configuration_is_a_configuration_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        KeyCache(MemoryProvider(K1), **options)  # type: ignore[arg-type]


def test_not_a_provider_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="Provider"):
        KeyCache("env:X")  # type: ignore[arg-type]


def _lifetimes(seed: int, count: int) -> list[int]:
    """The first ``count`` lifetimes (whole seconds) of one cache with ttl 100, jitter 0.2."""
    provider = MemoryProvider(K1)
    clock = FakeClock()
    cache = KeyCache(
        provider, ttl=100, jitter=0.2, refresh_ahead=0, clock=clock, rng=random.Random(seed)
    )
    cache.get()
    lifetimes: list[int] = []
    since = 0
    # Walk the clock in 1 s steps until each entry expires (bounded loop).
    for _ in range(count * 102):
        clock.advance(1)
        since += 1
        before = provider.fetches
        cache.get()
        if provider.fetches > before:
            lifetimes.append(since)
            since = 0
            if len(lifetimes) == count:
                break
    return lifetimes


def test_jitter_spreads_lifetimes_within_bounds() -> None:
    runs = [_lifetimes(seed, 3) for seed in range(40)]
    assert all(len(run) == 3 for run in runs)
    later = [lifetime for run in runs for lifetime in run[1:]]
    assert min(later) >= 80 and max(later) <= 101
    assert len(set(later)) > 5, "lifetimes should differ between processes"


def test_the_first_lifetime_is_spread_over_most_of_the_ttl() -> None:
    # A fleet started together falls out of step within one TTL (docs/scale.md).
    first = [_lifetimes(seed, 1)[0] for seed in range(200)]
    assert min(first) >= 10 and max(first) <= 101
    assert min(first) < 30 and max(first) > 80  # spread, not bunched near ttl
    steady = KeyCache(MemoryProvider(K1), ttl=100, jitter=0, clock=FakeClock())
    steady.get()
    assert steady._state.entry is not None
    assert steady._state.entry.expires_at - steady._state.entry.fetched_at == 100  # jitter 0


def test_the_lifetime_after_a_forced_fetch_or_invalidate_is_spread_like_the_first() -> None:
    # A fleet makes its forced fetches together (a rotation): the next lifetime is spread
    # over [0.1, 1] x ttl, as after start, so that the fleet does not refetch in step.
    def lifetime(cache: KeyCache) -> float:
        entry = cache._state.entry
        assert entry is not None
        return entry.expires_at - entry.fetched_at

    steady, forced, invalidated = [], [], []
    for seed in range(100):
        provider = MemoryProvider(K1)
        clock = FakeClock()
        cache = KeyCache(provider, ttl=100, jitter=0.2, clock=clock, rng=random.Random(seed))
        key = cache.get()
        clock.advance(101)
        cache.get()  # a TTL fetch: the steady spread
        steady.append(lifetime(cache))
        provider.value = K2
        cache.refresh(rejected=key)  # the forced fetch after a rotation
        forced.append(lifetime(cache))
        cache.invalidate()
        cache.get()
        invalidated.append(lifetime(cache))
    assert min(steady) >= 80 and max(steady) <= 100
    for spread in (forced, invalidated):
        assert min(spread) >= 10 and max(spread) <= 100
        assert min(spread) < 30 and max(spread) > 80  # spread, not bunched near ttl


def test_key_age_counts_from_the_last_successful_read_of_the_source() -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=0, max_stale=100)
    assert cache.key_age is None  # nothing held yet
    cache.get()
    assert cache.key_age == 0
    clock.advance(59)
    assert cache.key_age == 59
    clock.advance(2)
    cache.get()  # refetched (the same key): the age starts again
    assert cache.key_age == 0 and provider.fetches == 2
    provider.fail = True
    clock.advance(70)
    cache.get()  # the refetch fails; the held key is served stale and keeps ageing
    assert cache.key_age == 70
    cache.invalidate()
    assert cache.key_age is None


def test_invalidate_forgets_the_key() -> None:
    cache, provider, _ = memory_cache(K1, ttl=60)
    cache.get()
    cache.invalidate()
    assert cache.peek() is None
    provider.value = K2
    assert_key_is(cache.get(), K2)
    assert provider.fetches == 2


# ---------------------------------------------------------------------------- single flight


def test_32_threads_at_an_expired_entry_make_one_fetch() -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=0)
    cache.get()
    clock.advance(61)
    provider.value = K2
    provider.gate = threading.Event()
    provider.started.clear()
    results: list[object] = []
    done = threading.Event()

    def go() -> None:
        results.extend(run_in_threads(cache.get, threads=32))
        done.set()

    runner = threading.Thread(target=go)
    runner.start()
    assert provider.started.wait(10)
    provider.gate.set()
    runner.join(timeout=30)
    assert done.is_set()
    assert provider.fetches == 2  # the first fill, then exactly one for 32 threads
    assert results == [ApiKey(K2)] * len(results)


def test_32_threads_at_first_use_make_one_fetch() -> None:
    cache, provider, _ = memory_cache(K1, ttl=60)
    provider.delay = 0.05  # keep the fetch in flight while the others arrive
    results = run_in_threads(cache.get, threads=32)
    assert provider.fetches == 1
    assert {r for r in results if isinstance(r, ApiKey)} == {ApiKey(K1)}


def test_200_tasks_at_an_expired_entry_make_one_fetch() -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=0)
    cache.get()
    clock.advance(61)
    provider.value = K2
    provider.delay = 0.05

    async def scenario() -> list[ApiKey]:
        return await asyncio.gather(*(cache.aget() for _ in range(200)))

    keys = asyncio.run(scenario())
    assert provider.fetches == 2
    assert set(keys) == {ApiKey(K2)}


def test_200_tasks_receiving_invalid_api_key_make_one_forced_fetch() -> None:
    cache, provider, _ = memory_cache(K1, ttl=300, min_refresh_interval=0)
    old = cache.get()
    provider.value = K2
    provider.delay = 0.05

    async def scenario() -> list[ApiKey]:
        return await asyncio.gather(*(cache.arefresh(rejected=old) for _ in range(200)))

    keys = asyncio.run(scenario())
    assert provider.fetches == 2
    assert cache.stats.forced_fetches == 1
    assert set(keys) == {ApiKey(K2)}
    assert provider.rejected == [ApiKey(K1)]


def test_threads_and_tasks_share_one_fetch() -> None:
    cache, provider, _ = memory_cache(K1, ttl=60)
    provider.gate = threading.Event()
    results: list[object] = []

    def sync_side() -> None:
        results.extend(run_in_threads(cache.get, threads=8))

    async def async_side() -> list[ApiKey]:
        tasks = [asyncio.ensure_future(cache.aget()) for _ in range(50)]
        await asyncio.sleep(0)
        assert provider.started.wait(10)
        provider.gate.set()  # type: ignore[union-attr]
        return await asyncio.gather(*tasks)

    thread = threading.Thread(target=sync_side)
    thread.start()
    keys = asyncio.run(async_side())
    thread.join(timeout=30)
    assert provider.fetches == 1
    assert set(keys) == {ApiKey(K1)}
    assert all(isinstance(r, ApiKey) for r in results)


# ---------------------------------------------------------------------------- forced refresh


def test_refresh_with_a_different_cached_key_does_not_fetch() -> None:
    cache, provider, _ = memory_cache(K1, ttl=60, min_refresh_interval=0)
    old = cache.get()
    provider.value = K2
    new = cache.refresh(rejected=old)
    assert_key_is(new, K2)
    assert_key_is(cache.refresh(rejected=old), K2)  # a late 401 for the old key
    assert provider.fetches == 2


def test_refresh_without_rejected_always_fetches() -> None:
    cache, provider, _ = memory_cache(K1, ttl=60, min_refresh_interval=0)
    cache.get()
    cache.refresh()
    cache.refresh()
    assert provider.fetches == 3
    assert provider.rejected == []


def test_forced_fetches_respect_min_refresh_interval() -> None:
    cache, _provider, clock = memory_cache(K1, ttl=600, min_refresh_interval=10)
    key = cache.get()
    for _ in range(20):
        assert cache.refresh(rejected=key) == key  # the source still holds the key
    assert cache.stats.forced_fetches == 1
    clock.advance(9.9)
    cache.refresh(rejected=key)
    assert cache.stats.forced_fetches == 1
    clock.advance(0.2)
    cache.refresh(rejected=key)
    assert cache.stats.forced_fetches == 2


def test_a_ttl_fetch_does_not_start_the_refresh_interval() -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, min_refresh_interval=30, refresh_ahead=0)
    cache.get()
    clock.advance(61)
    key = cache.get()  # TTL fetch
    provider.value = K2
    assert_key_is(cache.refresh(rejected=key), K2)  # forced fetch allowed at once
    assert cache.stats.forced_fetches == 1


def test_a_forced_fetch_calls_refetch_with_the_rejected_key() -> None:
    order: list[str] = []

    class Recording(MemoryProvider):
        def fetch(self) -> ApiKey:
            order.append("fetch")
            return super().fetch()

        def refetch(self, rejected: ApiKey) -> ApiKey:
            order.append(f"refetch {rejected.masked}")
            return super().fetch()

    provider = Recording(K1)
    cache = KeyCache(provider, clock=FakeClock(), min_refresh_interval=0)
    key = cache.get()
    cache.refresh(rejected=key)
    cache.refresh()  # names no rejected key: a plain fetch
    assert order == ["fetch", f"refetch {key.masked}", "fetch"]


def test_an_async_forced_fetch_calls_arefetch() -> None:
    seen: list[ApiKey] = []

    class NativeAsync(MemoryProvider):
        async def afetch(self) -> ApiKey:
            return self.fetch()

        async def arefetch(self, rejected: ApiKey) -> ApiKey:
            seen.append(rejected)
            return self.fetch()

    provider = NativeAsync(K1)
    cache = KeyCache(provider, clock=FakeClock(), min_refresh_interval=0)

    async def scenario() -> ApiKey:
        key = await cache.aget()
        provider.value = K2
        return await cache.arefresh(rejected=key)

    assert_key_is(asyncio.run(scenario()), K2)
    assert seen == [ApiKey(K1)]


def test_forced_fetch_failure_raises_to_refresh_callers() -> None:
    cache, provider, _ = memory_cache(K1, ttl=60, min_refresh_interval=0)
    key = cache.get()
    provider.fail = True
    with pytest.raises(ProviderError):
        cache.refresh(rejected=key)
    # get() still serves the fresh key: a failed forced fetch does not drop it
    provider.fail = False
    assert cache.get() == key


# ---------------------------------------------------------------------------- refresh-ahead


def test_refresh_ahead_serves_the_current_key_while_one_caller_refreshes() -> None:
    cache, provider, clock = memory_cache(K1, ttl=100, refresh_ahead=20)
    cache.get()
    provider.value = K2
    provider.gate = threading.Event()
    provider.started.clear()
    clock.advance(85)  # inside the refresh-ahead window, not expired
    results = run_in_threads(cache.get, threads=16)
    assert {r for r in results if isinstance(r, ApiKey)} == {ApiKey(K1)}
    assert provider.started.wait(10)
    assert provider.fetches == 2  # one background refresh for 16 callers
    provider.gate.set()
    # Bounded wait for the background fetch to land.
    for _ in range(1000):
        if cache.peek() is not None and cache.peek().reveal() == K2:  # type: ignore[union-attr]
            break
        threading.Event().wait(0.01)
    assert_key_is(cache.get(), K2)
    assert provider.fetches == 2


def test_refresh_ahead_failure_keeps_serving_the_current_key() -> None:
    cache, provider, clock = memory_cache(K1, ttl=100, refresh_ahead=20)
    key = cache.get()
    provider.fail = True
    provider.started.clear()
    clock.advance(85)
    assert cache.get() == key
    assert provider.started.wait(10)
    for _ in range(1000):
        if cache.stats.errors:
            break
        threading.Event().wait(0.01)
    assert cache.get() == key


def test_async_refresh_ahead() -> None:
    cache, provider, clock = memory_cache(K1, ttl=100, refresh_ahead=20)

    async def scenario() -> tuple[ApiKey, ApiKey]:
        first = await cache.aget()
        provider.value = K2
        clock.advance(85)
        during = await cache.aget()
        for _ in range(1000):
            if cache.peek() != first:
                break
            await asyncio.sleep(0.01)
        return during, await cache.aget()

    during, after = asyncio.run(scenario())
    assert_key_is(during, K1)
    assert_key_is(after, K2)
    assert provider.fetches == 2


# ---------------------------------------------------------------------------- stale-if-error


def test_stale_key_is_served_within_max_stale_then_the_error_surfaces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, provider, clock = memory_cache(
        K1, ttl=60, refresh_ahead=0, max_stale=120, backoff_initial=1, backoff_max=8
    )
    key = cache.get()
    provider.fail = True
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="scaling_credentials"):
        assert cache.get() == key
    assert "failed" in caplog.text and key.masked in caplog.text
    assert_no_secret(K1, caplog.text)
    stats = cache.stats
    assert stats.errors == 1 and stats.stale_serves == 1
    # Within the backoff step no new backend attempt is made, however many reads.
    for _ in range(50):
        assert cache.get() == key
    assert provider.fetches == 2
    # Walk through the stale window in 1 s steps: attempts stay bounded by the backoff.
    for _ in range(115):
        clock.advance(1)
        assert cache.get() == key
    assert provider.fetches <= 2 + 20
    clock.advance(10)  # past expiry + max_stale
    with pytest.raises(ProviderError):
        cache.get()


def test_a_fresh_key_served_after_a_failed_fetch_is_no_stale_serve() -> None:
    # refresh() joins a refresh-ahead fetch that fails: the key it gets has not expired,
    # so no stale serve is counted or published.
    cache, provider, clock = memory_cache(K1, ttl=100, refresh_ahead=20)
    events: list[CacheEvent] = []
    cache.subscribe(events.append)
    key = cache.get()
    provider.gate = threading.Event()
    provider.started.clear()
    provider.fail = True
    clock.advance(85)  # in the refresh-ahead window
    assert cache.get() == key  # starts the background refresh
    assert provider.started.wait(10)
    flight = cache._flight
    assert flight is not None

    async def scenario() -> ApiKey:
        refreshing = asyncio.ensure_future(cache.arefresh())
        for _ in range(1000):  # until it waits for the refresh in flight
            if flight.async_waiters:
                break
            await asyncio.sleep(0)
        assert flight.async_waiters
        provider.gate.set()  # type: ignore[union-attr]
        return await asyncio.wait_for(refreshing, 10)

    assert asyncio.run(scenario()) == key
    assert cache.stats.errors == 1
    assert cache.stats.stale_serves == 0
    assert "stale_served" not in [e.kind for e in events]


def test_recovery_after_the_backend_returns() -> None:
    cache, provider, clock = memory_cache(
        K1, ttl=60, refresh_ahead=0, backoff_initial=2, backoff_max=2
    )
    key = cache.get()
    provider.fail = True
    clock.advance(61)
    assert cache.get() == key
    provider.fail = False
    provider.value = K2
    clock.advance(2.01)  # one backoff step
    assert_key_is(cache.get(), K2)
    assert cache.stats.consecutive_failures == 0


def test_no_key_ever_fetched_raises_the_typed_error_at_once() -> None:
    cache, provider, _ = memory_cache(None)
    with pytest.raises(SecretNotFoundError):
        cache.get()
    # During the backoff step the same error comes back without a backend call.
    with pytest.raises(SecretNotFoundError):
        cache.get()
    assert provider.fetches == 1


def test_backoff_is_exponential_and_capped() -> None:
    cache, provider, clock = memory_cache(None, backoff_initial=1, backoff_max=16)
    attempts_at: list[float] = []
    start = clock()
    for _ in range(1200):  # 120 s in 0.1 s steps
        before = provider.fetches
        with pytest.raises(SecretNotFoundError):
            cache.get()
        if provider.fetches != before:
            attempts_at.append(clock() - start)
        clock.advance(0.1)
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert 7 <= len(attempts_at) <= 30
    assert max(gaps) <= 16.2
    assert gaps[-1] >= 7.9  # reached the capped region (16 * [0.5, 1])
    assert gaps[0] <= 1.2


def test_non_library_exceptions_are_wrapped() -> None:
    cache, provider, _ = memory_cache(K1)
    provider.fail = OSError("disk on fire")
    with pytest.raises(ProviderError) as info:
        cache.get()
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.provider == "memory:memory"


def test_a_provider_returning_a_str_is_an_error() -> None:
    class Wrong(MemoryProvider):
        def fetch(self) -> ApiKey:
            return K1  # type: ignore[return-value]

    cache = KeyCache(Wrong(K1), clock=FakeClock())
    with pytest.raises(ProviderError, match="not an ApiKey"):
        cache.get()


# ---------------------------------------------------------------------------- timeouts and async


def test_a_hung_backend_times_out_with_a_clear_error() -> None:
    cache, provider, _ = memory_cache(K1, fetch_timeout=0.2)
    provider.gate = threading.Event()
    try:
        with pytest.raises(ProviderTimeoutError, match="fetch_timeout"):
            cache.get()
    finally:
        provider.gate.set()


def test_a_hung_backend_serves_the_stale_key() -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=0, fetch_timeout=0.2)
    key = cache.get()
    clock.advance(61)
    provider.gate = threading.Event()
    try:
        assert cache.get() == key
        assert cache.get() == key  # in backoff now: no wait at all
    finally:
        provider.gate.set()


class FirstFetchHangs(MemoryProvider):
    """The first fetch reads the source, then hangs until ``release`` is set (a response
    stuck in transit); the flight it runs in is recorded."""

    def __init__(self, value: str, cache_of: list[KeyCache]) -> None:
        super().__init__(value)
        self.release = threading.Event()
        self.flights: list[object] = []
        self.cache_of = cache_of

    def fetch(self) -> ApiKey:
        key = super().fetch()
        if self.fetches == 1:
            self.flights.append(self.cache_of[0]._flight)
            assert self.release.wait(10)
            if self.fail:
                raise ProviderError("memory: failed late", provider="memory")
        return key


def test_a_late_result_never_replaces_the_key_of_a_later_fetch() -> None:
    cache_of: list[KeyCache] = []
    provider = FirstFetchHangs(K1, cache_of)
    clock = FakeClock()
    cache = KeyCache(
        provider, jitter=0, fetch_timeout=0.2, backoff_initial=1, backoff_max=1, clock=clock
    )
    cache_of.append(cache)
    changes: list[str | None] = []
    cache.subscribe(lambda e: changes.append(e.key) if e.kind == "key_changed" else None)
    with pytest.raises(ProviderTimeoutError):
        cache.get()  # the first fetch read K1 and hangs: abandoned
    provider.value = K2  # rotated meanwhile
    clock.advance(1)  # past the backoff step
    assert_key_is(cache.get(), K2)
    provider.release.set()  # the abandoned fetch ends now, with what it read long ago
    (abandoned,) = provider.flights
    assert abandoned.done.wait(10)  # type: ignore[attr-defined]
    assert cache.peek() == ApiKey(K2)
    assert_key_is(cache.get(), K2)
    assert changes == []


def test_a_late_result_is_used_when_nothing_newer_came() -> None:
    cache_of: list[KeyCache] = []
    provider = FirstFetchHangs(K1, cache_of)
    cache = KeyCache(provider, jitter=0, fetch_timeout=0.2, clock=FakeClock())
    cache_of.append(cache)
    with pytest.raises(ProviderTimeoutError):
        cache.get()
    provider.release.set()
    (abandoned,) = provider.flights
    assert abandoned.done.wait(10)  # type: ignore[attr-defined]
    assert_key_is(cache.get(), K1)  # in backoff, yet the late key is served
    assert provider.fetches == 1


def test_a_fetch_given_up_then_failing_is_one_failure_in_stats_and_events() -> None:
    cache_of: list[KeyCache] = []
    provider = FirstFetchHangs(K1, cache_of)
    cache = KeyCache(provider, jitter=0, fetch_timeout=0.2, clock=FakeClock())
    cache_of.append(cache)
    failures: list[str | None] = []
    cache.subscribe(lambda e: failures.append(e.error) if e.kind == "fetch_failed" else None)
    with pytest.raises(ProviderTimeoutError):
        cache.get()
    provider.fail = True  # it ends late, and fails
    provider.release.set()
    (abandoned,) = provider.flights
    assert abandoned.done.wait(10)  # type: ignore[attr-defined]
    assert cache.stats.errors == 1
    assert failures == ["ProviderTimeoutError"]


class LockProbe(logging.Handler):
    """A log handler that notes, for each record, whether the cache's lock was held while
    the record was emitted (a handler that reads the cache, or pages someone through a
    client using it, would deadlock there)."""

    def __init__(self, cache: KeyCache) -> None:
        super().__init__(logging.DEBUG)
        self.cache = cache
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        lock = self.cache._lock
        if lock.acquire(blocking=False):
            lock.release()
        else:
            self.held.append(record.getMessage())


@pytest.mark.parametrize("noticed_by", ["the waiter", "the next read"])
def test_no_record_is_emitted_under_the_cache_lock_when_a_fetch_is_given_up(
    noticed_by: str,
) -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=10, fetch_timeout=0.2)
    key = cache.get()
    provider.gate = threading.Event()
    probe = LockProbe(cache)
    cache_logger = logging.getLogger("scaling_credentials.cache")
    cache_logger.addHandler(probe)
    try:
        if noticed_by == "the waiter":
            clock.advance(61)
            assert cache.get() == key  # waits fetch_timeout, gives up, serves the stale key
        else:
            clock.advance(55)
            assert cache.get() == key  # starts a background refresh that hangs
            flight = cache._flight
            assert flight is not None
            assert not flight.done.wait(0.3)  # past its deadline (real time)
            assert cache._refresh(None) == (key, "skipped-backoff")  # notices, gives it up
    finally:
        cache_logger.removeHandler(probe)
        provider.gate.set()
    assert cache.stats.errors == 1
    assert probe.held == []


def test_a_cancelled_waiter_does_not_break_the_fetch_for_others() -> None:
    cache, provider, _ = memory_cache(K1)
    provider.gate = threading.Event()

    async def scenario() -> list[ApiKey]:
        victim = asyncio.ensure_future(cache.aget())
        others = [asyncio.ensure_future(cache.aget()) for _ in range(10)]
        await asyncio.sleep(0)
        assert provider.started.wait(10)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        provider.gate.set()  # type: ignore[union-attr]
        return await asyncio.gather(*others)

    keys = asyncio.run(scenario())
    assert set(keys) == {ApiKey(K1)}
    assert provider.fetches == 1


def test_a_failing_fetch_wakes_every_waiter_with_the_error() -> None:
    cache, provider, _ = memory_cache(K1)
    provider.gate = threading.Event()
    provider.fail = True

    async def scenario() -> list[BaseException | ApiKey]:
        tasks = [asyncio.ensure_future(cache.aget()) for _ in range(20)]
        await asyncio.sleep(0)
        assert provider.started.wait(10)
        provider.gate.set()  # type: ignore[union-attr]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, ProviderError) for o in outcomes)
    assert provider.fetches == 1


def test_aget_does_not_block_the_event_loop() -> None:
    cache, provider, _ = memory_cache(K1)
    provider.delay = 0.1

    async def scenario() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await cache.aget()
        stop.set()
        await task
        return ticks

    assert asyncio.run(scenario()) > 5


def test_native_async_provider_is_used_by_aget() -> None:
    class Native(MemoryProvider):
        async_calls = 0

        async def afetch(self) -> ApiKey:
            type(self).async_calls += 1
            await asyncio.sleep(0)
            return ApiKey(K2)

    provider = Native(K1)
    cache = KeyCache(provider, clock=FakeClock())
    assert_key_is(asyncio.run(cache.aget()), K2)
    assert Native.async_calls == 1 and provider.fetches == 0


def test_sync_get_inside_the_loop_of_an_async_fetch_does_not_deadlock() -> None:
    class Native(MemoryProvider):
        async def afetch(self) -> ApiKey:
            await asyncio.sleep(0.05)
            return ApiKey(K1)

    provider = Native(K1)
    cache = KeyCache(provider, clock=FakeClock(), fetch_timeout=5)

    async def scenario() -> ApiKey:
        task = asyncio.ensure_future(cache.aget())
        await asyncio.sleep(0)
        key = cache.get()  # a sync call made from async code, on the loop thread
        await task
        return key

    assert_key_is(asyncio.run(asyncio.wait_for(scenario(), 10)), K1)


@pytest.mark.parametrize("rotated", [True, False])
def test_sync_refresh_inside_the_loop_of_an_async_fetch_makes_one_forced_fetch(
    rotated: bool,
) -> None:
    # A sync client's 401 handled on the loop thread while that loop's own task fetches:
    # the refresh cannot wait for that task, so it makes its own forced fetch (through
    # refetch), once, whatever it returns.
    class Native(MemoryProvider):
        async def afetch(self) -> ApiKey:
            await asyncio.Event().wait()  # never ends while the loop is blocked
            raise AssertionError("unreachable")

    provider = Native(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=60, jitter=0, refresh_ahead=0, fetch_timeout=5, clock=clock)
    k1 = cache.get()
    clock.advance(61)
    if rotated:
        provider.value = K2

    async def scenario() -> tuple[ApiKey, str]:
        reading = asyncio.ensure_future(cache.aget())  # the task's TTL fetch
        await asyncio.sleep(0)
        assert cache._flight is not None and cache._flight.task is not None
        fresh, outcome = cache._refresh(k1)  # a sync call made from async code
        reading.cancel()
        return fresh, outcome

    fresh, outcome = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert_key_is(fresh, K2 if rotated else K1)
    assert outcome == "fetched"
    assert provider.fetches == 2  # the first use, then one for the refresh
    assert provider.rejected == [ApiKey(K1)]


@pytest.mark.parametrize("fails", [False, True])
def test_the_forced_fetch_a_sync_refresh_makes_on_the_loop_counts_as_the_keys_one(
    fails: bool,
) -> None:
    # The forced fetch made beside the loop's own fetch is that key's forced fetch: when
    # it returns the same key (or fails), another rejection of the key waits for
    # min_refresh_interval instead of forcing a second fetch at once.
    class Native(MemoryProvider):
        async def afetch(self) -> ApiKey:
            await asyncio.Event().wait()  # never ends while the loop is blocked
            raise AssertionError("unreachable")

    provider = Native(K1)
    clock = FakeClock()
    cache = KeyCache(
        provider,
        ttl=60,
        jitter=0,
        refresh_ahead=0,
        fetch_timeout=5,
        min_refresh_interval=30,
        backoff_initial=30,
        max_stale=300,
        clock=clock,
    )
    k1 = cache.get()
    clock.advance(61)
    if fails:
        provider.fail = True

    async def scenario() -> None:
        reading = asyncio.ensure_future(cache.aget())  # the task's TTL fetch
        await asyncio.sleep(0)
        assert cache._flight is not None and cache._flight.task is not None
        if fails:
            with pytest.raises(ProviderError):
                cache._refresh(k1)  # a sync call made from async code
        else:
            cache._refresh(k1)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ProviderError):
            await reading

    asyncio.run(asyncio.wait_for(scenario(), 20))
    fetches = provider.fetches
    assert cache.refresh(k1) == k1
    assert provider.fetches == fetches


def test_a_fetch_that_cannot_start_fails_at_once_instead_of_hanging_every_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The process is out of threads (a container's pids limit): the fetch never runs.
    # It is a failed fetch, not one in flight that every later caller waits for until
    # fetch_timeout.
    import scaling_credentials._cache as cache_module

    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=0, fetch_timeout=30)
    key = cache.get()
    clock.advance(61)

    def no_thread(target: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(cache_module, "start_thread", no_thread)
    assert cache.get() == key  # stale, at once
    assert cache._flight is None
    assert cache.stats.errors == 1 and cache.stats.consecutive_failures == 1
    monkeypatch.undo()
    provider.value = K2
    clock.advance(2)  # past the backoff step
    assert_key_is(cache.get(), K2)


# ---------------------------------------------------------------------------- fork and hygiene


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_cache_warmed_before_fork_works_in_the_child() -> None:
    cache, provider, clock = memory_cache(K1, ttl=60, refresh_ahead=0)
    cache.get()
    provider.gate = threading.Event()
    clock.advance(61)
    # A fetch in flight in the parent when the fork happens: the child must not wait on it.
    threading.Thread(target=cache.get, daemon=True).start()
    assert provider.started.wait(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            provider.gate.set()
            provider.value = K2
            code = 0 if cache.get().reveal() == K2 else 3
        finally:
            os._exit(code)
    provider.gate.set()
    assert wait_child(pid) == 0


def test_stats_and_repr_hold_no_secret() -> None:
    cache, _, _ = memory_cache(K1)
    cache.get()
    assert_no_secret(K1, repr(cache), repr(cache.stats), str(cache.stats))
