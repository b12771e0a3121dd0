"""KeyCache: a TTL cache for one API key, single-flight across threads and asyncio tasks.

How a key moves through the cache::

    fresh ──(refresh_ahead before expiry)──> refreshing in the background, still served
      │                                                      │
      └──(expiry)──> one fetch, every caller waits ──> fresh │ or, on failure,
                                                           stale within max_stale, with backoff

Design notes (why it is built this way):

* The hot path is one clock read and one comparison against an immutable snapshot, so a
  cached read costs well under a microsecond. The snapshot is derived from the entry in a
  ``cachetools.TLRUCache`` whose per-item time-to-use carries the jittered lifetime.
* Every backend call runs off the caller's stack: sync fetches in a short-lived daemon
  thread, async fetches as a task (or the same thread when the provider has no native
  ``afetch``). Callers wait for the shared result with a deadline, so a hung backend never
  holds a request longer than ``fetch_timeout``, and a cancelled waiter never cancels the
  fetch for the others.
* The lock is held only to read or swap state, never across I/O, so it is safe to take
  from the event loop.
"""

from __future__ import annotations

import logging
import os
import random as _random
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

import cachetools

if TYPE_CHECKING:
    # asyncio is imported where it is used: it costs ~15 ms at cold start (Lambda).
    import asyncio

from ._errors import (
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    ScalingCredentialsError,
)
from ._key import ApiKey
from ._provider import Provider

__all__ = ["CacheStats", "KeyCache", "default_ttl"]

logger = logging.getLogger("scaling_credentials.cache")

DEFAULT_TTL: Final = 300.0
_KEY: Final = "key"


def _seconds(value: float | timedelta, name: str, *, allow_zero: bool = True) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if seconds != seconds or seconds < 0 or (not allow_zero and seconds == 0):
        bound = "greater than 0" if not allow_zero else "0 or more"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


def default_ttl(environ: dict[str, str] | None = None) -> float:
    """The TTL used when none is passed: ``SCALING_API_KEY_TTL`` seconds, else 300."""
    raw = (os.environ if environ is None else environ).get("SCALING_API_KEY_TTL", "").strip()
    if not raw:
        return DEFAULT_TTL
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"SCALING_API_KEY_TTL must be a number of seconds, got {raw[:20]!r}"
        ) from None
    return _seconds(value, "SCALING_API_KEY_TTL", allow_zero=False)


class CacheStats(NamedTuple):
    """A snapshot of a :class:`KeyCache`'s counters.

    ``fetches`` counts backend calls started (TTL, refresh-ahead and forced), of which
    ``forced_fetches`` were forced and ``errors`` failed; ``hits`` counts reads served from
    the cache (approximate under heavy thread contention: it is a plain counter, kept off
    the lock on purpose); ``stale_serves`` counts reads served an expired key while the
    backend failed. ``last_fetch_at`` is the wall-clock time of the last successful fetch
    and ``last_fetch_duration`` how long it took, in seconds.
    """

    fetches: int
    forced_fetches: int
    hits: int
    errors: int
    stale_serves: int
    last_fetch_at: datetime | None
    last_fetch_duration: float | None
    consecutive_failures: int


class _Entry(NamedTuple):
    key: ApiKey
    fetched_at: float
    expires_at: float
    refresh_at: float


FlightKind = Literal["ttl", "refresh-ahead", "forced"]


class _Flight:
    """One backend fetch that any number of callers wait for."""

    __slots__ = (
        "abandoned",
        "async_waiters",
        "deadline",
        "done",
        "error",
        "finished",
        "key",
        "kind",
        "loop",
        "rejected",
        "started_at",
        "task",
    )

    def __init__(self, kind: FlightKind, started_at: float, timeout: float) -> None:
        self.kind = kind
        self.started_at = started_at  # cache clock
        self.deadline = time.monotonic() + timeout  # real time: timeouts are real
        self.done = threading.Event()
        self.finished = False
        self.abandoned = False
        self.key: ApiKey | None = None
        self.error: BaseException | None = None
        self.async_waiters: list[asyncio.Future[None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.rejected: ApiKey | None = None  # a forced fetch after this key was rejected


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


RefreshOutcome = Literal["fetched", "cached", "skipped-interval", "skipped-backoff"]
_Action = Literal["hit", "hit-start", "lead", "wait", "stale", "raise"]


class KeyCache:
    """Caches the key of ``provider`` for ``ttl`` seconds, with one backend call per expiry
    however many threads or tasks ask.

    Parameters (seconds as floats; :class:`~datetime.timedelta` accepted):

    * ``ttl``: lifetime of a fetched key; default ``SCALING_API_KEY_TTL`` or 300.
    * ``jitter``: each lifetime is ``ttl`` scaled by a random factor in ``[1 - jitter, 1]``
      so that a fleet started together does not refetch together. Default 0.1.
    * ``refresh_ahead``: within this many seconds of expiry, the first caller starts a
      background refresh while everyone is still served the current key. Default
      ``ttl / 10``; at most half of an entry's lifetime.
    * ``max_stale``: when a refetch fails, the last key is served for up to this long past
      its expiry (with a warning and backoff on the backend). Default 900.
    * ``min_refresh_interval``: at most one forced fetch per this interval. Default 5.
    * ``fetch_timeout``: how long (real time) a caller waits for a fetch. Default 30.
    * ``backoff_initial`` / ``backoff_max``: after a failed fetch, the next backend attempt
      waits ``backoff_initial * 2**(n-1)`` seconds, capped at ``backoff_max``, scaled by a
      random factor in ``[0.5, 1]``. Defaults 1 and 60.
    * ``clock``: a monotonic clock in seconds (inject a fake one in tests).
    * ``rng``: a :class:`random.Random` for jitter (seed it in tests).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        ttl: float | timedelta | None = None,
        jitter: float = 0.1,
        refresh_ahead: float | timedelta | None = None,
        max_stale: float | timedelta = 900.0,
        min_refresh_interval: float | timedelta = 5.0,
        fetch_timeout: float | timedelta = 30.0,
        backoff_initial: float | timedelta = 1.0,
        backoff_max: float | timedelta = 60.0,
        clock: Callable[[], float] = time.monotonic,
        rng: _random.Random | None = None,
    ) -> None:
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                f"KeyCache needs a scaling_credentials.Provider, got {type(provider).__name__}"
            )
        self._provider = provider
        self._ttl = default_ttl() if ttl is None else _seconds(ttl, "ttl", allow_zero=False)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        self._jitter = float(jitter)
        self._refresh_ahead = (
            self._ttl / 10 if refresh_ahead is None else _seconds(refresh_ahead, "refresh_ahead")
        )
        self._max_stale = _seconds(max_stale, "max_stale")
        self._min_refresh_interval = _seconds(min_refresh_interval, "min_refresh_interval")
        self._fetch_timeout = _seconds(fetch_timeout, "fetch_timeout", allow_zero=False)
        self._backoff_initial = _seconds(backoff_initial, "backoff_initial")
        self._backoff_max = _seconds(backoff_max, "backoff_max")
        if not callable(clock):
            raise ConfigurationError("clock must be a callable returning seconds")
        self._clock = clock
        self._rng = rng if rng is not None else _random.Random()

        self._lock = threading.Lock()
        self._store: cachetools.TLRUCache[str, _Entry] = cachetools.TLRUCache(
            maxsize=1, ttu=lambda _k, entry, _now: entry.expires_at, timer=clock
        )
        self._hot: _Entry | None = None  # read without the lock on the hot path
        self._entry: _Entry | None = None  # last good entry, kept past expiry for stale serves
        self._flight: _Flight | None = None
        self._last_forced_at: float | None = None
        self._failures = 0
        self._retry_at: float | None = None
        self._last_error: BaseException | None = None

        self._hits = 0
        self._fetches = 0
        self._forced_fetches = 0
        self._errors = 0
        self._stale_serves = 0
        self._last_fetch_at: datetime | None = None
        self._last_fetch_duration: float | None = None
        _caches.add(self)

    # ------------------------------------------------------------------ public API

    @property
    def provider(self) -> Provider:
        """The provider this cache reads from."""
        return self._provider

    @property
    def ttl(self) -> float:
        """The configured TTL in seconds (before jitter)."""
        return self._ttl

    def describe(self) -> str:
        """The provider's description (safe to log)."""
        return self._provider.describe()

    def __repr__(self) -> str:
        return f"<KeyCache {self.describe()} ttl={self._ttl}>"

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters (no secret in it)."""
        with self._lock:
            return CacheStats(
                fetches=self._fetches,
                forced_fetches=self._forced_fetches,
                hits=self._hits,
                errors=self._errors,
                stale_serves=self._stale_serves,
                last_fetch_at=self._last_fetch_at,
                last_fetch_duration=self._last_fetch_duration,
                consecutive_failures=self._failures,
            )

    def peek(self) -> ApiKey | None:
        """The key held now (fresh or not), without fetching; ``None`` when there is none."""
        entry = self._entry
        return entry.key if entry is not None else None

    def invalidate(self) -> None:
        """Forget the cached key (and the stale fallback); the next read fetches."""
        with self._lock:
            self._store.clear()
            self._hot = None
            self._entry = None
            self._failures = 0
            self._retry_at = None
            self._last_error = None

    def _fresh(self) -> ApiKey | None:
        """The key while fresh and outside the refresh-ahead window, else ``None``: the
        async auth's fast path, which saves an ``await`` per request."""
        hot = self._hot
        if hot is not None and self._clock() < hot.refresh_at:
            self._hits += 1
            return hot.key
        return None

    def get(self) -> ApiKey:
        """The cached key while fresh; one fetch at first use and after expiry, however many
        threads ask at once."""
        # _fresh() inlined: this is every sync request's path.
        hot = self._hot
        if hot is not None and self._clock() < hot.refresh_at:
            self._hits += 1
            return hot.key
        with self._lock:
            action, key, flight = self._plan_get(self._clock())
        if action == "hit":
            assert key is not None
            return key
        if action == "hit-start":
            assert key is not None and flight is not None
            self._start(flight, prefer_async=False)
            return key
        if action == "stale":
            assert key is not None
            return key
        if action == "raise":
            raise self._backoff_error()
        assert flight is not None
        if action == "lead":
            self._start(flight, prefer_async=False)
        return self._wait_sync(flight, stale_ok=True)

    async def aget(self) -> ApiKey:
        """Like :meth:`get`, for asyncio: never blocks the event loop."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        with self._lock:
            action, key, flight = self._plan_get(self._clock())
        if action in ("hit", "stale"):
            assert key is not None
            return key
        if action == "hit-start":
            assert key is not None and flight is not None
            self._start(flight, prefer_async=True)
            return key
        if action == "raise":
            raise self._backoff_error()
        assert flight is not None
        if action == "lead":
            self._start(flight, prefer_async=True)
        return await self._wait_async(flight, stale_ok=True)

    def refresh(self, rejected: ApiKey | None = None) -> ApiKey:
        """Fetch anew, bypassing the TTL.

        If ``rejected`` is given and the cache already holds a different key, that key is
        returned with no fetch. Concurrent refreshes share one fetch; forced fetches happen
        at most once per ``min_refresh_interval`` and not while the backend is in backoff
        (then the current key is returned, as long as it is within its stale window).
        """
        return self._refresh(rejected)[0]

    async def arefresh(self, rejected: ApiKey | None = None) -> ApiKey:
        """Like :meth:`refresh`, for asyncio."""
        return (await self._arefresh(rejected))[0]

    def _refresh(self, rejected: ApiKey | None) -> tuple[ApiKey, RefreshOutcome]:
        """:meth:`refresh`, also saying whether the source was asked (for the auth's logs)."""
        with self._lock:
            action, key, flight, outcome = self._plan_refresh(self._clock(), rejected)
        if action in ("hit", "stale"):
            assert key is not None
            return key, outcome
        if action == "raise":
            raise self._backoff_error()
        assert flight is not None
        if action == "lead":
            if flight.kind == "forced":
                flight.rejected = rejected
            self._start(flight, prefer_async=False)
        return self._wait_sync(flight, stale_ok=flight.kind != "forced"), outcome

    async def _arefresh(self, rejected: ApiKey | None) -> tuple[ApiKey, RefreshOutcome]:
        with self._lock:
            action, key, flight, outcome = self._plan_refresh(self._clock(), rejected)
        if action in ("hit", "stale"):
            assert key is not None
            return key, outcome
        if action == "raise":
            raise self._backoff_error()
        assert flight is not None
        if action == "lead":
            if flight.kind == "forced":
                flight.rejected = rejected
            self._start(flight, prefer_async=True)
        return await self._wait_async(flight, stale_ok=flight.kind != "forced"), outcome

    # ------------------------------------------------------------------ decisions
    # Both return (action, key, flight); "lead" means the caller starts the new flight,
    # then waits for it like everyone else.

    def _plan_get(self, now: float) -> tuple[_Action, ApiKey | None, _Flight | None]:
        self._drop_hung_flight()
        fresh = self._store.get(_KEY)
        flight = self._flight
        if fresh is not None:
            self._hits += 1
            if now >= fresh.refresh_at and flight is None and not self._in_backoff(now):
                return "hit-start", fresh.key, self._new_flight(now, "refresh-ahead")
            return "hit", fresh.key, None
        if flight is not None:
            return "wait", None, flight
        if self._in_backoff(now):
            stale = self._stale_key(now)
            if stale is not None:
                return "stale", stale, None
            return "raise", None, None
        flight = self._new_flight(now, "ttl")
        return "lead", None, flight

    def _plan_refresh(
        self, now: float, rejected: ApiKey | None
    ) -> tuple[_Action, ApiKey | None, _Flight | None, RefreshOutcome]:
        entry = self._entry
        # Past its stale window the held key is as good as none: never hand it out.
        dead = entry is not None and now > entry.expires_at + self._max_stale
        if rejected is not None and entry is not None and not dead and entry.key != rejected:
            return "hit", entry.key, None, "cached"
        self._drop_hung_flight()
        flight = self._flight
        if flight is not None:
            return "wait", None, flight, "fetched"
        if entry is None:
            return (*self._plan_get(now), "fetched")
        recently = self._last_forced_at is not None and (
            now - self._last_forced_at < self._min_refresh_interval
        )
        backoff = self._in_backoff(now)
        if dead and (recently or backoff):
            return (*self._plan_get(now), "fetched")  # raises in backoff
        if recently or backoff:
            outcome: RefreshOutcome = "skipped-interval" if recently else "skipped-backoff"
            logger.info(
                "forced refresh of %s skipped (%s); keeping %s",
                self.describe(),
                "within min_refresh_interval" if recently else "backend in backoff",
                entry.key.masked,
            )
            return "hit", entry.key, None, outcome
        self._last_forced_at = now
        return "lead", None, self._new_flight(now, "forced"), "fetched"

    # ------------------------------------------------------------------ state helpers (lock held)

    def _new_flight(self, now: float, kind: FlightKind) -> _Flight:
        flight = _Flight(kind, now, self._fetch_timeout)
        self._flight = flight
        self._fetches += 1
        if kind == "forced":
            self._forced_fetches += 1
        return flight

    def _drop_hung_flight(self) -> None:
        flight = self._flight
        if flight is not None and time.monotonic() >= flight.deadline:
            self._abandon(flight)

    def _abandon(self, flight: _Flight) -> None:
        # A fetch past its deadline counts as a failure; its late result is still used.
        if self._flight is flight:
            self._flight = None
        if flight.abandoned or flight.finished:
            return
        flight.abandoned = True
        self._errors += 1
        now = self._clock()
        self._record_failure(
            now,
            ProviderTimeoutError(
                f"fetching the key from {self.describe()} did not finish within "
                f"{self._fetch_timeout:g} s (fetch_timeout); the backend may be hung or "
                "unreachable",
                provider=self.describe(),
            ),
        )
        entry = self._entry
        # Logged under the lock: rare, and the record must not race the next attempt's.
        logger.warning(
            "fetching the key from %s did not finish within %g s (fetch_timeout), attempt "
            "%d; %s; next backend attempt in %.3g s",
            self.describe(),
            self._fetch_timeout,
            self._failures,
            f"keeping {entry.key.masked} while within max_stale"
            if entry is not None
            else "no key to fall back on",
            max(0.0, (self._retry_at or now) - now),
        )

    def _in_backoff(self, now: float) -> bool:
        return self._retry_at is not None and now < self._retry_at

    def _stale_key(self, now: float) -> ApiKey | None:
        entry = self._entry
        if entry is not None and now <= entry.expires_at + self._max_stale:
            self._stale_serves += 1
            return entry.key
        return None

    def _record_failure(self, now: float, error: BaseException) -> None:
        self._failures += 1
        step = min(self._backoff_max, self._backoff_initial * 2 ** min(self._failures - 1, 30))
        delay = step * self._rng.uniform(0.5, 1.0)
        self._retry_at = now + delay
        self._last_error = error

    def _store_entry(self, key: ApiKey, now: float) -> _Entry:
        lifetime = self._ttl * self._rng.uniform(1.0 - self._jitter, 1.0)
        ahead = min(self._refresh_ahead, lifetime / 2)
        entry = _Entry(key, now, now + lifetime, now + lifetime - ahead)
        self._store[_KEY] = entry
        self._entry = entry
        self._hot = entry
        self._failures = 0
        self._retry_at = None
        self._last_error = None
        return entry

    def _backoff_error(self) -> BaseException:
        with self._lock:
            error = self._last_error
        if error is None:  # pragma: no cover - defensive
            error = ProviderError(f"{self.describe()} is failing", provider=self.describe())
        return error

    # ------------------------------------------------------------------ running a fetch

    def _start(self, flight: _Flight, *, prefer_async: bool) -> None:
        cls = type(self._provider)
        native = cls.afetch is not Provider.afetch or (
            flight.rejected is not None and cls.arefetch is not Provider.arefetch
        )
        if prefer_async and native:
            import asyncio

            # A native async provider: run it as a task on the caller's loop.
            loop = asyncio.get_running_loop()
            flight.loop = loop
            flight.task = loop.create_task(self._run_async(flight))
            return
        thread = threading.Thread(
            target=self._run_sync, args=(flight,), name="scaling-credentials-fetch", daemon=True
        )
        thread.start()

    def _run_sync(self, flight: _Flight) -> None:
        started = time.perf_counter()
        try:
            rejected = flight.rejected
            key = self._provider.fetch() if rejected is None else self._provider.refetch(rejected)
        except BaseException as exc:
            self._complete(flight, None, exc, started)
        else:
            self._complete(flight, key, None, started)

    async def _run_async(self, flight: _Flight) -> None:
        started = time.perf_counter()
        try:
            rejected = flight.rejected
            provider = self._provider
            key = await (provider.afetch() if rejected is None else provider.arefetch(rejected))
        except BaseException as exc:
            self._complete(flight, None, exc, started)
        else:
            self._complete(flight, key, None, started)

    def _complete(
        self, flight: _Flight, key: object, error: BaseException | None, started: float
    ) -> None:
        duration = time.perf_counter() - started
        if error is None and not isinstance(key, ApiKey):
            error = ProviderError(
                f"{self.describe()} returned {type(key).__name__}, not an ApiKey",
                provider=self.describe(),
            )
        if error is not None:
            error = self._wrap(error)
        now = self._clock()
        previous: ApiKey | None = None
        stale_for: float | None = None
        with self._lock:
            if self._flight is flight:
                self._flight = None
            previous = self._entry.key if self._entry is not None else None
            if error is None:
                assert isinstance(key, ApiKey)
                self._store_entry(key, now)
                self._last_fetch_at = datetime.now(timezone.utc)
                self._last_fetch_duration = duration
            else:
                self._errors += not flight.abandoned
                if not flight.abandoned:
                    self._record_failure(now, error)
                if self._entry is not None:
                    stale_for = now - self._entry.expires_at
            flight.key = key if error is None else None  # type: ignore[assignment]
            flight.error = error
            flight.finished = True
            waiters, flight.async_waiters = flight.async_waiters, []
            failures, retry_at = self._failures, self._retry_at
        # Log before waking anyone, so that the record precedes whatever the callers do
        # next (and attempt numbers appear in order).
        self._log_outcome(flight, previous, error, duration, failures, retry_at, now, stale_for)
        flight.done.set()
        for waiter in waiters:
            try:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # that waiter's loop is closed: nobody is waiting there
                pass

    def _wrap(self, error: BaseException) -> BaseException:
        if isinstance(error, ScalingCredentialsError):
            return error
        name = type(error).__name__
        wrapped = ProviderError(
            f"fetching the key from {self.describe()} failed with {name}", provider=self.describe()
        )
        wrapped.__cause__ = error
        return wrapped

    def _log_outcome(
        self,
        flight: _Flight,
        previous: ApiKey | None,
        error: BaseException | None,
        duration: float,
        failures: int,
        retry_at: float | None,
        now: float,
        stale_for: float | None,
    ) -> None:
        if error is None:
            assert flight.key is not None
            if previous is not None and previous != flight.key:
                logger.info(
                    "key from %s changed: %s -> %s (%s fetch, %.1f ms)",
                    self.describe(),
                    previous.masked,
                    flight.key.masked,
                    flight.kind,
                    duration * 1000,
                )
            else:
                logger.info(
                    "fetched key %s from %s (%s fetch, %.1f ms)",
                    flight.key.masked,
                    self.describe(),
                    flight.kind,
                    duration * 1000,
                )
            return
        wait = max(0.0, (retry_at or now) - now)
        if stale_for is not None and previous is not None:
            usable = self._max_stale - stale_for  # stale_for < 0 while still fresh
            logger.warning(
                "fetching the key from %s failed (%s), attempt %d; keeping %s for up to %.0f s "
                "more (max_stale), next backend attempt in %.3g s",
                self.describe(),
                type(error).__name__,
                failures,
                previous.masked,
                max(0.0, usable),
                wait,
            )
        else:
            logger.warning(
                "fetching the key from %s failed (%s), attempt %d; no key to fall back on, "
                "next backend attempt in %.3g s",
                self.describe(),
                type(error).__name__,
                failures,
                wait,
            )

    # ------------------------------------------------------------------ waiting

    def _outcome(self, flight: _Flight, stale_ok: bool) -> ApiKey:
        if flight.error is None and flight.key is not None:
            return flight.key
        error = flight.error
        if stale_ok:
            with self._lock:
                stale = self._stale_key(self._clock())
            if stale is not None:
                return stale
        assert error is not None
        raise error

    def _timed_out(self, flight: _Flight, stale_ok: bool) -> ApiKey:
        with self._lock:
            self._abandon(flight)
            if flight.finished:  # finished in the meantime
                pass
            elif stale_ok:
                stale = self._stale_key(self._clock())
                if stale is not None:
                    return stale
            error = self._last_error
        if flight.finished:
            return self._outcome(flight, stale_ok)
        assert error is not None
        raise error

    def _wait_sync(self, flight: _Flight, *, stale_ok: bool) -> ApiKey:
        if flight.loop is not None and _running_loop() is flight.loop:
            # This thread runs the loop the fetch task needs: waiting here would deadlock
            # it. Fetch on our own instead (a sync call made from inside async code).
            return self._fetch_inline(stale_ok)
        remaining = flight.deadline - time.monotonic()
        if not flight.done.wait(max(0.0, remaining)):
            return self._timed_out(flight, stale_ok)
        return self._outcome(flight, stale_ok)

    def _fetch_inline(self, stale_ok: bool) -> ApiKey:
        with self._lock:
            flight = _Flight("ttl", self._clock(), self._fetch_timeout)
            self._fetches += 1
        self._start(flight, prefer_async=False)
        return self._wait_sync(flight, stale_ok=stale_ok)

    async def _wait_async(self, flight: _Flight, *, stale_ok: bool) -> ApiKey:
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            if flight.finished:
                waiter = None
            else:
                waiter = loop.create_future()
                flight.async_waiters.append(waiter)
        if waiter is not None:
            remaining = max(0.0, flight.deadline - time.monotonic())
            try:
                # Only our own future is cancelled on timeout or cancellation; the fetch
                # goes on for everyone else.
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return self._timed_out(flight, stale_ok)
        return self._outcome(flight, stale_ok)


_caches: weakref.WeakSet[KeyCache] = weakref.WeakSet()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    import sys

    if "asyncio" not in sys.modules:  # no loop can be running without asyncio
        return None
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _after_fork_in_child() -> None:
    # Threads and tasks do not survive fork: a lock held by a fetch thread in the parent
    # would be held forever in the child, and its flight would never finish. Keep the
    # warmed key, start clean otherwise.
    for cache in list(_caches):
        cache._lock = threading.Lock()
        cache._flight = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
