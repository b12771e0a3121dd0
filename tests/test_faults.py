"""Backend faults under real httpx clients and FakeScalingAPI over sockets: the key source
down, throttling, slow, hung, and asyncio cancellation around a shared fetch.

The source is a MemoryProvider wrapped in a FaultyProvider (scaling_credentials.testing)
that records every backend attempt on the cache's FakeClock, so backoff steps are counted
exactly; no test sleeps for a TTL. Real time appears only where it is the point: a hung
backend bounded by ``fetch_timeout`` (joined with generous timeouts).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from scaling_credentials import (
    ApiKey,
    KeyCache,
    Provider,
    ProviderError,
    ProviderTimeoutError,
    ScalingAuth,
)
from scaling_credentials.testing import FakeClock, FakeScalingAPI, FaultyProvider, MemoryProvider
from scaling_credentials.testing.provider_suite import assert_no_secret

PATH = "/oncall/schedules"
STEP = 0.125  # exact in binary floating point: the fake clock does not drift


@dataclass
class Rig:
    api: FakeScalingAPI
    key: str
    memory: MemoryProvider
    faulty: FaultyProvider
    cache: KeyCache
    clock: FakeClock
    client: httpx.Client

    def get(self) -> int:
        return self.client.get(PATH).status_code

    def walk(self, seconds: float, step: float = STEP) -> list[int]:
        """Advance the clock in steps, one request per step; the statuses."""
        statuses = []
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            statuses.append(self.get())
        return statuses


@pytest.fixture
def rig(api: FakeScalingAPI) -> Iterator[Rig]:
    key = api.issue_key()
    memory = MemoryProvider(key)
    clock = FakeClock()
    faulty = FaultyProvider(memory, clock=clock)
    cache = KeyCache(
        faulty,
        ttl=60,
        jitter=0,
        refresh_ahead=0,
        max_stale=120,
        min_refresh_interval=0,
        backoff_initial=1,
        backoff_max=8,
        fetch_timeout=30,
        clock=clock,
        rng=random.Random(11),
    )
    with httpx.Client(base_url=api.url, auth=ScalingAuth(cache), timeout=30) as client:
        rig = Rig(api, key, memory, faulty, cache, clock, client)
        assert rig.get() == 200  # warm
        yield rig
    if faulty.hang is not None:
        faulty.hang.set()


def step_of(failure: int, initial: float = 1.0, cap: float = 8.0) -> float:
    """The backoff step after the n-th consecutive failure, before jitter."""
    return min(cap, initial * 2 ** (failure - 1))


# ---------------------------------------------------------------------------- backend down


def test_backend_down_requests_succeed_on_the_cached_key_within_max_stale(rig: Rig) -> None:
    rig.faulty.fail = True
    rig.clock.advance(60)  # the key expires now
    statuses = rig.walk(119)  # to 1 s before expiry + max_stale
    assert set(statuses) == {200}
    assert rig.cache.stats.stale_serves == len(statuses)  # each one served the cached key
    # Backend attempts stayed bounded by the backoff (1, 2, 4, then every 4..8 s).
    assert rig.faulty.calls - 1 <= 3 + 119 / 4 + 1
    # Past expiry + max_stale the error surfaces, typed, naming the source.
    rig.clock.advance(1 + STEP)
    with pytest.raises(ProviderError) as info:
        rig.get()
    assert "memory:memory" in str(info.value)
    assert_no_secret(rig.key, str(info.value), repr(info.value))


def test_backoff_is_exponential_with_jitter_and_a_cap(rig: Rig) -> None:
    rig.faulty.fail = True
    rig.clock.advance(60)
    assert set(rig.walk(100)) == {200}
    failures = rig.faulty.attempts[1:]  # the first attempt was the warm-up
    gaps = [b - a for a, b in itertools.pairwise(failures)]
    assert len(gaps) >= 8
    for n, gap in enumerate(gaps, start=1):
        # The n-th failure schedules the next attempt step * U(0.5, 1) later; the clock
        # walks in STEP increments, so the attempt lands within one STEP after that.
        assert 0.5 * step_of(n) <= gap < step_of(n) + STEP, (n, gap)
    capped = gaps[3:]
    assert max(capped) < 8 + STEP  # the cap holds
    assert len(set(capped)) > 1, "no jitter: every capped step was the same"
    # Never more than one attempt per backoff step (single flight, one process).
    assert rig.faulty.max_in_flight == 1


def test_recovery_within_one_backoff_step_after_the_backend_returns(rig: Rig) -> None:
    rig.faulty.fail = True
    rig.clock.advance(60)
    assert set(rig.walk(40)) == {200}  # deep into the capped region
    calls = rig.faulty.calls
    # The backend comes back, holding a new key (the old one still valid).
    rig.memory.value = new = rig.api.rotate()
    rig.faulty.fail = False
    back_at = rig.clock()
    rig.api.clear_requests()
    for _ in range(round(8 / STEP) + 1):  # at most one capped step
        rig.clock.advance(STEP)
        assert rig.get() == 200
        if rig.faulty.calls > calls:
            break
    assert rig.faulty.calls == calls + 1, "no backend attempt within one backoff step"
    assert rig.clock() - back_at <= 8 + STEP
    assert rig.cache.stats.consecutive_failures == 0
    assert rig.cache.peek() == ApiKey(new)
    assert rig.api.requests[-1].key == ApiKey(new).masked


def test_throttling_backend_is_absorbed(rig: Rig) -> None:
    # Every other call is throttled, in a seeded pattern; requests never notice.
    throttled = FaultyProvider(rig.memory, failure_rate=0.5, rng=random.Random(5), clock=rig.clock)
    cache = KeyCache(
        throttled,
        ttl=10,
        jitter=0,
        refresh_ahead=0,
        max_stale=60,
        backoff_initial=1,
        backoff_max=4,
        clock=rig.clock,
        rng=random.Random(3),
    )
    assert _warm(cache)
    with httpx.Client(base_url=rig.api.url, auth=ScalingAuth(cache)) as client:
        statuses = []
        for _ in range(round(120 / STEP)):
            rig.clock.advance(STEP)
            statuses.append(client.get(PATH).status_code)
    assert set(statuses) == {200}
    # Seeded (rng 5): 7 of the 18 backend attempts are throttled, warm-up included.
    assert (throttled.calls, throttled.failures) == (18, 7)
    attempts, end = throttled.attempts, rig.clock()
    stale = 0
    for index in throttled.failed_attempts:
        following = attempts[index + 1] if index + 1 < len(attempts) else end + STEP
        assert following - attempts[index] >= 0.5  # a backoff pause follows
        # Every request from a throttled attempt up to the next attempt gets the cached key.
        stale += round((following - attempts[index]) / STEP)
    assert cache.stats.stale_serves == stale == 81
    # Each other request was served from the cache or made a good fetch (the warm-up's
    # is not a request).
    good_fetches = throttled.calls - throttled.failures - 1
    assert cache.stats.hits + cache.stats.stale_serves + good_fetches == len(statuses)


def _warm(cache: KeyCache) -> bool:
    """Warm a cache whose source may fail the first attempts (bounded)."""
    for _ in range(50):
        try:
            cache.get()
            return True
        except ProviderError:
            cache.invalidate()
    return False


# ---------------------------------------------------------------------------- slow and hung


def test_slow_backend_during_refresh_ahead_never_holds_a_request(api: FakeScalingAPI) -> None:
    key = api.issue_key()
    memory = MemoryProvider(key)
    clock = FakeClock()
    faulty = FaultyProvider(memory, clock=clock)
    cache = KeyCache(faulty, ttl=100, jitter=0, refresh_ahead=20, clock=clock)
    faulty.hang = threading.Event()
    try:
        with httpx.Client(base_url=api.url, auth=ScalingAuth(cache)) as client:
            faulty.hang.set()
            assert client.get(PATH).status_code == 200
            faulty.hang.clear()
            faulty.started.clear()
            memory.value = new = api.rotate()
            clock.advance(85)  # in the refresh-ahead window
            # The background refresh hangs; 8 threads x 5 requests are served at once.
            statuses: list[int] = []
            lock = threading.Lock()

            def worker() -> None:
                with httpx.Client(base_url=api.url, auth=ScalingAuth(cache)) as own:
                    for _ in range(5):
                        status = own.get(PATH).status_code
                        with lock:
                            statuses.append(status)

            threads = [threading.Thread(target=worker) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert not any(t.is_alive() for t in threads)
            assert statuses == [200] * 40
            assert faulty.started.wait(10)
            assert faulty.calls == 2  # one background refresh for all of them
            faulty.hang.set()  # the slow backend answers
            for _ in range(1000):  # bounded wait for the background fetch to land
                if cache.peek() == ApiKey(new):
                    break
                threading.Event().wait(0.01)
            assert client.get(PATH).status_code == 200
            assert api.requests[-1].key == ApiKey(new).masked
    finally:
        faulty.hang.set()


def run_bounded(target: object, timeout: float) -> object:
    """Run ``target()`` in a thread; fail if it does not return within ``timeout``."""
    outcome: list[object] = []

    def runner() -> None:
        try:
            outcome.append(target())  # type: ignore[operator]
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still blocked after {timeout} s"
    return outcome[0]


def test_hung_backend_with_no_key_fails_after_fetch_timeout(api: FakeScalingAPI) -> None:
    faulty = FaultyProvider(MemoryProvider(api.issue_key()))
    faulty.hang = threading.Event()  # never set during the request
    cache = KeyCache(faulty, fetch_timeout=0.3)
    try:
        with httpx.Client(base_url=api.url, auth=ScalingAuth(cache)) as client:
            # Bounded: a hang would keep this thread alive past the join timeout.
            outcome = run_bounded(lambda: client.get(PATH), timeout=0.3 + 20)
            assert isinstance(outcome, ProviderTimeoutError), repr(outcome)
            message = str(outcome)
            assert "fetch_timeout" in message and "0.3 s" in message
            assert "memory:memory" in message and "hung or unreachable" in message
            # In backoff now: the next request fails at once with the same error, and
            # makes no new backend attempt.
            again = run_bounded(lambda: client.get(PATH), timeout=20)
            assert isinstance(again, ProviderTimeoutError)
            assert faulty.calls == 1
        assert api.requests == []  # nothing was sent without a key
    finally:
        faulty.hang.set()


def test_hung_backend_serves_the_stale_key_after_fetch_timeout(rig: Rig) -> None:
    cache = KeyCache(
        rig.faulty, ttl=60, jitter=0, refresh_ahead=0, fetch_timeout=0.3, clock=rig.clock
    )
    with httpx.Client(base_url=rig.api.url, auth=ScalingAuth(cache)) as client:
        assert client.get(PATH).status_code == 200
        rig.faulty.hang = threading.Event()
        rig.clock.advance(61)
        outcome = run_bounded(lambda: client.get(PATH).status_code, timeout=0.3 + 20)
        assert outcome == 200
        for _ in range(20):  # in backoff: served at once, no new attempt
            assert client.get(PATH).status_code == 200
        # The request that waited out fetch_timeout, then the 20 in backoff: all stale.
        assert cache.stats.errors == 1 and cache.stats.stale_serves == 1 + 20
        calls = rig.faulty.calls
        # The hung fetch finally answers: its late result is used, with no new attempt.
        rig.faulty.hang.set()
        for _ in range(1000):
            if cache.stats.consecutive_failures == 0:
                break
            threading.Event().wait(0.01)
        assert client.get(PATH).status_code == 200
        assert rig.faulty.calls == calls


def test_a_fetch_timeout_is_logged_as_a_warning(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    cache = KeyCache(
        rig.faulty, ttl=60, jitter=0, refresh_ahead=0, fetch_timeout=0.3, clock=rig.clock
    )
    cache.get()
    rig.faulty.hang = threading.Event()
    rig.clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="scaling_credentials"):
        assert run_bounded(cache.get, timeout=0.3 + 20) == ApiKey(rig.key)
    rig.faulty.hang.set()
    assert "fetch_timeout" in caplog.text


def test_hung_backend_under_async_client(api: FakeScalingAPI) -> None:
    faulty = FaultyProvider(MemoryProvider(api.issue_key()))
    faulty.hang = threading.Event()
    cache = KeyCache(faulty, fetch_timeout=0.3)

    async def scenario() -> list[BaseException | httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, auth=ScalingAuth(cache)) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(client.get(PATH) for _ in range(50)), return_exceptions=True),
                timeout=20,
            )

    try:
        outcomes = asyncio.run(scenario())
    finally:
        faulty.hang.set()
    assert all(isinstance(o, ProviderTimeoutError) for o in outcomes), outcomes[:3]
    assert faulty.calls == 1


# ---------------------------------------------------------------------------- async outage


def test_outage_under_200_async_requests(rig: Rig) -> None:
    rig.faulty.fail = True
    rig.clock.advance(60)

    async def scenario() -> list[int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=rig.api.url, auth=ScalingAuth(rig.cache)) as client:
            for _ in range(4):  # four waves of 50, the clock moving between them
                rig.clock.advance(5)
                wave = await asyncio.gather(*(client.get(PATH) for _ in range(50)))
                statuses.extend(r.status_code for r in wave)
        return statuses

    statuses = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert statuses == [200] * 200
    # One attempt at expiry, then at most one per wave (each wave is past a 1..4 s step).
    assert 2 <= rig.faulty.calls <= 1 + 1 + 4
    assert rig.faulty.max_in_flight == 1


# ---------------------------------------------------------------------------- revoked in an outage


def test_revoked_key_while_the_source_fails_returns_401_once_per_request_then_recovers(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The emergency case: the key is revoked at once while the source is failing. Each
    request is answered 401 after one send (no retry loop, no extra backend attempt
    within the backoff step); one backoff step after the source is back, requests work."""
    rig.memory.value = new = rig.api.rotate()
    rig.api.revoke(rig.key)
    rig.faulty.fail = True
    rig.api.clear_requests()
    calls = rig.faulty.calls
    with caplog.at_level(logging.WARNING, logger="scaling_credentials"):
        statuses = [rig.get() for _ in range(10)]
    assert statuses == [401] * 10
    assert len(rig.api.requests) == 10  # each request sent once: nothing to retry with
    assert rig.faulty.calls == calls + 1  # one forced attempt, then backoff
    assert_no_secret(rig.key, caplog.text)
    assert_no_secret(new, caplog.text)
    rig.faulty.fail = False
    rig.clock.advance(1)  # one backoff step (the first: 1 s before jitter)
    assert rig.get() == 200
    assert rig.cache.peek() == ApiKey(new)


def test_the_401_warning_does_not_blame_the_source_when_it_was_not_asked(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.memory.value = rig.api.rotate()
    rig.api.revoke(rig.key)
    rig.faulty.fail = True
    assert rig.get() == 401  # the forced fetch fails
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scaling_credentials"):
        assert rig.get() == 401  # in backoff: the source is not asked
    assert "still holds it" not in caplog.text


# ---------------------------------------------------------------------------- async cancellation


class GatedAsyncProvider(Provider):
    """A native async provider whose fetch waits on an asyncio.Event (a slow backend)."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0
        self.fail = False
        self.cancelled = False
        self.gate: asyncio.Event | None = None
        self.started: asyncio.Event | None = None

    def describe(self) -> str:
        return "gated-async"

    def fetch(self) -> ApiKey:  # pragma: no cover - the async path is under test
        raise AssertionError("the sync fetch was not expected")

    async def afetch(self) -> ApiKey:
        assert self.gate is not None and self.started is not None
        self.calls += 1
        self.started.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise ProviderError("gated-async is failing (injected)", provider="gated-async")
        return ApiKey(self.value, source="gated-async")


def test_cancelled_requests_do_not_cancel_the_shared_fetch(api: FakeScalingAPI) -> None:
    provider = GatedAsyncProvider(api.issue_key())
    cache = KeyCache(provider, fetch_timeout=30)

    async def scenario() -> list[int]:
        provider.gate, provider.started = asyncio.Event(), asyncio.Event()
        async with httpx.AsyncClient(base_url=api.url, auth=ScalingAuth(cache)) as client:
            leader = asyncio.ensure_future(client.get(PATH))  # starts the fetch
            await asyncio.wait_for(provider.started.wait(), 10)
            others = [asyncio.ensure_future(client.get(PATH)) for _ in range(20)]
            # A request given up by its caller (asyncio timeout) while waiting ...
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.get(PATH), 0.05)
            # ... and the request that started the fetch, cancelled.
            leader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leader
            provider.gate.set()
            responses = await asyncio.wait_for(asyncio.gather(*others), 20)
            return [r.status_code for r in responses]

    assert asyncio.run(scenario()) == [200] * 20
    assert provider.calls == 1
    assert not provider.cancelled
    assert len(api.requests) == 20  # the cancelled ones never went out


def test_a_failing_shared_fetch_wakes_every_waiting_request(api: FakeScalingAPI) -> None:
    provider = GatedAsyncProvider(api.issue_key())
    provider.fail = True
    cache = KeyCache(provider, fetch_timeout=30)

    async def scenario() -> list[BaseException | httpx.Response]:
        provider.gate, provider.started = asyncio.Event(), asyncio.Event()
        async with httpx.AsyncClient(base_url=api.url, auth=ScalingAuth(cache)) as client:
            pending = [asyncio.ensure_future(client.get(PATH)) for _ in range(50)]
            await asyncio.wait_for(provider.started.wait(), 10)
            provider.gate.set()
            return await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 50
    assert all(isinstance(o, ProviderError) for o in outcomes), outcomes[:3]
    assert provider.calls == 1
    assert api.requests == []


def test_async_hung_native_fetch_times_out_and_its_late_result_is_used(
    api: FakeScalingAPI,
) -> None:
    provider = GatedAsyncProvider(api.issue_key())
    cache = KeyCache(provider, fetch_timeout=0.3)

    async def scenario() -> tuple[BaseException | None, int]:
        provider.gate, provider.started = asyncio.Event(), asyncio.Event()
        async with httpx.AsyncClient(base_url=api.url, auth=ScalingAuth(cache)) as client:
            error: BaseException | None = None
            try:
                await asyncio.wait_for(client.get(PATH), 20)
            except ProviderTimeoutError as exc:
                error = exc
            provider.gate.set()  # the backend answers late
            for _ in range(1000):
                if cache.peek() is not None:
                    break
                await asyncio.sleep(0.01)
            late = await client.get(PATH)
            return error, late.status_code

    error, status = asyncio.run(scenario())
    assert isinstance(error, ProviderTimeoutError) and "fetch_timeout" in str(error)
    assert status == 200
    assert provider.calls == 1
