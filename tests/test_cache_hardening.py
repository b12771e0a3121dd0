"""KeyCache under pressure it must not pass on: each caller gets its own exception (no
traceback that grows with every call, no frame pinned), a forked child draws its own
randomness, a caller's event loop shutting down never fails a shared fetch; and the
events a cache publishes for metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import sys
import threading
import traceback
import tracemalloc

import pytest

from scaling_credentials import (
    ApiKey,
    CacheEvent,
    KeyCache,
    ProviderError,
    SecretNotFoundError,
)
from scaling_credentials.testing import FakeClock, MemoryProvider, run_in_threads, wait_child
from scaling_credentials.testing.provider_suite import assert_key_is

K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"


# ---------------------------------------------------------------- one exception per caller


def test_each_caller_gets_its_own_exception_chained_to_the_kept_cause() -> None:
    provider = MemoryProvider(K1)
    provider.fail = OSError("disk on fire")
    cache = KeyCache(provider, backoff_initial=100, backoff_max=100, clock=FakeClock())
    errors: list[ProviderError] = []
    for _ in range(3):
        with pytest.raises(ProviderError) as info:
            cache.get()
        errors.append(info.value)
    assert len({id(error) for error in errors}) == 3
    assert provider.fetches == 1  # the others were answered from the backoff
    causes = {id(error.__cause__) for error in errors}
    assert len(causes) == 1 and isinstance(errors[0].__cause__, OSError)
    assert errors[0].__cause__.__traceback__ is None  # kept without its frames


class Throttled(ProviderError):
    """A third-party provider's error whose ``__init__`` does not take the message."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"throttled; retry after {retry_after:g} s", provider="vendor")
        self.retry_after = retry_after


class NoSuchSecret(SecretNotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no secret named {name}", provider="vendor")
        self.name = name


@pytest.mark.parametrize("raised", [Throttled(5), NoSuchSecret("api-key")])
def test_each_caller_gets_a_true_copy_of_a_custom_provider_error(raised: ProviderError) -> None:
    # The copy keeps the type (callers catch it), the message and the attributes, and is
    # built without calling the class's own __init__ with arguments it does not take.
    provider = MemoryProvider(K1)
    provider.fail = raised
    cache = KeyCache(provider, backoff_initial=100, backoff_max=100, clock=FakeClock())
    errors: list[ProviderError] = []
    for _ in range(3):
        with pytest.raises(type(raised)) as info:
            cache.get()
        errors.append(info.value)
    assert len({id(error) for error in errors}) == 3
    for error in errors:
        assert type(error) is type(raised)
        assert str(error) == str(raised)
        assert vars(error) == vars(raised)
    assert provider.fetches == 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note is Python 3.11+")
def test_a_note_added_by_one_caller_is_not_seen_by_the_next() -> None:
    provider = MemoryProvider(K1)
    failure = ProviderError("memory: down", provider="memory")
    failure.add_note("region eu-west-1")
    provider.fail = failure
    cache = KeyCache(provider, backoff_initial=100, backoff_max=100, clock=FakeClock())
    for request in range(3):
        with pytest.raises(ProviderError) as info:
            cache.get()
        assert info.value.__notes__ == ["region eu-west-1"]
        info.value.add_note(f"request {request}")


def _exceptions_in_chain(error: BaseException) -> list[BaseException]:
    """Every exception reachable from ``error`` through ``__cause__`` and ``__context__``."""
    seen: dict[int, BaseException] = {}
    todo: list[BaseException | None] = [error]
    while todo:
        link = todo.pop()
        if link is None or id(link) in seen:
            continue
        seen[id(link)] = link
        todo += [link.__cause__, link.__context__]
    return list(seen.values())


def test_no_traceback_is_kept_anywhere_in_the_chain() -> None:
    # A provider that raises while handling two errors: its error's cause (the HTTP
    # failure) and its context (the body that did not parse) are different exceptions,
    # and each holds frames (with their locals: a request, a token) until cleared.
    class Parsing(MemoryProvider):
        def fetch(self) -> ApiKey:
            try:
                raise ConnectionError("backend answered 500")
            except ConnectionError as failure:
                try:
                    raise ValueError("the error body is not JSON")
                except ValueError:
                    raise ProviderError("memory: bad answer", provider="memory") from failure

    cache = KeyCache(Parsing(K1), backoff_initial=100, backoff_max=100, clock=FakeClock())
    with pytest.raises(ProviderError) as info:
        cache.get()
    chain = _exceptions_in_chain(info.value)
    assert {type(e) for e in chain} == {ProviderError, ConnectionError, ValueError}
    assert [e for e in chain if e is not info.value and e.__traceback__ is not None] == []
    kept = cache._error
    assert kept is not None
    assert [e for e in _exceptions_in_chain(kept) if e.__traceback__ is not None] == []


def test_20000_failing_gets_leave_memory_flat_and_tracebacks_short() -> None:
    provider = MemoryProvider(None)  # nothing in the source: SecretNotFoundError
    cache = KeyCache(provider, backoff_initial=3600, backoff_max=3600, clock=FakeClock())
    last: BaseException | None = None

    def fail_many(count: int) -> BaseException | None:
        error: BaseException | None = None
        for _ in range(count):
            try:
                cache.get()
            except ProviderError as exc:
                error = exc
        return error

    fail_many(100)  # warm up
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        last = fail_many(20_000)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 512 * 1024, f"memory grew by {grown} bytes"
    assert last is not None
    assert len(traceback.extract_tb(last.__traceback__)) < 10
    assert provider.fetches == 1


def test_threads_raising_at_once_get_distinct_exceptions() -> None:
    provider = MemoryProvider(None)
    cache = KeyCache(provider, backoff_initial=3600, backoff_max=3600, clock=FakeClock())
    with pytest.raises(ProviderError):
        cache.get()

    def fail_200_times() -> list[BaseException]:
        seen: list[BaseException] = []
        for _ in range(200):
            try:
                cache.get()
            except ProviderError as exc:
                seen.append(exc)
        return seen

    runs = run_in_threads(fail_200_times, threads=8)
    seen = [error for run in runs if isinstance(run, list) for error in run]
    assert len(seen) == 1600 and len({id(e) for e in seen}) == 1600
    assert max(len(traceback.extract_tb(e.__traceback__)) for e in seen) < 10


# ---------------------------------------------------------------- fork


def _lifetimes_in_children(cache: KeyCache, clock: FakeClock, children: int) -> list[str]:
    """Each forked child moves the clock past expiry, fetches, and reports the new
    entry's lifetime."""
    answers: list[str] = []
    for _ in range(children):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                clock.advance(1000)
                cache.get()
                entry = cache._state.entry
                assert entry is not None
                os.write(write_end, f"{entry.expires_at - entry.fetched_at:.9f}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        assert wait_child(pid) == 0  # its short answer waits in the pipe
        with os.fdopen(read_end) as reader:
            answers.append(reader.read())
    return answers


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_draw_their_own_lifetimes() -> None:
    clock = FakeClock()
    cache = KeyCache(MemoryProvider(K1), ttl=100, refresh_ahead=0, clock=clock)
    cache.get()  # warmed before the fork, as a pre-fork server does
    lifetimes = _lifetimes_in_children(cache, clock, 4)
    assert all(lifetimes) and len(set(lifetimes)) == 4  # not in step


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_an_injected_rng_is_left_alone_in_the_children() -> None:
    clock = FakeClock()
    cache = KeyCache(
        MemoryProvider(K1), ttl=100, refresh_ahead=0, clock=clock, rng=random.Random(3)
    )
    cache.get()
    lifetimes = _lifetimes_in_children(cache, clock, 3)
    assert all(lifetimes) and len(set(lifetimes)) == 1  # the caller asked for one sequence


# ---------------------------------------------------------------- a caller's loop going away


class BlockedAsync(MemoryProvider):
    """A native async provider whose ``afetch`` waits for an event nobody sets; its
    sync ``fetch`` answers at once."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.async_started = threading.Event()

    async def afetch(self) -> ApiKey:
        self.async_started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_short_asyncio_run_that_times_out_does_not_fail_the_fetch_for_anyone() -> None:
    provider = BlockedAsync(K1)
    cache = KeyCache(provider, fetch_timeout=30)

    async def impatient() -> ApiKey:
        return await asyncio.wait_for(cache.aget(), 0.05)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(impatient())  # its shutdown cancels the fetch task it started
    stats = cache.stats
    assert stats.errors == 0 and stats.consecutive_failures == 0  # no backend failure
    assert_key_is(cache.get(), K1)  # no backoff, no wait: the next caller fetches


def test_a_thread_waiting_on_a_fetch_whose_loop_shuts_down_fetches_itself() -> None:
    provider = BlockedAsync(K1)
    cache = KeyCache(provider, fetch_timeout=30)
    got: list[ApiKey] = []

    def waiter() -> None:
        assert provider.async_started.wait(10)
        got.append(cache.get())  # joins the task's fetch

    thread = threading.Thread(target=waiter)
    thread.start()

    async def impatient() -> None:
        try:
            await asyncio.wait_for(cache.aget(), 0.3)
        except asyncio.TimeoutError:
            pass

    asyncio.run(impatient())
    thread.join(timeout=10)  # far below fetch_timeout: it did not wait for the dead fetch
    assert not thread.is_alive()
    assert got == [ApiKey(K1)]
    assert cache.stats.errors == 0


@pytest.mark.parametrize("collect_often", [False, True])
def test_a_loop_stopped_without_cancelling_its_tasks_is_noticed(collect_often: bool) -> None:
    provider = BlockedAsync(K1)
    cache = KeyCache(provider, fetch_timeout=30)
    loop = asyncio.new_event_loop()
    threshold = gc.get_threshold()
    if collect_often:
        # The loop holds its tasks weakly: once nothing else refers to the abandoned fetch
        # task, the garbage collector closes it (GeneratorExit inside the fetch).
        gc.set_threshold(100)
    try:
        with pytest.raises(asyncio.TimeoutError):
            loop.run_until_complete(asyncio.wait_for(cache.aget(), 0.05))
        # The loop is not running: its task cannot finish. A thread does not wait on it.
        result: list[ApiKey] = []
        thread = threading.Thread(target=lambda: result.append(cache.get()))
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive() and result == [ApiKey(K1)]
        gc.collect()
        assert cache.stats.errors == 0
    finally:
        gc.set_threshold(*threshold)
        loop.close()


# ---------------------------------------------------------------- events


def test_events_through_a_rotation_and_an_outage() -> None:
    provider = MemoryProvider(K1)
    clock = FakeClock()
    cache = KeyCache(provider, ttl=60, jitter=0, refresh_ahead=0, max_stale=100, clock=clock)
    events: list[CacheEvent] = []
    unsubscribe = cache.subscribe(events.append)
    k1 = cache.get()
    provider.value = K2
    cache.refresh(rejected=k1)
    k2 = cache.get()
    cache.refresh(rejected=k2)  # the source still holds it: its forced fetch
    cache.refresh(rejected=k2)  # within min_refresh_interval: skipped
    provider.fail = True
    clock.advance(61)
    assert cache.get() == k2  # the fetch fails; the stale key is served
    assert cache.get() == k2  # in backoff: stale again, no fetch
    kinds = [(e.kind, e.trigger) for e in events]
    assert kinds == [
        ("fetched", "ttl"),
        ("rejected", None),
        ("fetched", "forced"),
        ("key_changed", "forced"),
        ("rejected", None),
        ("fetched", "forced"),
        ("rejected", None),
        ("refresh_skipped", "interval"),
        ("fetch_failed", "ttl"),
        ("stale_served", None),
        ("stale_served", None),
    ]
    assert all(e.source == "memory:memory" for e in events)
    assert all(e.key is None or e.key.startswith("scl_live_****") for e in events)
    assert events[0].duration is not None and events[0].duration >= 0
    assert events[8].error == "ProviderError" and events[8].key is None
    unsubscribe()
    unsubscribe()  # twice is harmless
    cache.get()
    assert len(events) == 11


def test_a_raising_subscriber_is_reported_once_and_never_breaks_a_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = KeyCache(MemoryProvider(K1), ttl=60, jitter=0, clock=FakeClock())
    seen: list[str] = []

    def broken(event: CacheEvent) -> None:
        raise RuntimeError("metrics backend down")

    cache.subscribe(broken)
    cache.subscribe(lambda e: seen.append(e.kind))
    with caplog.at_level(logging.WARNING, logger="scaling_credentials.cache"):
        key = cache.get()
        cache.refresh(rejected=key)
    assert_key_is(key, K1)
    assert seen == ["fetched", "rejected", "fetched"]  # the others still get every event
    reports = [r for r in caplog.records if "subscriber" in r.getMessage()]
    assert len(reports) == 1 and "RuntimeError" in reports[0].getMessage()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_subscriber_raising_a_base_exception_does_not_strand_the_waiters() -> None:
    # A callback that leaves with SystemExit (sys.exit() to restart on a key change,
    # say) ends the fetch thread it ran on: the callers waiting for that fetch still get
    # its outcome at once, not after fetch_timeout.
    provider = MemoryProvider(K1)
    provider.gate = threading.Event()
    cache = KeyCache(provider, ttl=60, jitter=0, fetch_timeout=30, clock=FakeClock())

    fetch_threads: list[threading.Thread] = []

    def exits(event: CacheEvent) -> None:
        if event.kind == "fetched":
            fetch_threads.append(threading.current_thread())
            raise SystemExit(3)

    cache.subscribe(exits)
    got: list[ApiKey] = []
    reader = threading.Thread(target=lambda: got.append(cache.get()), daemon=True)
    reader.start()
    assert provider.started.wait(10)
    flight = cache._flight
    assert flight is not None
    provider.gate.set()
    assert flight.done.wait(10), "the waiters were not woken"
    reader.join(timeout=10)
    assert got == [ApiKey(K1)]
    for thread in fetch_threads:  # it ends with the SystemExit, within this test
        thread.join(timeout=10)


def test_subscribers_are_called_outside_the_lock() -> None:
    cache = KeyCache(MemoryProvider(K1), ttl=60, jitter=0, clock=FakeClock())
    observed: list[object] = []
    # Reading the cache from a callback would deadlock if events came under the lock.
    cache.subscribe(lambda e: observed.append((cache.stats.fetches, cache.peek())))
    thread = threading.Thread(target=cache.get)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a subscriber deadlocked on the cache's lock"
    assert observed and observed[0][0] == 1


# ---------------------------------------------------------------- fetch threads


def test_fetch_threads_never_exit_so_a_fork_never_catches_one_exiting() -> None:
    # A thread exiting while the process forks can leave OpenSSL's process-wide clean-up
    # lock held in the child (its first TLS context then hangs): a pre-fork server's
    # master warms the cache and forks right after. Fetch threads wait for the next
    # fetch instead of exiting, and are reused.
    from scaling_credentials._flight import FETCH_THREAD, quiesce

    seen: list[threading.Thread] = []

    class Recording(MemoryProvider):
        def fetch(self) -> ApiKey:
            seen.append(threading.current_thread())
            return super().fetch()

    def fetch_threads() -> int:
        return sum(thread.name == FETCH_THREAD for thread in threading.enumerate())

    cache = KeyCache(
        Recording(K1), ttl=60, jitter=0, refresh_ahead=0, min_refresh_interval=0, clock=FakeClock()
    )
    cache.get()
    assert quiesce(10)
    assert seen[0].name == FETCH_THREAD and seen[0].is_alive()  # idle, not exiting
    pool = fetch_threads()
    for _ in range(5):
        cache.refresh()  # forced fetches, one after the other
        assert quiesce(10)
    assert len(seen) == 6
    assert all(thread.is_alive() for thread in seen)  # none exited
    assert fetch_threads() == pool  # idle threads were reused, none started


def test_a_fetch_thread_keeps_nothing_alive_between_fetches() -> None:
    import weakref

    from scaling_credentials._flight import quiesce

    cache = KeyCache(MemoryProvider(K1), ttl=60, clock=FakeClock())
    cache.get()
    assert quiesce(10)
    gone = weakref.ref(cache)
    del cache
    gc.collect()
    assert gone() is None
