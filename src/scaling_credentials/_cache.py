"""KeyCache: a TTL cache for one API key, single-flight across threads and asyncio tasks.

The cache is three parts, each one idea:

* :mod:`._schedule` decides (pure: no clock, lock, thread or I/O): when a key expires or
  is refreshed ahead of expiry, how long the backend rests after a failure, which rejected
  key earns a forced fetch, and what a read or a refresh does now, as a typed action. It
  holds the one entry.
* :mod:`._flight` runs a fetch off every caller's stack (on one of the process's fetch
  threads, which never exit, or as a task for a native async provider) and lets any
  number of threads and tasks wait for it with a deadline, so a hung backend never holds
  a request longer than ``fetch_timeout``.
* This module is the drivers: ``get``/``aget`` and ``refresh``/``arefresh`` take the lock
  only to ask the schedule and record outcomes (never across I/O, so it is safe to take
  from the event loop), carry out the action, log and publish events.

The hot path is one clock read and one comparison against the immutable entry, so a cached
read costs well under a microsecond.
"""

from __future__ import annotations

import logging
import os
import random as _random
import threading
import time
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta, timezone
from typing import Final, NamedTuple

from ._errors import (
    ConfigurationError,
    ProviderError,
    ProviderTimeoutError,
    ScalingCredentialsError,
)
from ._events import CacheEvent, Subscribers
from ._flight import Flight, running_loop, start_thread
from ._fork import after_fork
from ._key import ApiKey
from ._options import seconds
from ._provider import Provider
from ._redact import get_logger
from ._schedule import (
    Action,
    Check,
    Fail,
    Failed,
    Fetch,
    FetchKind,
    Join,
    Kept,
    Outcome,
    Policy,
    Refresh,
    RefreshOutcome,
    Schedule,
    Serve,
    Stored,
    Verdict,
)

__all__ = ["CacheEvent", "CacheStats", "KeyCache", "RefreshOutcome", "default_ttl"]

logger: logging.Logger = get_logger("scaling_credentials.cache")

DEFAULT_TTL: Final = 300.0
# One WARNING per stuck key per this many seconds; the rest at DEBUG, counted.
STUCK_WARNING_EVERY: Final = 60.0
# Marks the log records of failed fetches (a command that reports the failure itself
# can leave them out): ``record.scaling_credentials_event == "fetch_failed"``.
FETCH_FAILED: Final = {"scaling_credentials_event": "fetch_failed"}
# A read or refresh decides again after waiting for a fetch that was not its own (or that
# was orphaned); bounded.
_MAX_ROUNDS: Final = 4


def _blocks_its_loop(flight: Flight) -> bool:
    """Whether this thread runs the event loop that ``flight``'s task needs (a sync call
    made from inside async code): waiting for it here would deadlock."""
    return flight.loop is not None and running_loop() is flight.loop


def default_ttl(environ: dict[str, str] | None = None) -> float:
    """The TTL used when none is passed: ``SCALING_API_KEY_TTL`` seconds, else 300."""
    raw = (os.environ if environ is None else environ).get("SCALING_API_KEY_TTL", "").strip()
    if not raw:
        return DEFAULT_TTL
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None:
        from ._redact import redact

        raise ConfigurationError(
            f"SCALING_API_KEY_TTL must be a number of seconds, got {redact(repr(raw[:20]))}"
        )
    return seconds(value, "SCALING_API_KEY_TTL", allow_zero=False)


class CacheStats(NamedTuple):
    """A snapshot of a :class:`KeyCache`'s counters.

    ``fetches`` counts backend calls started (TTL, refresh-ahead, change and forced), of
    which ``forced_fetches`` were forced and ``errors`` failed; ``hits`` counts reads
    served from the cache (approximate under heavy thread contention: it is a plain
    counter, kept off the lock on purpose); ``stale_serves`` counts reads served an
    expired key while the backend failed. ``last_fetch_at`` is the wall-clock time of the
    last successful fetch and ``last_fetch_duration`` how long it took, in seconds.
    """

    fetches: int
    forced_fetches: int
    hits: int
    errors: int
    stale_serves: int
    last_fetch_at: datetime | None
    last_fetch_duration: float | None
    consecutive_failures: int


class KeyCache:
    """Caches the key of ``provider`` for ``ttl`` seconds, with one backend call per expiry
    however many threads or tasks ask.

    Parameters (seconds as floats; :class:`~datetime.timedelta` accepted):

    * ``ttl``: lifetime of a fetched key; default ``SCALING_API_KEY_TTL`` or 300.
    * ``jitter``: each lifetime is ``ttl`` scaled by a random factor in ``[1 - jitter, 1]``
      so that a fleet does not refetch together. The lifetime after a fetch a whole fleet
      makes at once (the first after start or ``invalidate()``, the first in a child after
      ``fork()``, and a forced fetch after a rotation) is spread over ``[0.1, 1]`` instead,
      so that the fleet falls out of step within one TTL. Default 0.1; 0 turns both off.
    * ``refresh_ahead``: within this many seconds of expiry, the first caller starts a
      background refresh while everyone is still served the current key. Default
      ``ttl / 10``; at most half of an entry's lifetime.
    * ``max_stale``: when a refetch fails, the last key is served for up to this long past
      its expiry (with a warning and backoff on the backend). Default 900.
    * ``min_refresh_interval``: a key rejected again after its forced fetch returned it
      unchanged, and a refresh that names no key, are refetched at most once per this
      interval. The first rejection of a key is always refetched at once. Default 5.
    * ``fetch_timeout``: how long (real time) a caller waits for a fetch. Default 30.
    * ``backoff_initial`` / ``backoff_max``: after a failed fetch, the next backend attempt
      waits ``backoff_initial * 2**(n-1)`` seconds, capped at ``backoff_max``, scaled by a
      random factor in ``[0.5, 1]``. Defaults 1 and 60. The same schedule spaces the
      re-reads of a source that returned a key the API had rejected.
    * ``check_interval``: for a provider that can tell a change cheaply
      (:meth:`Provider.stamp`: a file), how often at most the read path asks it; a change
      starts a refetch at once. Default 1; 0 asks at every read past the interval's end.
    * ``clock``: a monotonic clock in seconds (inject a fake one in tests).
    * ``rng``: a :class:`random.Random` for jitter and backoff (seed it in tests). Without
      one, a child process re-seeds its own after ``fork()``.
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
        check_interval: float | timedelta = 1.0,
        clock: Callable[[], float] = time.monotonic,
        rng: _random.Random | None = None,
    ) -> None:
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                f"KeyCache needs a scaling_credentials.Provider, got {type(provider).__name__}"
            )
        if not callable(clock):
            raise ConfigurationError("clock must be a callable returning seconds")
        self._provider = provider
        self._policy = Policy.build(
            ttl=default_ttl() if ttl is None else ttl,
            jitter=jitter,
            refresh_ahead=refresh_ahead,
            max_stale=max_stale,
            min_refresh_interval=min_refresh_interval,
            fetch_timeout=fetch_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            check_interval=check_interval,
        )
        self._clock = clock
        self._own_rng = rng is None
        self._state = Schedule(self._policy, rng if rng is not None else _random.Random())
        self._stamps = type(provider).stamp is not Provider.stamp
        self._lock = threading.Lock()
        self._flight: Flight | None = None
        self._error: BaseException | None = None  # the last backend error, no traceback
        self._events = Subscribers()

        self._hits = 0
        self._fetches = 0
        self._forced_fetches = 0
        self._errors = 0
        self._stale_serves = 0
        self._last_fetch_at: datetime | None = None
        self._last_fetch_duration: float | None = None
        self._started = 0  # flights started (their numbers)
        self._held_from = 0  # the number of the flight whose outcome the entry reflects
        after_fork(self, KeyCache._after_fork)

    # ------------------------------------------------------------------ public API

    @property
    def provider(self) -> Provider:
        """The provider this cache reads from."""
        return self._provider

    @property
    def ttl(self) -> float:
        """The configured TTL in seconds (before jitter)."""
        return self._policy.ttl

    @property
    def min_refresh_interval(self) -> float:
        """The configured ``min_refresh_interval`` in seconds."""
        return self._policy.min_refresh_interval

    def describe(self) -> str:
        """The provider's description (safe to log)."""
        return self._provider.describe()

    def __repr__(self) -> str:
        return f"<KeyCache {self.describe()} ttl={self._policy.ttl}>"

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
                consecutive_failures=self._state.failures,
            )

    def peek(self) -> ApiKey | None:
        """The key held now (fresh or not), without fetching; ``None`` when there is none."""
        entry = self._state.entry
        return entry.key if entry is not None else None

    @property
    def key_age(self) -> float | None:
        """Seconds, by the cache's ``clock``, since the key held now was read from its
        source; ``None`` when none is held. A successful fetch resets it (even when it
        returns the same key). It passes ``ttl`` only while refetches fail (the key is
        served stale, for up to ``max_stale`` more) or when nothing read the cache since
        the key expired (the cache fetches when read, never on its own)."""
        entry = self._state.entry
        return None if entry is None else max(0.0, self._clock() - entry.fetched_at)

    def is_rejected(self, key: ApiKey) -> bool:
        """Whether the API rejected ``key`` (as far as this cache remembers: it keeps the
        fingerprints of the last 64 keys it was told were rejected, never the keys)."""
        with self._lock:
            return self._state.is_rejected(key)

    def invalidate(self) -> None:
        """Forget the cached key (and the stale fallback); the next read fetches."""
        with self._lock:
            self._state.forget()
            self._error = None

    def subscribe(self, callback: Callable[[CacheEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every :class:`CacheEvent` (fetches, key changes,
        failures, stale serves, rejections, skipped refreshes), outside the cache's lock,
        from the thread where it happened; keep it fast. A callback that raises is reported
        once and never breaks a request. Returns the function that unsubscribes it."""
        return self._events.add(callback)

    def get(self) -> ApiKey:
        """The cached key while fresh; one fetch at first use and after expiry, however many
        threads ask at once."""
        entry = self._state.entry
        if entry is not None and self._clock() < entry.until:
            self._hits += 1
            return entry.key
        for _ in range(_MAX_ROUNDS):
            action, flight = self._decide(self._state.on_read, read=True)
            key = self._carry_out(action, flight)
            if key is not None:
                return key
        return self._last_resort()

    async def aget(self) -> ApiKey:
        """Like :meth:`get`, for asyncio: never blocks the event loop."""
        entry = self._state.entry
        if entry is not None and self._clock() < entry.until:
            self._hits += 1
            return entry.key
        for _ in range(_MAX_ROUNDS):
            action, flight = self._decide(self._state.on_read, read=True)
            key = await self._acarry_out(action, flight)
            if key is not None:
                return key
        return self._last_resort()

    def _fresh(self) -> ApiKey | None:
        """The key while nothing needs doing about it, else ``None``: the async auth's
        fast path, which saves an ``await`` per request."""
        entry = self._state.entry
        if entry is not None and self._clock() < entry.until:
            self._hits += 1
            return entry.key
        return None

    def refresh(self, rejected: ApiKey | None = None) -> ApiKey:
        """Fetch anew, bypassing the TTL, after the API rejected ``rejected``.

        If the cache already holds a different key that the API has not rejected, that key
        is returned with no fetch. Concurrent refreshes share one fetch. The first
        rejection of a key is refetched at once; a key rejected again after its forced
        fetch returned it unchanged, and a refresh that names no key, at most once per
        ``min_refresh_interval``, and not while the backend is in backoff (then the current
        key is returned, as long as it is within its stale window). A failing forced fetch
        raises.
        """
        return self._refresh(rejected)[0]

    async def arefresh(self, rejected: ApiKey | None = None) -> ApiKey:
        """Like :meth:`refresh`, for asyncio."""
        return (await self._arefresh(rejected))[0]

    def _refresh(self, rejected: ApiKey | None) -> tuple[ApiKey, RefreshOutcome]:
        """:meth:`refresh`, also saying whether the source was asked (for the auths)."""
        self._note_rejected(rejected)
        for _ in range(_MAX_ROUNDS):
            action, flight = self._decide(lambda now: self._state.on_refresh(now, rejected))
            if isinstance(action, Serve):
                return self._after_refresh(action.key, action.outcome, rejected)
            if isinstance(action, Join) and flight is not None and _blocks_its_loop(flight):
                # The fetch in flight is a task of the loop this thread runs: it cannot
                # end while this call waits. This refresh makes its own forced fetch, once.
                key = self._fetch_inline(False, rejected, forced=True)
                if key is not None:
                    return self._after_refresh(key, "fetched", rejected)
                continue
            key = self._carry_out(action, flight)
            if key is not None and not (isinstance(action, Join) and action.replan):
                return self._after_refresh(key, "fetched", rejected)
        return self._after_refresh(self._last_resort(), "cached", rejected)

    async def _arefresh(self, rejected: ApiKey | None) -> tuple[ApiKey, RefreshOutcome]:
        self._note_rejected(rejected)
        for _ in range(_MAX_ROUNDS):
            action, flight = self._decide(lambda now: self._state.on_refresh(now, rejected))
            if isinstance(action, Serve):
                return self._after_refresh(action.key, action.outcome, rejected)
            key = await self._acarry_out(action, flight)
            if key is not None and not (isinstance(action, Join) and action.replan):
                return self._after_refresh(key, "fetched", rejected)
        return self._after_refresh(self._last_resort(), "cached", rejected)

    # ------------------------------------------------------------------ deciding

    def _decide(
        self, ask: Callable[[float], Action], *, read: bool = False
    ) -> tuple[Action, Flight | None]:
        """Ask the schedule under the lock; start the bookkeeping of a new fetch. ``read``:
        a read (served keys count as hits)."""
        events: list[CacheEvent] = []
        with self._lock:
            now = self._clock()
            abandoned = self._drop_dead_flight(now, events)
            action = ask(now)
            flight = self._begin(action, now)
            if isinstance(action, Serve) and action.stale:
                self._stale_serves += 1
                events.append(self._event("stale_served", action.key))
            elif isinstance(action, Serve) and action.outcome.startswith("skipped"):
                trigger = "interval" if action.outcome == "skipped-interval" else "backoff"
                events.append(self._event("refresh_skipped", action.key, trigger=trigger))
            elif read and isinstance(action, Serve | Refresh | Check):
                self._hits += 1
        self._warn_abandoned(abandoned)
        self._events.deliver(events)
        return action, flight

    def _begin(self, action: Action, now: float) -> Flight | None:
        if isinstance(action, Join):
            return self._flight
        if not isinstance(action, Fetch | Refresh):
            return None
        rejected = action.rejected if isinstance(action, Fetch) else None
        flight = self._new_flight(action.kind, rejected)
        self._flight = flight
        self._state.started(now, action.kind, rejected)
        return flight

    def _new_flight(self, kind: FetchKind, rejected: ApiKey | None) -> Flight:
        """A fetch's bookkeeping (call with the lock held)."""
        self._started += 1
        self._fetches += 1
        if kind == "forced":
            self._forced_fetches += 1
        return Flight(kind, self._policy.fetch_timeout, rejected, self._started)

    def _drop_dead_flight(self, now: float, events: list[CacheEvent]) -> Failed | None:
        flight = self._flight
        if flight is None:
            return None
        if time.monotonic() >= flight.deadline:
            return self._abandon(flight, now, events)
        if not flight.can_finish():
            self._orphan_locked(flight)
        return None

    # ------------------------------------------------------------------ carrying out

    def _carry_out(self, action: Action, flight: Flight | None) -> ApiKey | None:
        """Do what the schedule said (sync); ``None`` means: decide again."""
        if isinstance(action, Serve):
            return action.key
        if isinstance(action, Fail):
            raise self._error_for_caller()
        if isinstance(action, Check):
            return self._check(action, prefer_async=False)
        assert flight is not None
        if isinstance(action, Refresh):
            self._launch(flight, prefer_async=False)
            return action.key
        if isinstance(action, Fetch):
            self._launch(flight, prefer_async=False)
            return self._wait(flight, stale_ok=action.kind != "forced")
        return self._wait(flight, stale_ok=action.stale_ok)

    async def _acarry_out(self, action: Action, flight: Flight | None) -> ApiKey | None:
        """Do what the schedule said (asyncio); ``None`` means: decide again."""
        if isinstance(action, Serve):
            return action.key
        if isinstance(action, Fail):
            raise self._error_for_caller()
        if isinstance(action, Check):
            return self._check(action, prefer_async=True)
        assert flight is not None
        if isinstance(action, Refresh):
            self._launch(flight, prefer_async=True)
            return action.key
        if isinstance(action, Fetch):
            self._launch(flight, prefer_async=True)
            return await self._await(flight, stale_ok=action.kind != "forced")
        return await self._await(flight, stale_ok=action.stale_ok)

    def _check(self, action: Check, *, prefer_async: bool) -> ApiKey:
        """Ask the provider whether the source changed; refetch in the background if so."""
        seen = self._take_stamp()
        follow, flight = self._decide(lambda now: self._state.on_stamp(now, seen, action))
        if isinstance(follow, Refresh) and flight is not None:
            self._launch(flight, prefer_async=prefer_async)
        return action.key

    def _take_stamp(self) -> Hashable | None:
        if not self._stamps:
            return None
        try:
            return self._provider.stamp()
        except Exception:  # a stamp is a hint: without one, the TTL still holds
            return None

    def _last_resort(self) -> ApiKey:
        with self._lock:
            key = self._state.usable(self._clock())
        if key is None:
            raise self._error_for_caller()
        return key

    # ------------------------------------------------------------------ running a fetch

    def _launch(self, flight: Flight, *, prefer_async: bool) -> None:
        if prefer_async and self._provider._native_async(forced=flight.rejected is not None):
            import asyncio

            # A native async provider: run it as a task on the caller's loop.
            loop = asyncio.get_running_loop()
            flight.loop = loop
            flight.task = loop.create_task(self._run_async(flight))
            return
        try:
            start_thread(lambda: self._run_sync(flight))
        except Exception as exc:  # no thread for it (the process is out of threads)
            self._complete(flight, None, exc, time.perf_counter())

    def _run_sync(self, flight: Flight) -> None:
        started = time.perf_counter()
        try:
            flight.stamp = self._take_stamp()
            rejected = flight.rejected
            key = self._provider.fetch() if rejected is None else self._provider.refetch(rejected)
        except BaseException as exc:
            self._complete(flight, None, exc, started)
        else:
            self._complete(flight, key, None, started)

    async def _run_async(self, flight: Flight) -> None:
        import asyncio

        started = time.perf_counter()
        try:
            flight.stamp = self._take_stamp()
            rejected = flight.rejected
            provider = self._provider
            key = await (provider.afetch() if rejected is None else provider.arefetch(rejected))
        except (asyncio.CancelledError, GeneratorExit):
            # The loop this task runs on is shutting down (or someone cancelled the task),
            # or the loop is gone and the task was garbage-collected (an event loop holds
            # its tasks weakly): no backend failure. Whoever waits asks the cache again.
            self._orphan(flight)
            raise
        except BaseException as exc:
            self._complete(flight, None, exc, started)
        else:
            self._complete(flight, key, None, started)

    def _complete(
        self, flight: Flight, key: object, error: BaseException | None, started: float
    ) -> None:
        duration = time.perf_counter() - started
        if error is None and not isinstance(key, ApiKey):
            error = ProviderError(
                f"{self.describe()} returned {type(key).__name__}, not an ApiKey",
                provider=self.describe(),
            )
        if error is not None:
            error = self._keepable(error)
        events: list[CacheEvent] = []
        now = self._clock()
        with self._lock:
            if self._flight is flight:
                self._flight = None
                self._state.ended()
            previous = self.peek()
            outcome: Outcome | None
            if error is None and flight.abandoned and flight.number < self._held_from:
                # A late result, and a fetch started after this one was given up has
                # landed since: what this one read is older. The newer outcome stays.
                assert isinstance(key, ApiKey)
                outcome = None
                flight.key = previous if previous is not None else key
            elif error is None:
                assert isinstance(key, ApiKey)
                self._held_from = flight.number
                if flight.stamp is not None:
                    self._state.checks = True
                outcome = self._state.succeeded(
                    now, key, flight.rejected, flight.stamp, forced=flight.kind == "forced"
                )
                self._last_fetch_at = datetime.now(timezone.utc)
                self._last_fetch_duration = duration
                flight.key = outcome.held if isinstance(outcome, Kept) else key
                events.append(self._event("fetched", key, duration=duration, trigger=flight.kind))
                if isinstance(outcome, Stored) and previous is not None and previous != key:
                    events.append(self._event("key_changed", key, trigger=flight.kind))
            else:
                counted = not flight.abandoned
                if counted:
                    self._errors += 1
                    self._error = error
                outcome = self._state.failed(
                    now, flight.rejected, count=counted, stamp=flight.stamp
                )
                flight.error = error
                if counted:  # else published when it was given up
                    events.append(
                        self._event(
                            "fetch_failed",
                            None,
                            duration=duration,
                            error=type(error).__name__,
                            trigger=flight.kind,
                        )
                    )
            flight.finished = True
        # Log and publish before waking anyone, so that the record precedes whatever the
        # callers do next (and attempt numbers appear in order); wake them whatever a
        # subscriber raises (SystemExit ends this thread, not their wait).
        try:
            if outcome is None:
                logger.debug(
                    "a %s fetch from %s given up after fetch_timeout ended after %.1f ms; a "
                    "later fetch has landed since, so its result is dropped",
                    flight.kind,
                    self.describe(),
                    duration * 1000,
                )
            else:
                self._log_outcome(flight, outcome, previous, error, duration)
            self._events.deliver(events)
        finally:
            flight.wake()

    def _keepable(self, error: BaseException) -> BaseException:
        """The error as the cache keeps it: a library error (a provider's own exception is
        wrapped, chained), with every traceback in its chain dropped, so that it pins no
        frame (nor the request or secret a frame may hold) however long it is kept."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "fetch from %s failed", self.describe(), exc_info=(type(error), error, None)
            )
        if not isinstance(error, ScalingCredentialsError):
            wrapped = ProviderError(
                f"fetching the key from {self.describe()} failed with {type(error).__name__}",
                provider=self.describe(),
            )
            wrapped.__cause__ = error
            error = wrapped
        # Both links of every exception: a provider that raises ``from`` one error while
        # handling another has a cause and a different context, each with its frames.
        seen: set[int] = set()
        todo: list[BaseException | None] = [error]
        while todo:
            link = todo.pop()
            if link is None or id(link) in seen:
                continue
            seen.add(id(link))
            link.__traceback__ = None
            todo += (link.__cause__, link.__context__)
        return error

    def _error_for_caller(self) -> BaseException:
        """A new exception for this caller, a copy of the kept one chained to the same
        (traceback-free) causes: one shared instance raised to many callers would grow its
        traceback with every raise, pin their frames, and race across threads.

        The copy is built without calling the class's ``__init__`` (a provider's own
        error class may take other arguments than its message): same type, same
        ``args``, same attributes, and a list of notes of its own."""
        with self._lock:
            kept = self._error
        if kept is None:  # pragma: no cover - defensive
            return ProviderError(f"{self.describe()} is failing", provider=self.describe())
        cls = type(kept)
        try:
            error = cls.__new__(cls, *kept.args)
            error.args = kept.args
            error.__dict__.update(vars(kept))
            notes = getattr(kept, "__notes__", None)
            if isinstance(notes, list):
                error.__notes__ = list(notes)  # type: ignore[attr-defined]
        except Exception:
            error = ProviderError(str(kept), provider=self.describe())
        error.__cause__ = kept.__cause__
        error.__context__ = kept.__context__
        error.__suppress_context__ = kept.__suppress_context__
        return error

    def _orphan(self, flight: Flight) -> None:
        with self._lock:
            self._orphan_locked(flight)
        flight.wake()

    def _orphan_locked(self, flight: Flight) -> None:
        flight.orphaned = True
        if self._flight is flight:
            self._flight = None
            self._state.ended()
        if flight.rejected is not None and not flight.finished:
            record = self._state.rejection(flight.rejected)
            if record is not None:
                record.verdict = Verdict.NEW  # it never reached the source: it earns one

    def _abandon(self, flight: Flight, now: float, events: list[CacheEvent]) -> Failed | None:
        """A fetch past its deadline counts as failed (lock held); its late result is still
        used when it comes. Returns the failure to report (with :meth:`_warn_abandoned`,
        once the lock is released), or ``None`` when it was counted before."""
        if self._flight is flight:
            self._flight = None
            self._state.ended()
        if flight.abandoned or flight.finished:
            return None
        flight.abandoned = True
        self._errors += 1
        self._error = ProviderTimeoutError(
            f"fetching the key from {self.describe()} did not finish within "
            f"{self._policy.fetch_timeout:g} s (fetch_timeout); the backend may be hung or "
            "unreachable",
            provider=self.describe(),
        )
        failed = self._state.failed(now, flight.rejected, stamp=flight.stamp)
        events.append(
            self._event("fetch_failed", None, error="ProviderTimeoutError", trigger=flight.kind)
        )
        return failed

    def _warn_abandoned(self, failed: Failed | None) -> None:
        """Report a fetch given up after ``fetch_timeout`` (call with no lock held: a log
        handler may use the cache)."""
        if failed is None:
            return
        logger.warning(
            "fetching the key from %s did not finish within %g s (fetch_timeout), attempt "
            "%d; %s; next backend attempt in %.3g s",
            self.describe(),
            self._policy.fetch_timeout,
            failed.attempt,
            f"keeping {failed.fallback.masked} while within max_stale"
            if failed.fallback is not None
            else "no key to fall back on",
            failed.retry_in,
            extra=FETCH_FAILED,
        )

    # ------------------------------------------------------------------ waiting

    def _wait(self, flight: Flight, *, stale_ok: bool) -> ApiKey | None:
        if _blocks_its_loop(flight):
            # This thread runs the loop the fetch task needs: waiting here would deadlock
            # it. Fetch on our own instead (a sync call made from inside async code).
            return self._fetch_inline(stale_ok)
        if not flight.wait():
            return self._gave_up(flight, stale_ok)
        return self._result(flight, stale_ok)

    async def _await(self, flight: Flight, *, stale_ok: bool) -> ApiKey | None:
        if not await flight.await_end():
            return self._gave_up(flight, stale_ok)
        return self._result(flight, stale_ok)

    def _fetch_inline(
        self, stale_ok: bool, rejected: ApiKey | None = None, *, forced: bool = False
    ) -> ApiKey | None:
        """A fetch of this caller's own, in a thread, while the one in flight cannot end
        (``forced``: a refresh's, through ``refetch(rejected)``)."""
        kind: FetchKind = "forced" if forced else "ttl"
        with self._lock:
            now = self._clock()
            flight = self._new_flight(kind, rejected)
            self._state.started_aside(now, kind, rejected)
        self._launch(flight, prefer_async=False)
        return self._wait(flight, stale_ok=stale_ok)

    def _gave_up(self, flight: Flight, stale_ok: bool) -> ApiKey | None:
        """The flight did not end in time (or can no longer end)."""
        events: list[CacheEvent] = []
        abandoned: Failed | None = None
        with self._lock:
            if flight.finished or flight.orphaned:
                pass
            elif not flight.can_finish():
                self._orphan_locked(flight)
            else:
                abandoned = self._abandon(flight, self._clock(), events)
        self._warn_abandoned(abandoned)
        self._events.deliver(events)
        if flight.orphaned:
            return None  # decide again
        if flight.finished:
            return self._result(flight, stale_ok)
        if stale_ok:
            stale = self._stale()
            if stale is not None:
                return stale
        raise self._error_for_caller()

    def _result(self, flight: Flight, stale_ok: bool) -> ApiKey | None:
        if flight.orphaned and not flight.finished:
            return None
        if flight.key is not None:
            return flight.key
        if stale_ok:
            stale = self._stale()
            if stale is not None:
                return stale
        raise self._error_for_caller()

    def _stale(self) -> ApiKey | None:
        """The held key after a failed fetch, while usable; a stale serve only when it
        has expired (a refresh that joined a failed refresh-ahead gets a fresh key)."""
        with self._lock:
            now = self._clock()
            key = self._state.usable(now)
            entry = self._state.entry
            stale = key is not None and entry is not None and now >= entry.expires_at
            if stale:
                self._stale_serves += 1
        if stale and key is not None:
            self._events.deliver([self._event("stale_served", key)])
        return key

    # ------------------------------------------------------------------ rejections

    def _note_rejected(self, rejected: ApiKey | None) -> None:
        if rejected is not None and self._events:
            self._events.deliver([self._event("rejected", rejected)])

    def _after_refresh(
        self, key: ApiKey, outcome: RefreshOutcome, rejected: ApiKey | None
    ) -> tuple[ApiKey, RefreshOutcome]:
        if rejected is None:
            return key, outcome
        if key == rejected:
            self._warn_stuck(rejected, outcome)
            return key, outcome
        if outcome == "fetched" and self.is_rejected(key):
            # The source holds only keys the API rejected: no request can succeed.
            self._warn_rejected_before(rejected, key)
            return key, "rejected"
        return key, outcome

    def _warn_rejected_before(self, rejected: ApiKey, key: ApiKey) -> None:
        """The refetch after ``rejected`` returned ``key``, which the API rejected before:
        one WARNING per such key per minute, counted with its own stuck rejections (the
        requests sent with ``key`` next fail as stuck ones); the rest at DEBUG."""
        with self._lock:
            suppressed = self._state.note_stuck(self._clock(), key, STUCK_WARNING_EVERY)
        text = "Scaling API rejected key %s and %s returned %s, a key it rejected before"
        if suppressed is None:
            logger.debug(text, rejected.masked, self.describe(), key.masked)
            return
        logger.warning(
            text + "; requests fail until the source holds a valid key%s",
            rejected.masked,
            self.describe(),
            key.masked,
            _suppressed(suppressed),
        )

    def _warn_stuck(self, key: ApiKey, outcome: RefreshOutcome) -> None:
        """One WARNING per stuck key per minute, naming the likely cause; the rest at
        DEBUG, counted in the next warning."""
        with self._lock:
            suppressed = self._state.note_stuck(self._clock(), key, STUCK_WARNING_EVERY)
        if outcome == "skipped-backoff":
            cause = f"{self.describe()} is failing and resting (backoff)"
        else:
            try:
                cause = self._provider.explain_stuck(key)
            except Exception:  # a third-party explanation must never break a request
                cause = Provider.explain_stuck(self._provider, key)
            if outcome == "skipped-interval":
                cause += (
                    f"; it is asked again at most every {self._policy.min_refresh_interval:g} "
                    "s (min_refresh_interval)"
                )
        if suppressed is None:
            logger.debug("Scaling API rejected key %s again: %s", key.masked, cause)
            return
        logger.warning(
            "Scaling API rejected key %s and %s; requests fail until the source holds a valid "
            "key%s",
            key.masked,
            cause,
            _suppressed(suppressed),
        )

    # ------------------------------------------------------------------ logging and events

    def _event(
        self,
        kind: str,
        key: ApiKey | None,
        *,
        duration: float | None = None,
        error: str | None = None,
        trigger: str | None = None,
    ) -> CacheEvent:
        return CacheEvent(
            kind,  # type: ignore[arg-type]
            self.describe(),
            key.masked if key is not None else None,
            key.version if key is not None else None,
            duration,
            error,
            trigger,
        )

    def _log_outcome(
        self,
        flight: Flight,
        outcome: Outcome,
        previous: ApiKey | None,
        error: BaseException | None,
        duration: float,
    ) -> None:
        if isinstance(outcome, Kept):
            log = logger.warning if outcome.first_time else logger.debug
            log(
                "%s returned %s, a key the Scaling API rejected before (a cache or replica "
                "behind the source that has not caught up?); keeping %s and asking again in "
                "%.3g s",
                self.describe(),
                outcome.refused.masked,
                outcome.held.masked,
                outcome.retry_in,
            )
            return
        if isinstance(outcome, Stored):
            if previous is not None and previous != outcome.key:
                logger.info(
                    "key from %s changed: %s -> %s (%s fetch, %.1f ms)",
                    self.describe(),
                    previous.masked,
                    outcome.key.masked,
                    flight.kind,
                    duration * 1000,
                )
            else:
                logger.info(
                    "fetched key %s from %s (%s fetch, %.1f ms)",
                    outcome.key.masked,
                    self.describe(),
                    flight.kind,
                    duration * 1000,
                )
            return
        assert isinstance(outcome, Failed) and error is not None
        if flight.abandoned:
            return  # reported when it was abandoned
        if outcome.fallback is not None and outcome.stale_for is not None:
            usable = self._policy.max_stale - outcome.stale_for  # negative stale_for: fresh
            logger.warning(
                "fetching the key from %s failed (%s), attempt %d; keeping %s for up to %.0f s "
                "more (max_stale), next backend attempt in %.3g s",
                self.describe(),
                type(error).__name__,
                outcome.attempt,
                outcome.fallback.masked,
                max(0.0, usable),
                outcome.retry_in,
                extra=FETCH_FAILED,
            )
        else:
            logger.warning(
                "fetching the key from %s failed (%s), attempt %d; no key to fall back on, "
                "next backend attempt in %.3g s",
                self.describe(),
                type(error).__name__,
                outcome.attempt,
                outcome.retry_in,
                extra=FETCH_FAILED,
            )

    # ------------------------------------------------------------------ fork

    def _after_fork(self) -> None:
        # Threads and tasks do not survive fork: a lock held by a fetch thread in the
        # parent would be held forever in the child, and its flight would never finish.
        # Keep the warmed key; draw new randomness (unless injected) and spread the next
        # lifetime widely, so that pre-fork workers do not refetch in step.
        self._lock = threading.Lock()
        flight = self._flight
        if flight is not None:
            # It never ends here: a forced fetch it was making is owed to the child.
            self._orphan_locked(flight)
        self._flight = None
        self._state.ended()
        if self._own_rng:
            self._state.rng = _random.Random()
        self._state.first = True


def _suppressed(count: int) -> str:
    """How a rate-limited warning counts the rejections logged at DEBUG since the last."""
    return f" ({count} more rejections of this key since the last warning)" if count else ""
