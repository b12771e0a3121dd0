"""KeyCache and rejected keys: every rejected key earns one forced fetch; a stuck key is
held to min_refresh_interval; the cache never steps back to a key the API rejected; a
source's stamp shows a change within a second; stuck keys warn once a minute. A fake
clock for every interval, real threads where callers race."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Hashable

import pytest

from scaling_credentials import ApiKey, KeyCache, ProviderError
from scaling_credentials._flight import quiesce
from scaling_credentials.testing import FakeClock, MemoryProvider, memory_cache
from scaling_credentials.testing.provider_suite import assert_key_is

K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"
K3 = "scl_live_thirdkey0123456789mnop"


def settle(cache: KeyCache) -> None:
    """Wait for a background fetch to finish (bounded)."""
    flight = cache._flight
    if flight is not None:
        assert flight.done.wait(10), "a background fetch did not finish"


# ---------------------------------------------------------------- one forced fetch per key


def test_each_new_rejected_key_is_refetched_at_once_whatever_the_interval() -> None:
    cache, provider, clock = memory_cache(K1, ttl=3600)  # default min_refresh_interval: 5 s
    k1 = cache.get()
    for value in (K2, K3):
        provider.value = value
        rejected = cache.peek()
        assert rejected is not None
        fresh = cache.refresh(rejected=rejected)  # no clock movement at all
        assert_key_is(fresh, value)
        clock.advance(0.01)
    assert cache.stats.forced_fetches == 2
    assert provider.rejected == [ApiKey(K1), ApiKey(K2)]
    assert_key_is(k1, K1)


def test_a_rejected_key_earns_its_forced_fetch_with_nothing_held() -> None:
    # invalidate() between the request and its 401: the refresh still goes past the
    # provider's own cache (refetch), once, and counts as forced.
    cache, provider, _ = memory_cache(K1, ttl=3600)
    k1 = cache.get()
    cache.invalidate()
    provider.value = K2
    assert_key_is(cache.refresh(rejected=k1), K2)
    assert provider.rejected == [ApiKey(K1)]
    assert cache.stats.forced_fetches == 1 and provider.fetches == 2


def test_a_stuck_key_is_held_to_the_interval_after_its_forced_fetch() -> None:
    cache, provider, clock = memory_cache(K1, ttl=3600, min_refresh_interval=5)
    key = cache.get()
    assert cache.refresh(rejected=key) == key  # forced: the source still holds it
    assert cache._refresh(key) == (key, "skipped-interval")
    assert cache.stats.forced_fetches == 1
    clock.advance(5)
    provider.value = K2
    assert_key_is(cache.refresh(rejected=key), K2)
    assert cache.stats.forced_fetches == 2


def test_a_refresh_that_names_no_key_is_held_to_the_interval() -> None:
    cache, provider, clock = memory_cache(K1, ttl=3600, min_refresh_interval=5)
    cache.get()
    assert_key_is(cache.refresh(), K1)  # forced: the first one goes to the source
    provider.value = K2
    assert cache._refresh(None) == (cache.peek(), "skipped-interval")
    assert_key_is(cache.refresh(), K1)  # still within the interval: not asked
    assert cache.stats.forced_fetches == 1 and provider.fetches == 2
    clock.advance(5)
    assert_key_is(cache.refresh(), K2)
    assert cache.stats.forced_fetches == 2
    # A key the API rejects is refetched at once, inside the interval all the same.
    provider.value = K3
    rejected = cache.peek()
    assert rejected is not None
    assert_key_is(cache.refresh(rejected=rejected), K3)
    assert cache.stats.forced_fetches == 3


def test_a_revoked_key_with_no_new_key_costs_one_forced_fetch_per_interval() -> None:
    cache, _, clock = memory_cache(K1, ttl=3600, min_refresh_interval=5)
    key = cache.get()
    for _ in range(100):  # 100 s of rejections, 10 a second
        for _ in range(10):
            cache.refresh(rejected=key)
        clock.advance(1)
    assert cache.stats.forced_fetches == 20  # 1 at once, then one per 5 s


def test_a_key_whose_forced_fetch_failed_waits_only_for_the_backoff() -> None:
    cache, provider, clock = memory_cache(K1, ttl=3600, min_refresh_interval=60, backoff_initial=1)
    key = cache.get()
    provider.fail = True
    with pytest.raises(ProviderError):
        cache.refresh(rejected=key)  # its forced fetch, failed
    assert cache._refresh(key)[1] == "skipped-backoff"
    provider.fail = False
    provider.value = K2
    clock.advance(1)  # past the backoff step, far inside min_refresh_interval
    assert_key_is(cache.refresh(rejected=key), K2)
    assert cache.stats.forced_fetches == 2


def test_many_threads_rejecting_one_key_share_one_forced_fetch() -> None:
    cache, provider, _ = memory_cache(K1, ttl=3600)
    key = cache.get()
    provider.value = K2
    provider.gate = threading.Event()
    barrier = threading.Barrier(16)
    results: list[ApiKey] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=10)
        fresh = cache.refresh(rejected=key)
        with lock:
            results.append(fresh)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    assert provider.started.wait(10)
    provider.gate.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert results == [ApiKey(K2)] * 16
    assert cache.stats.forced_fetches == 1


def test_a_rejection_during_a_ttl_fetch_still_earns_its_forced_fetch() -> None:
    # The TTL fetch in flight when the rejection comes returns the rejected key (it read
    # the source before the rotation): the rejection then gets a forced fetch of its own.
    class RotatesAfterReading(MemoryProvider):
        def fetch(self) -> ApiKey:
            key = super().fetch()
            if key.reveal() == K1 and self.fetches == 2:
                assert refresh_waiting.wait(10)
                self.value = K2  # rotated just after this read
            return key

    refresh_waiting = threading.Event()
    provider = RotatesAfterReading(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=60, jitter=0, refresh_ahead=0, clock=clock)
    key = cache.get()
    clock.advance(61)
    reader = threading.Thread(target=cache.get)
    reader.start()
    assert provider.started.wait(10)
    refreshed: list[ApiKey] = []

    def refresh() -> None:
        refresh_waiting.set()
        refreshed.append(cache.refresh(rejected=key))

    refresher = threading.Thread(target=refresh)
    refresher.start()
    reader.join(timeout=30)
    refresher.join(timeout=30)
    assert not reader.is_alive() and not refresher.is_alive()
    assert refreshed == [ApiKey(K2)]
    assert provider.fetches == 3 and cache.stats.forced_fetches == 1


# ---------------------------------------------------------------- never step back


def test_a_fetch_returning_a_rejected_key_keeps_the_newer_key_and_asks_again_soon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A caching extension behind the source: after the forced fetch found K2, its cache
    # still serves the rejected K1 to the next TTL fetch.
    cache, provider, clock = memory_cache(
        K1, ttl=60, refresh_ahead=0, backoff_initial=1, backoff_max=8
    )
    k1 = cache.get()
    provider.value = K2
    assert_key_is(cache.refresh(rejected=k1), K2)
    provider.value = K1  # the extension's stale cache
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="scaling_credentials.cache"):
        assert_key_is(cache.get(), K2)  # the TTL fetch brought K1 back: K2 stays
        settle(cache)
        for _ in range(5):  # re-reads after a short, doubling delay; K1 every time
            clock.advance(8)
            assert_key_is(cache.get(), K2)
            settle(cache)
    kept = [r for r in caplog.records if "rejected before" in r.getMessage()]
    assert len(kept) == 1  # logged once
    assert "keeping scl_live_****wxyz" in kept[0].getMessage()
    assert cache.stats.fetches == 1 + 1 + 1 + 5
    provider.value = K2  # the extension caught up
    clock.advance(8)
    assert_key_is(cache.get(), K2)
    settle(cache)
    assert cache.is_rejected(k1) and not cache.is_rejected(cache.get())


def test_a_kept_key_is_not_served_past_its_expiry_while_its_reread_waits() -> None:
    # Short TTL, long backoff: the re-read of a source back on a rejected key is due
    # after the kept key's expiry. At expiry the source is read as usual: the hot path
    # never serves past it (nor past max_stale).
    cache, provider, clock = memory_cache(
        K1, ttl=10, refresh_ahead=0, max_stale=0, backoff_initial=60, backoff_max=60
    )
    k1 = cache.get()
    provider.value = K2
    assert_key_is(cache.refresh(rejected=k1), K2)
    provider.value = K1  # back on the rejected key
    clock.advance(10)
    assert_key_is(cache.get(), K2)  # kept; re-read in 30 to 60 s
    provider.value = K3
    before = provider.fetches
    clock.advance(11)  # past the kept key's expiry (ttl 10) and max_stale (0)
    assert_key_is(cache.get(), K3)
    assert provider.fetches == before + 1


def test_when_every_key_is_rejected_the_source_is_believed() -> None:
    cache, provider, _ = memory_cache(K1, ttl=3600)
    k1 = cache.get()
    provider.value = K2
    k2 = cache.refresh(rejected=k1)
    provider.value = K1  # the source went back to a rejected key
    fresh, outcome = cache._refresh(k2)
    assert fresh == k1
    assert outcome == "rejected"  # the auth does not resend with a key known to fail


def test_invalidate_keeps_what_it_knows_of_rejected_keys() -> None:
    cache, _, _ = memory_cache(K1, ttl=3600)
    k1 = cache.get()
    cache.refresh(rejected=k1)
    cache.invalidate()
    assert cache.is_rejected(k1)


def test_rejected_keys_are_remembered_by_fingerprint_and_bounded() -> None:
    cache, _, _ = memory_cache(K1, ttl=3600, min_refresh_interval=0)
    held = cache.get()
    for index in range(200):
        cache.refresh(rejected=ApiKey(f"scl_live_oldkey{index:06d}abcdefgh"))
    remembered = cache._state.rejected
    assert len(remembered) == 64
    assert all(len(fp) == 32 for fp in remembered)  # fingerprints, never values
    assert not any("scl_live_" in fp for fp in remembered)
    assert cache.get() == held


# ---------------------------------------------------------------- the source's stamp


class StampedProvider(MemoryProvider):
    """A memory provider that can tell a change cheaply, like a file. ``settle()`` waits
    until every fetch it served has been recorded, logged and published (its thread
    ended)."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.stamps = 0

    def stamp(self) -> Hashable | None:
        self.stamps += 1
        return self.value

    def settle(self) -> None:
        assert quiesce(10), "a background fetch did not finish"


def test_a_changed_stamp_is_refetched_within_the_check_interval_with_no_rejection() -> None:
    provider = StampedProvider(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=3600, jitter=0, clock=clock)
    cache.get()
    for _ in range(1000):
        cache.get()
    assert provider.stamps == 1  # taken before the fetch; not on the read path yet
    provider.value = K2
    clock.advance(0.5)
    assert_key_is(cache.get(), K1)  # within the interval: nothing asked
    clock.advance(0.5)
    assert_key_is(cache.get(), K1)  # the check sees the change, refetches behind
    settle(cache)
    assert_key_is(cache.get(), K2)
    assert cache.stats.forced_fetches == 0 and cache.stats.fetches == 2
    for _ in range(1000):
        cache.get()
    assert provider.stamps == 3  # one check a second at most: the clock stood still


def test_a_provider_without_stamps_is_never_checked_on_the_read_path() -> None:
    cache, _, _ = memory_cache(K1, ttl=3600)
    cache.get()
    entry = cache._state.entry
    assert entry is not None
    assert entry.check_at == float("inf") and entry.until == entry.refresh_at


def test_a_stamp_that_raises_is_ignored() -> None:
    class Broken(MemoryProvider):
        def stamp(self) -> Hashable | None:
            raise OSError("gone")

    provider = Broken(K1)
    cache = KeyCache(provider, ttl=3600, jitter=0, clock=FakeClock())
    assert_key_is(cache.get(), K1)


@pytest.mark.parametrize("then", ["raises", "cannot tell"])
def test_a_stamp_that_stops_working_is_no_news(then: str) -> None:
    # A stamp is a hint: when the provider cannot give one (it raises, or returns None),
    # the TTL holds, and nothing is refetched for it.
    class Flaky(StampedProvider):
        broken = False

        def stamp(self) -> Hashable | None:
            if not self.broken:
                return super().stamp()
            if then == "raises":
                raise OSError("stale file handle")
            return None

    provider = Flaky(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=3600, jitter=0, clock=clock)
    cache.get()
    provider.broken = True
    for _ in range(5):
        clock.advance(1)
        assert_key_is(cache.get(), K1)
        provider.settle()
    assert provider.fetches == 1


def test_a_change_that_fails_to_read_is_retried_on_the_backoff_not_every_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The source changed to something that cannot be read (a file being replaced, a bad
    # value): the change is fetched at once, and then retried on the backoff's steps,
    # not at every check_interval with a warning each time.
    provider = StampedProvider(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=3600, jitter=0, backoff_initial=4, backoff_max=60, clock=clock)
    key = cache.get()
    provider.value = K2
    provider.fail = True
    with caplog.at_level(logging.WARNING, logger="scaling_credentials.cache"):
        for _ in range(30):  # 30 s, a check a second
            clock.advance(1)
            assert cache.get() == key  # the held key is fresh: served throughout
            provider.settle()
    attempts = provider.fetches - 1
    # Backoff steps of at least 2, 4, 8, 16 s after the first attempt at t=1 s.
    assert 2 <= attempts <= 4
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == attempts
    provider.fail = False  # readable again: picked up within a backoff step (<= 32 s)
    for _ in range(40):
        clock.advance(1)
        cache.get()
        provider.settle()
        if cache.get().reveal() == K2:
            break
    assert_key_is(cache.get(), K2)


def test_a_source_back_on_a_rejected_key_is_reread_on_the_backoff_not_every_check() -> None:
    # A file source written back to a key the API rejected (a stale replica): the change
    # is read once and the held key kept; the next re-read waits a backoff step, and the
    # unchanged stamp is no news meanwhile.
    provider = StampedProvider(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=3600, jitter=0, backoff_initial=8, backoff_max=60, clock=clock)
    k1 = cache.get()
    provider.value = K2
    assert_key_is(cache.refresh(rejected=k1), K2)
    provider.value = K1  # back on the rejected key
    before = provider.fetches
    for _ in range(3):  # within the first backoff step (at least 4 s)
        clock.advance(1)
        assert_key_is(cache.get(), K2)
        provider.settle()
    assert provider.fetches - before == 1  # the change, read once
    provider.value = K3  # a real change: read at once
    clock.advance(1)
    cache.get()
    provider.settle()
    assert_key_is(cache.get(), K3)


def test_async_reads_check_the_stamp_too() -> None:
    provider = StampedProvider(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=3600, jitter=0, clock=clock)

    async def scenario() -> ApiKey:
        await cache.aget()
        provider.value = K2
        clock.advance(1)
        await cache.aget()  # sees the change, refetches behind
        settle(cache)
        return await cache.aget()

    assert_key_is(asyncio.run(scenario()), K2)


# ---------------------------------------------------------------- stuck-key warnings


def test_a_stuck_key_warns_once_a_minute_with_the_count_and_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, _, clock = memory_cache(K1, ttl=3600)
    key = cache.get()
    with caplog.at_level(logging.DEBUG, logger="scaling_credentials.cache"):
        for _ in range(30):
            cache.refresh(rejected=key)
        clock.advance(60)
        cache.refresh(rejected=key)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "memory:memory still holds it" in warnings[0]
    assert "(29 more rejections of this key since the last warning)" in warnings[1]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "again" in r.getMessage()]
    assert len(debug) == 29


def test_the_environment_warning_says_a_running_process_never_sees_a_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from scaling_credentials import EnvProvider

    cache = KeyCache(EnvProvider("K", environ={"K": K1}), ttl=3600, clock=FakeClock())
    key = cache.get()
    with caplog.at_level(logging.WARNING, logger="scaling_credentials.cache"):
        cache.refresh(rejected=key)
    assert "a running process never sees a changed environment variable" in caplog.text


def test_an_explanation_that_raises_never_breaks_a_refresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unexplained(MemoryProvider):
        def explain_stuck(self, rejected: ApiKey) -> str:
            raise RuntimeError("bug in a third-party provider")

    cache = KeyCache(Unexplained(K1), ttl=3600, clock=FakeClock())
    key = cache.get()
    with caplog.at_level(logging.WARNING, logger="scaling_credentials.cache"):
        assert cache.refresh(rejected=key) == key
    assert "memory:memory still holds it" in caplog.text  # the default explanation
