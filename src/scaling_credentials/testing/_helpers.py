"""Small test doubles for code that uses scaling-credentials: a fake clock and an
in-memory provider with fault injection."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import ProviderError
from .._key import ApiKey
from .._provider import Provider

if TYPE_CHECKING:
    from .._cache import KeyCache

__all__ = ["FakeClock", "FaultyProvider", "MemoryCache", "MemoryProvider", "memory_cache"]


class FakeClock:
    """A monotonic clock for :class:`KeyCache` that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += seconds


class MemoryProvider(Provider):
    """A provider that serves a value held in memory, for tests.

    ``value`` is what the next fetch returns (set it to rotate). ``fail`` makes fetches
    raise (an exception instance, or ``True`` for a :class:`ProviderError`). ``gate``, when
    set to a :class:`threading.Event`, makes each fetch wait for it (bounded by
    ``gate_timeout``) so that tests can hold a fetch in flight. ``delay`` adds a real
    delay. ``fetches`` counts backend calls; ``rejected`` records the keys passed to
    :meth:`refetch` (which then fetches as usual).
    """

    def __init__(self, value: str | None = None, *, name: str = "memory") -> None:
        self.value = value
        self.name = name
        self.fail: BaseException | bool = False
        self.gate: threading.Event | None = None
        self.gate_timeout = 30.0
        self.delay = 0.0
        self.fetches = 0
        self.rejected: list[ApiKey] = []
        self.started = threading.Event()  # set when a fetch begins
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"memory:{self.name}"

    def fetch(self) -> ApiKey:
        with self._lock:
            self.fetches += 1
        self.started.set()
        if self.gate is not None:
            self.gate.wait(self.gate_timeout)
        if self.delay:
            time.sleep(self.delay)
        fail = self.fail
        if fail is True:
            raise ProviderError(
                f"{self.describe()} is failing (injected)", provider=self.describe()
            )
        if isinstance(fail, BaseException):
            raise fail
        if self.value is None:
            from .._errors import SecretNotFoundError

            raise SecretNotFoundError(f"{self.describe()} holds no key", provider=self.describe())
        return ApiKey(self.value, source=self.describe())

    def refetch(self, rejected: ApiKey) -> ApiKey:
        with self._lock:
            self.rejected.append(rejected)
        return self.fetch()


class FaultyProvider(Provider):
    """Wraps any provider and injects backend faults into its fetches, for resilience
    tests of code that uses a :class:`KeyCache` (outages, slow or hung backends,
    throttling, flaky networks).

    * ``fail``: every fetch raises this exception instance (``True``: a
      :class:`ProviderError` saying the failure was injected). ``False`` (default): off.
    * ``failure_rate``: the fraction of the remaining fetches that fail with a
      :class:`ProviderError`, drawn from ``rng`` (seed it for a reproducible run).
    * ``delay``: real seconds added to every fetch (a slow backend).
    * ``hang``: a :class:`threading.Event`; while it is unset, each fetch blocks on it
      (a hung backend), for at most ``hang_timeout`` seconds.

    ``calls`` counts backend attempts, ``failures`` the injected failures (and
    ``failed_attempts`` lists their indices in ``attempts``),
    ``max_in_flight`` the most attempts ever running at once (1 under a single-flight
    cache), and ``attempts`` holds the ``clock()`` reading at each attempt (pass the
    cache's fake clock to count attempts per backoff step). :meth:`describe` and
    :meth:`stamp` and :meth:`explain_stuck` are those of the wrapped provider, and a
    :meth:`refetch` goes through the same fault injection to the wrapped provider's.
    """

    def __init__(
        self,
        inner: Provider,
        *,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate!r}")
        self.inner = inner
        self.fail: BaseException | bool = False
        self.failure_rate = failure_rate
        self.delay = 0.0
        self.hang: threading.Event | None = None
        self.hang_timeout = 60.0
        self.calls = 0
        self.failures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: list[float] = []
        self.failed_attempts: list[int] = []
        self.started = threading.Event()  # set when an attempt begins
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.inner.describe()

    def fetch(self) -> ApiKey:
        return self._attempt(self.inner.fetch)

    def _attempt(self, call: Callable[[], ApiKey]) -> ApiKey:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            index = len(self.attempts)
            self.attempts.append(self._clock())
            unlucky = self.failure_rate > 0 and self._rng.random() < self.failure_rate
        try:
            self.started.set()
            hang = self.hang
            if hang is not None:
                hang.wait(self.hang_timeout)
            if self.delay:
                time.sleep(self.delay)
            fail = self.fail
            if fail is True or unlucky:
                with self._lock:
                    self.failures += 1
                    self.failed_attempts.append(index)
                raise ProviderError(
                    f"{self.describe()} is failing (injected)", provider=self.describe()
                )
            if isinstance(fail, BaseException):
                with self._lock:
                    self.failures += 1
                    self.failed_attempts.append(index)
                raise fail
            return call()
        finally:
            with self._lock:
                self.in_flight -= 1

    def refetch(self, rejected: ApiKey) -> ApiKey:
        return self._attempt(lambda: self.inner.refetch(rejected))

    def stamp(self) -> Hashable | None:
        return self.inner.stamp()

    def explain_stuck(self, rejected: ApiKey) -> str:
        return self.inner.explain_stuck(rejected)


class MemoryCache(NamedTuple):
    """What :func:`memory_cache` builds: the cache, its provider and its clock."""

    cache: KeyCache
    provider: MemoryProvider
    clock: FakeClock


def memory_cache(value: str | None, **options: Any) -> MemoryCache:
    """A :class:`KeyCache` over a :class:`MemoryProvider` holding ``value``, on a
    :class:`FakeClock`, with no jitter and a seeded generator unless ``options`` (any of
    ``KeyCache``'s keywords) say otherwise: a cache whose every decision a test can
    predict."""
    from .._cache import KeyCache

    provider = MemoryProvider(value)
    clock = FakeClock()
    options.setdefault("jitter", 0.0)
    options.setdefault("rng", random.Random(7))
    return MemoryCache(KeyCache(provider, clock=clock, **options), provider, clock)
