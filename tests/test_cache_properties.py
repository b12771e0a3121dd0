"""Property-based tests of KeyCache: a hypothesis state machine drives one cache with a
FakeClock and a MemoryProvider through reads, forced refreshes (with and without a
rejected key), clock jumps, rotations, sources that serve an old key again (a caching
replica), backend failures and recoveries, and checks the cache against what the contract
allows after every step.

The model knows only the contract's bounds, not the implementation's draws: an entry's
lifetime is somewhere in ``[ttl * (1 - jitter), ttl]`` (``[ttl * 0.1, ttl]`` for the
first one after start or invalidate(), and after a forced fetch) and a backoff step
after the n-th failure somewhere in ``[step / 2, step]``, so between those bounds either
outcome is accepted, and outside them the cache must behave one way:

* no backend call while the key is surely fresh; a call once it has surely expired
  and no backoff step can still be running (recovery within one step);
* never a backend call within half a backoff step of a failure;
* every rejected key earns one forced fetch, at once, whatever the interval; a key
  rejected again after its forced fetch returned it unchanged, and a refresh naming no
  key, at most one forced fetch per ``min_refresh_interval`` (the per-key bound);
* ``refresh(rejected=k)`` with a different, not rejected key cached returns that key,
  with no call;
* never step back: while the cache holds a key the API has not rejected, it serves that
  key even when the source returns one the API rejected (the held key is "the best");
* the key served is the one held, never past expiry + ``max_stale``;
* an error only when no usable key exists (none fetched, or past the stale window);
* with a source that has a stamp (a write counter, like a file's), a read of a fresh key
  asks the source only when it was written since the last read that stored or kept a
  key, and, within half a backoff step, since the last failed read too (a change is
  news once);
* the hot path never serves an entry past its expiry (``until <= expires_at``).

Sized to run in a few seconds: see SETTINGS (``SCALING_HYPOTHESIS_EXAMPLES`` raises it).
"""

from __future__ import annotations

import os
import random
from collections.abc import Hashable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scaling_credentials import ApiKey, KeyCache, ProviderError
from scaling_credentials.testing import FakeClock, MemoryProvider
from scaling_credentials.testing.provider_suite import assert_key_is

TTL = 60.0
JITTER = 0.2
FIRST_LOW = 0.1  # the first lifetime after start, and after a forced fetch: [0.1, 1] * ttl
MAX_STALE = 120.0
MIN_REFRESH = 5.0
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 8.0
EPS = 1e-6

SETTINGS = settings(
    max_examples=int(os.environ.get("SCALING_HYPOTHESIS_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    database=None,  # no .hypothesis directory in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)


def backoff_step(failures: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (failures - 1))


@dataclass
class Entry:
    """What the model knows of the held entry: its key and bounds on its expiry and on
    when a background re-read is due (a kept entry's; otherwise at expiry)."""

    key: str
    expires_lo: float
    expires_hi: float
    recheck_lo: float
    recheck_hi: float

    @property
    def surely_fresh_until(self) -> float:
        return min(self.expires_lo, self.recheck_lo)

    @property
    def surely_expired_from(self) -> float:
        return self.expires_hi

    @property
    def surely_usable_until(self) -> float:
        return self.expires_lo + MAX_STALE

    @property
    def surely_dead_after(self) -> float:
        return self.expires_hi + MAX_STALE


class VersionedProvider(MemoryProvider):
    """A memory provider whose stamp (when ``stamped``) counts the writes to the source,
    like a file's modification time and size."""

    def __init__(self, value: str, *, stamped: bool) -> None:
        super().__init__(value)
        self.stamped = stamped
        self.version = 0

    def stamp(self) -> Hashable | None:
        return self.version if self.stamped else None


class CacheMachine(RuleBasedStateMachine):
    """One KeyCache against a model of the contract's bounds."""

    @initialize(seed=st.integers(0, 2**32 - 1), stamped=st.booleans())
    def setup(self, seed: int, stamped: bool) -> None:
        self.counter = 0
        self.issued: list[str] = []
        self.clock = FakeClock()
        self.provider = VersionedProvider(self.new_key(), stamped=stamped)
        self.cache = KeyCache(
            self.provider,
            ttl=TTL,
            jitter=JITTER,
            refresh_ahead=0,  # every fetch is waited for, but a kept entry's re-read
            max_stale=MAX_STALE,
            min_refresh_interval=MIN_REFRESH,
            backoff_initial=BACKOFF_INITIAL,
            backoff_max=BACKOFF_MAX,
            fetch_timeout=30,
            clock=self.clock,
            rng=random.Random(seed),
        )
        self.entry: Entry | None = None
        self.first = True
        self.kept_in_a_row = 0
        self.failures = 0
        self.last_failure_at: float | None = None
        self.last_forced_at: float | None = None
        self.forced_at: list[float] = []
        self.verdicts: dict[str, str] = {}  # rejected key -> new | stuck | failed | replaced
        self.best: str | None = None  # the held key while the API has not rejected it
        self.held_stamp: int | None = None  # the stamp of the read that stored or kept
        self.failed_stamp: int | None = None  # the stamp of the last failed read

    def new_key(self) -> str:
        self.counter += 1
        key = f"scl_live_property{self.counter:04d}abcdefghij"
        self.issued.append(key)
        return key

    # ------------------------------------------------------------------ helpers

    @property
    def now(self) -> float:
        return self.clock()

    def backoff_may_run(self) -> bool:
        """A backoff step may still be running (the draw is unknown)."""
        if self.failures == 0 or self.last_failure_at is None:
            return False
        return self.now < self.last_failure_at + backoff_step(self.failures) - EPS

    def backoff_surely_runs(self) -> bool:
        if self.failures == 0 or self.last_failure_at is None:
            return False
        return self.now < self.last_failure_at + 0.5 * backoff_step(self.failures) - EPS

    @property
    def stamp(self) -> int | None:
        return self.provider.version if self.provider.stamped else None

    def write_source(self) -> None:
        self.provider.version += 1

    def change_may_fetch(self) -> bool:
        """A stamp check may ask the source now (the source was written since)."""
        stamp = self.stamp
        if stamp is None or self.entry is None or stamp == self.held_stamp:
            return False
        return not (self.backoff_surely_runs() and stamp == self.failed_stamp)

    def settle(self) -> None:
        """Let a background re-read (a kept entry's) finish: the machine stays sequential."""
        flight = self.cache._flight
        if flight is not None:
            assert flight.done.wait(10), "a background fetch did not finish"

    def call(self, method: str, rejected: str | None = None) -> tuple[bool, ApiKey | None, bool]:
        """(backend called?, key or None, raised?)"""
        before = self.provider.fetches
        try:
            if method == "get":
                key: ApiKey | None = self.cache.get()
            else:
                key = self.cache.refresh(rejected=ApiKey(rejected) if rejected else None)
            raised = False
        except ProviderError:
            key, raised = None, True
        self.settle()
        calls = self.provider.fetches - before
        assert calls <= 1, f"{calls} backend calls for one {method}()"
        return calls == 1, key, raised

    def record_attempt(
        self,
        fetched: bool,
        forced_for: str | None = None,
        *,
        forced: bool = False,
        change: bool = False,
    ) -> None:
        if not fetched:
            return
        assert not self.backoff_surely_runs() or forced_for is not None or change, (
            "backend called within half a backoff step"
        )
        now = self.now
        if self.provider.fail:
            self.failures += 1
            self.last_failure_at = now
            self.failed_stamp = self.stamp
            if forced_for is not None:
                self.verdicts[forced_for] = "failed"
            return
        value = self.provider.value or ""
        if forced_for is not None:
            self.verdicts[forced_for] = "stuck" if value == forced_for else "replaced"
        low = FIRST_LOW if self.first or forced_for is not None or forced else 1 - JITTER
        self.first = False
        self.failures = 0
        self.last_failure_at = None
        self.held_stamp = self.stamp
        held = self.entry
        if (
            value in self.verdicts
            and held is not None
            and held.key != value
            and held.key not in self.verdicts
        ):
            # Never step back: the held key stays, re-read after a backoff step.
            self.kept_in_a_row += 1
            step = backoff_step(self.kept_in_a_row)
            self.entry = Entry(
                held.key,
                max(held.expires_lo, now + TTL * low),
                max(held.expires_hi, now + TTL),
                now + 0.5 * step,
                now + step,
            )
            return
        self.kept_in_a_row = 0
        self.entry = Entry(value, now + TTL * low, now + TTL, now + TTL * low, now + TTL)
        self.best = value if value not in self.verdicts else None

    def check_served(self, key: ApiKey | None, before: Entry | None) -> None:
        if key is None:
            return
        value = key.reveal()
        assert self.entry is not None, "served a key with none fetched"
        # The key held; a background re-read may have changed it after it was served.
        allowed = {self.entry.key} | ({before.key} if before is not None else set())
        assert value in allowed, "served a key other than the one held"
        assert self.now <= max(e.surely_dead_after for e in (self.entry, before) if e) + EPS, (
            "served past max_stale"
        )

    def reject(self, key: str) -> None:
        self.verdicts.setdefault(key, "new")
        if self.best == key:
            self.best = None

    # ------------------------------------------------------------------ rules

    @rule()
    def get(self) -> None:
        entry = self.entry
        change = self.change_may_fetch()
        fetched, key, raised = self.call("get")
        if entry is not None and self.now < entry.surely_fresh_until - EPS:
            assert not fetched or change, "backend called while the key was fresh"
            assert key is not None
            assert_key_is(key, entry.key)
        if (
            entry is not None
            and self.now >= entry.surely_expired_from + EPS
            and not self.backoff_may_run()
        ):
            assert fetched, "expired, out of backoff, yet no backend call"
        self.record_attempt(fetched, change=change)
        if raised:
            usable = entry is not None and self.now <= entry.surely_usable_until - EPS
            assert not usable, "raised while a usable key was held"
        else:
            assert key is not None
        self.check_served(key, entry)

    @rule(which=st.sampled_from(["none", "current", "older"]), pick=st.integers(0, 1000))
    def refresh(self, which: str, pick: int) -> None:
        entry = self.entry
        rejected: str | None = None
        if which == "current" and entry is not None:
            rejected = entry.key
        elif which == "older" and len(self.issued) > 1:
            rejected = self.issued[pick % (len(self.issued) - 1)]
        verdict = self.verdicts.get(rejected, "new") if rejected is not None else None
        if rejected is not None:
            self.reject(rejected)
        if entry is None:
            fetched, key, raised = self.call("refresh", rejected)
            if rejected is not None and verdict == "new":
                # Nothing cached, yet every rejected key earns one forced fetch, at once.
                assert fetched, "a newly rejected key did not get its forced fetch"
                self.last_forced_at = self.now
                self.forced_at.append(self.now)
                self.record_attempt(fetched, forced_for=rejected, forced=True)
                assert raised == bool(self.provider.fail)
            else:
                # Nothing cached: refresh behaves as get().
                self.record_attempt(fetched)
                assert raised or key is not None
            self.check_served(key, entry)
            return
        held_good = entry.key not in self.verdicts
        fetched, key, raised = self.call("refresh", rejected)
        surely_usable = self.now <= entry.surely_usable_until - EPS
        surely_dead = self.now > entry.surely_dead_after + EPS
        if rejected is not None and rejected != entry.key and held_good and surely_usable:
            # A different usable key the API has not rejected is held: no backend call.
            assert not fetched and not raised
            assert key is not None
            assert_key_is(key, entry.key)
            self.check_served(key, entry)
            return
        if rejected is not None and verdict == "new" and not (rejected != entry.key and held_good):
            # Every rejected key earns one forced fetch, at once.
            assert fetched, "a newly rejected key did not get its forced fetch"
        forced = self.cache.stats.forced_fetches > len(self.forced_at)
        if fetched and not forced:
            # Held back (interval or backoff) with the key past its stale window: the
            # refresh does what get() does there, a TTL fetch.
            assert not surely_usable, "a held-back refresh fetched while a usable key was held"
            recently = (
                verdict != "failed"
                and self.last_forced_at is not None
                and self.now - self.last_forced_at < MIN_REFRESH - EPS
            )
            assert recently or self.backoff_may_run(), "a refresh that could force did not"
            self.record_attempt(fetched)
            assert raised == bool(self.provider.fail)
        elif fetched:
            if verdict not in ("new", "failed") and self.last_forced_at is not None:
                assert self.now - self.last_forced_at >= MIN_REFRESH - EPS, (
                    "a key already refetched was forced again within min_refresh_interval"
                )
            if verdict not in ("new",):
                assert not self.backoff_surely_runs(), "forced fetch within a backoff step"
            self.last_forced_at = self.now
            self.forced_at.append(self.now)
            self.record_attempt(fetched, forced_for=rejected, forced=True)
            # A forced fetch that fails raises to its caller; one that works returns it.
            assert raised == bool(self.provider.fail)
        elif rejected is not None and rejected != entry.key and held_good and not surely_dead:
            # Near the edge of the stale window: the different key, or the error.
            if not raised:
                assert key is not None
                assert_key_is(key, entry.key)
        else:
            recently = (
                verdict != "failed"
                and self.last_forced_at is not None
                and self.now - self.last_forced_at < MIN_REFRESH - EPS
            )
            assert recently or self.backoff_may_run(), "forced refresh skipped without reason"
            if surely_dead:
                assert raised, "refresh() handed out a key past its stale window"
            elif surely_usable:
                assert not raised and key is not None
                assert_key_is(key, entry.key)
        self.check_served(key, entry)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 5.0, 9.0, 30.0, 47.0, 61.0, 130.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def rotate(self) -> None:
        self.provider.value = self.new_key()
        self.write_source()

    @precondition(lambda self: len(self.issued) > 1)
    @rule(pick=st.integers(0, 1000), rejected_one=st.booleans())
    def revert(self, pick: int, rejected_one: bool) -> None:
        # The source serves an older key again (a caching replica behind it), often one
        # the API rejected.
        pool = sorted(self.verdicts) if rejected_one and self.verdicts else self.issued
        self.provider.value = pool[pick % len(pool)]
        self.write_source()

    @precondition(lambda self: not self.provider.fail)
    @rule()
    def fail_backend(self) -> None:
        self.provider.fail = True
        self.write_source()  # a source that cannot be read (a file being replaced)

    @precondition(lambda self: bool(self.provider.fail))
    @rule()
    def recover_backend(self) -> None:
        self.provider.fail = False
        self.write_source()

    @rule()
    def invalidate(self) -> None:
        self.cache.invalidate()
        self.entry = None
        self.best = None
        self.first = True
        self.kept_in_a_row = 0
        self.failures = 0
        self.last_failure_at = None

    # ------------------------------------------------------------------ invariants

    @invariant()
    def stats_match_the_backend(self) -> None:
        stats = self.cache.stats
        assert stats.fetches == self.provider.fetches
        assert stats.forced_fetches == len(self.forced_at)
        assert stats.consecutive_failures == self.failures

    @invariant()
    def peek_is_the_key_held(self) -> None:
        peeked = self.cache.peek()
        if self.entry is None:
            assert peeked is None
        else:
            assert peeked is not None
            assert_key_is(peeked, self.entry.key)

    @invariant()
    def the_hot_path_never_serves_past_expiry(self) -> None:
        entry = self.cache._state.entry
        if entry is not None:
            assert entry.until <= entry.expires_at, "served past expiry without a decision"

    @invariant()
    def never_steps_back_from_a_key_the_api_accepts(self) -> None:
        if self.best is not None:
            peeked = self.cache.peek()
            assert peeked == ApiKey(self.best), (
                "serves another key while a key the API has not rejected is held"
            )


CacheMachine.TestCase.settings = SETTINGS
TestKeyCacheStateMachine = CacheMachine.TestCase


# ---------------------------------------------------------------------------- pinned findings


@pytest.mark.parametrize("rejected", [False, True])
def test_refresh_in_backoff_past_the_stale_window_raises(rejected: bool) -> None:
    provider = MemoryProvider("scl_live_stalewindow0123456789")
    clock = FakeClock()
    cache = KeyCache(
        provider,
        ttl=60,
        jitter=0,
        refresh_ahead=0,
        max_stale=10,
        backoff_initial=100,
        backoff_max=100,
        clock=clock,
    )
    key = cache.get()
    provider.fail = True
    clock.advance(65)
    assert cache.get() == key  # stale, within the window; the backend is in backoff now
    clock.advance(10)  # past expiry + max_stale
    with pytest.raises(ProviderError):
        cache.get()
    with pytest.raises(ProviderError):
        cache.refresh(rejected=key if rejected else None)
