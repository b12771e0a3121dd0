"""The cache's decisions: how long a key lives, when one caller refreshes it ahead of
expiry, how long the backend rests after a failure, which rejected key earns a forced
fetch, and what a read or a refresh does now.

Nothing here reads a clock (``now`` is passed in), takes a lock (the cache holds its own
around every call), starts a thread or does I/O: :class:`Schedule` turns each event (a
read, a refresh, a finished fetch) into a typed action that the cache carries out.

How a key moves through the cache::

    fresh ──(refresh_at)──> one caller starts a background refresh, all are still served
      │  └─(check_at: the source's stamp changed)──> background refresh at once
      └──(expires_at)──> one fetch, every caller waits ──> fresh, or on failure
                                               stale within max_stale, with backoff

Rules for a key the API rejected (``refresh(rejected=key)``):

* a different usable key that the API has not rejected is held: it is the answer, no fetch;
* the first rejection of a key earns one forced fetch at once (coalesced), whatever the
  time since the last one, so rotations any distance apart cost no request;
* a key rejected again after its forced fetch returned it unchanged, and a refresh that
  names no key, are held to one forced fetch per ``min_refresh_interval`` (measured
  between forced fetches) and to the backend's backoff;
* never step back: a fetch that returns a key the API rejected, while a key it has not
  rejected is held, keeps the held key and asks the source again after a short, backed-off
  delay (caching extensions and agents, eventually consistent reads, replicas).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Hashable, MutableMapping
from datetime import timedelta
from typing import Final, Literal

from ._errors import ConfigurationError
from ._key import ApiKey
from ._options import seconds

__all__ = [
    "Action",
    "Check",
    "Entry",
    "Fail",
    "Failed",
    "Fetch",
    "FetchKind",
    "Join",
    "Kept",
    "Outcome",
    "Policy",
    "Refresh",
    "RefreshOutcome",
    "Schedule",
    "Serve",
    "Stored",
    "Verdict",
]

FetchKind = Literal["ttl", "refresh-ahead", "forced", "change"]
RefreshOutcome = Literal["fetched", "cached", "skipped-interval", "skipped-backoff", "rejected"]

# The lifetime after a fetch that a whole fleet makes at once (the first one after start,
# after a fork or invalidate(), and a forced fetch after a rotation) is spread this widely,
# so that the fleet falls out of step within one TTL (docs/scale.md).
FIRST_LIFETIME_LOW: Final = 0.1
# How many rejected keys the cache remembers (by fingerprint).
REMEMBERED_REJECTIONS: Final = 64


# The records below are plain classes with slots rather than NamedTuples: as cheap to
# build and to read, and almost free at import (a NamedTuple class costs ~0.2 ms to
# create: a Lambda function's cold start pays for every one).


class Policy:
    """The cache's settings, validated (seconds as floats)."""

    __slots__ = (
        "backoff_initial",
        "backoff_max",
        "check_interval",
        "fetch_timeout",
        "jitter",
        "max_stale",
        "min_refresh_interval",
        "refresh_ahead",
        "ttl",
    )

    def __init__(
        self,
        *,
        ttl: float,
        jitter: float,
        refresh_ahead: float,
        max_stale: float,
        min_refresh_interval: float,
        fetch_timeout: float,
        backoff_initial: float,
        backoff_max: float,
        check_interval: float,
    ) -> None:
        self.ttl = ttl
        self.jitter = jitter
        self.refresh_ahead = refresh_ahead
        self.max_stale = max_stale
        self.min_refresh_interval = min_refresh_interval
        self.fetch_timeout = fetch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.check_interval = check_interval

    @classmethod
    def build(
        cls,
        *,
        ttl: float | timedelta,
        jitter: float,
        refresh_ahead: float | timedelta | None,
        max_stale: float | timedelta,
        min_refresh_interval: float | timedelta,
        fetch_timeout: float | timedelta,
        backoff_initial: float | timedelta,
        backoff_max: float | timedelta,
        check_interval: float | timedelta,
    ) -> Policy:
        """Check every setting; :class:`ConfigurationError` names the wrong one."""
        ttl_s = seconds(ttl, "ttl", allow_zero=False)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        return cls(
            ttl=ttl_s,
            jitter=float(jitter),
            refresh_ahead=ttl_s / 10
            if refresh_ahead is None
            else seconds(refresh_ahead, "refresh_ahead"),
            max_stale=seconds(max_stale, "max_stale"),
            min_refresh_interval=seconds(min_refresh_interval, "min_refresh_interval"),
            fetch_timeout=seconds(fetch_timeout, "fetch_timeout", allow_zero=False),
            backoff_initial=seconds(backoff_initial, "backoff_initial"),
            backoff_max=seconds(backoff_max, "backoff_max"),
            check_interval=seconds(check_interval, "check_interval"),
        )

    def lifetime(self, rng: random.Random, *, first: bool) -> float:
        """An entry's lifetime: ``ttl`` scaled by a random factor in ``[1 - jitter, 1]``;
        after a fetch the whole fleet makes at once (``first``), and with jitter, in
        ``[0.1, 1]``."""
        low = 1.0 - self.jitter
        if first and self.jitter > 0:
            low = min(low, FIRST_LIFETIME_LOW)
        return self.ttl * rng.uniform(low, 1.0)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The rest after the ``attempt``-th failure in a row: ``backoff_initial`` doubling
        up to ``backoff_max``, scaled by a random factor in ``[0.5, 1]``."""
        step = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt - 1, 30))
        return step * rng.uniform(0.5, 1.0)


class Entry:
    """The key held, and when something next needs doing about it. ``until`` is the
    earliest of ``refresh_at`` and ``check_at``: before it, a read is served at once with
    no decision to make (the hot path compares the clock with it, nothing else).
    Never changed once built: the schedule replaces the whole entry."""

    __slots__ = ("check_at", "expires_at", "fetched_at", "key", "refresh_at", "stamp", "until")

    def __init__(
        self,
        key: ApiKey,
        fetched_at: float,
        expires_at: float,
        refresh_at: float,
        check_at: float,
        stamp: Hashable | None,
    ) -> None:
        self.key = key
        self.fetched_at = fetched_at
        self.expires_at = expires_at
        self.refresh_at = refresh_at
        self.check_at = check_at
        self.stamp = stamp
        self.until = min(refresh_at, check_at)


# ---------------------------------------------------------------------- actions
# Plain classes with slots too, for the same reason as the records above.


class Serve:
    """Answer with ``key`` now. ``stale``: past its expiry, served because the backend is
    failing. ``outcome``: for a refresh, whether the source was asked."""

    __slots__ = ("key", "outcome", "stale")

    def __init__(
        self, key: ApiKey, stale: bool = False, outcome: RefreshOutcome = "cached"
    ) -> None:
        self.key = key
        self.stale = stale
        self.outcome: RefreshOutcome = outcome


class Refresh:
    """Answer with ``key`` now, and start a background fetch that nobody waits for."""

    __slots__ = ("key", "kind")

    def __init__(self, key: ApiKey, kind: FetchKind) -> None:
        self.key = key
        self.kind: FetchKind = kind


class Check:
    """Answer with ``key`` now, after asking the provider for its stamp (outside the
    lock) and reporting it with :meth:`Schedule.on_stamp`."""

    __slots__ = ("key", "stamp")

    def __init__(self, key: ApiKey, stamp: Hashable | None) -> None:
        self.key = key
        self.stamp = stamp


class Fetch:
    """Start a fetch and wait for it (``rejected``: the key whose rejection forced it)."""

    __slots__ = ("kind", "rejected")

    def __init__(self, kind: FetchKind, rejected: ApiKey | None = None) -> None:
        self.kind: FetchKind = kind
        self.rejected = rejected


class Join:
    """Wait for the fetch in flight. ``stale_ok``: when it fails, a usable stale key is
    the answer; ``replan``: when it ends, decide again (it was not the fetch asked for)."""

    __slots__ = ("replan", "stale_ok")

    def __init__(self, stale_ok: bool, replan: bool = False) -> None:
        self.stale_ok = stale_ok
        self.replan = replan


class Fail:
    """Raise the last backend error (the backend is resting and no usable key is held)."""

    __slots__ = ()


Action = Serve | Refresh | Check | Fetch | Join | Fail


# ---------------------------------------------------------------------- outcomes


class Stored:
    """A fetch returned ``key`` and it is now held (``previous``: the key held before)."""

    __slots__ = ("key", "previous")

    def __init__(self, key: ApiKey, previous: ApiKey | None) -> None:
        self.key = key
        self.previous = previous


class Kept:
    """A fetch returned ``refused``, a key the API rejected before, while ``held`` (not
    rejected) was held: ``held`` stays; the source is asked again in ``retry_in`` s."""

    __slots__ = ("first_time", "held", "refused", "retry_in")

    def __init__(self, held: ApiKey, refused: ApiKey, retry_in: float, first_time: bool) -> None:
        self.held = held
        self.refused = refused
        self.retry_in = retry_in
        self.first_time = first_time


class Failed:
    """A fetch failed: the ``attempt``-th failure in a row; the backend rests ``retry_in``
    seconds; ``fallback`` is the key still served (within max_stale), if any."""

    __slots__ = ("attempt", "fallback", "retry_in", "stale_for")

    def __init__(
        self, attempt: int, retry_in: float, fallback: ApiKey | None, stale_for: float | None
    ) -> None:
        self.attempt = attempt
        self.retry_in = retry_in
        self.fallback = fallback
        self.stale_for = stale_for


Outcome = Stored | Kept | Failed


# ---------------------------------------------------------------------- rejected keys


class Verdict(enum.Enum):
    """What is known of a rejected key."""

    NEW = "new"  # rejected; its forced fetch has not started
    FORCED = "forced"  # its forced fetch is running
    STUCK = "stuck"  # its forced fetch returned it unchanged
    FAILED = "failed"  # its forced fetch failed
    REPLACED = "replaced"  # its forced fetch returned another key


class Rejection:
    """What the cache remembers of one rejected key (never the key itself)."""

    __slots__ = ("kept_logged", "suppressed", "verdict", "warned_at")

    def __init__(self) -> None:
        self.verdict = Verdict.NEW
        self.warned_at: float | None = None
        self.suppressed = 0
        self.kept_logged = False


# ---------------------------------------------------------------------- the schedule


class Schedule:
    """The cache's state and decisions. Every method is called with the cache's lock
    held and the cache's clock reading ``now``."""

    def __init__(self, policy: Policy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        self.entry: Entry | None = None  # the one place the key is held
        self.flight_kind: FetchKind | None = None
        self.flight_rejected: str | None = None  # fingerprint of a forced fetch's key
        self.failures = 0
        self.retry_at: float | None = None
        self.failed_stamp: Hashable | None = None  # the stamp the last failed fetch saw
        self.last_forced_at: float | None = None
        self.first = True  # the next lifetime is the first one: spread widely
        self.checks = False  # the provider has stamps: look at them on the read path
        self.kept_in_a_row = 0
        # Bounded, least recently used first out: real work for cachetools, which is
        # imported with the first rejection (most cold starts never see one).
        self.rejected: MutableMapping[str, Rejection] = {}

    # -- facts

    def in_backoff(self, now: float) -> bool:
        """Whether the backend is resting after a failure."""
        return self.retry_at is not None and now < self.retry_at

    def usable(self, now: float) -> ApiKey | None:
        """The held key while it may still be served (within ``max_stale`` of expiry)."""
        entry = self.entry
        if entry is not None and now <= entry.expires_at + self.policy.max_stale:
            return entry.key
        return None

    def is_rejected(self, key: ApiKey) -> bool:
        """Whether the API rejected ``key`` (as far as the cache remembers)."""
        return key.fingerprint in self.rejected

    def rejection(self, key: ApiKey) -> Rejection | None:
        """What is remembered of ``key``'s rejection, if anything."""
        return self.rejected.get(key.fingerprint)

    # -- decisions

    def on_read(self, now: float) -> Action:
        """A read (``get``): serve, refresh in the background, check, fetch or fail."""
        entry = self.entry
        if entry is not None and now < entry.expires_at:
            if now >= entry.refresh_at and self.flight_kind is None and not self.in_backoff(now):
                return Refresh(entry.key, "refresh-ahead")
            if now >= entry.check_at:
                # Claim this check: the next one is due an interval from now.
                check_at = now + self.policy.check_interval
                self.entry = Entry(
                    entry.key,
                    entry.fetched_at,
                    entry.expires_at,
                    entry.refresh_at,
                    check_at,
                    entry.stamp,
                )
                return Check(entry.key, entry.stamp)
            return Serve(entry.key)
        if self.flight_kind is not None:
            return Join(stale_ok=True)
        if self.in_backoff(now):
            stale = self.usable(now)
            return Serve(stale, stale=True) if stale is not None else Fail()
        return Fetch("ttl")

    def on_stamp(self, now: float, seen: Hashable | None, check: Check) -> Serve | Refresh:
        """The provider's stamp after ``check``: a change starts a background fetch at
        once (also while the backend rests: a change is news, and comes at most once a
        ``check_interval``). A change the failed fetch behind the rest already saw is no
        news: it is retried when the rest is over. No stamp (the provider cannot tell
        now, or its stamp raised) is no news either. Either way the key ``check`` served
        is the answer."""
        entry = self.entry
        if (
            entry is None
            or seen is None
            or seen == check.stamp
            or seen == entry.stamp
            or self.flight_kind is not None
            or (self.in_backoff(now) and seen == self.failed_stamp)
        ):
            return Serve(check.key)
        return Refresh(check.key, "change")

    def on_refresh(self, now: float, rejected: ApiKey | None) -> Action:
        """A forced refresh, after the API rejected ``rejected`` (or for no key)."""
        entry = self.entry
        dead = entry is not None and now > entry.expires_at + self.policy.max_stale
        record: Rejection | None = None
        if rejected is not None:
            record = self._remember(rejected)
            if (
                entry is not None
                and not dead
                and entry.key != rejected
                and not self.is_rejected(entry.key)
            ):
                return Serve(entry.key, outcome="cached")
        if self.flight_kind is not None:
            if rejected is None:
                return Join(stale_ok=self.flight_kind != "forced")
            if self.flight_kind == "forced" and self.flight_rejected == rejected.fingerprint:
                return Join(stale_ok=False)
            return Join(stale_ok=True, replan=True)
        if record is not None and record.verdict is Verdict.NEW:
            return Fetch("forced", rejected)  # every rejected key earns one forced fetch
        if entry is None:
            return self.on_read(now)
        recently = (
            self.last_forced_at is not None
            and now - self.last_forced_at < self.policy.min_refresh_interval
        )
        if record is not None and record.verdict is Verdict.FAILED:
            recently = False  # its forced fetch failed: only the backoff holds it back
        backoff = self.in_backoff(now)
        if dead and (recently or backoff):
            return self.on_read(now)  # fails while resting: never hand out a dead key
        if recently or backoff:
            return Serve(entry.key, outcome="skipped-interval" if recently else "skipped-backoff")
        return Fetch("forced", rejected)

    # -- bookkeeping

    def started(self, now: float, kind: FetchKind, rejected: ApiKey | None) -> None:
        """A fetch of ``kind`` started."""
        self.flight_kind = kind
        self.flight_rejected = rejected.fingerprint if rejected is not None else None
        self.started_aside(now, kind, rejected)

    def started_aside(self, now: float, kind: FetchKind, rejected: ApiKey | None) -> None:
        """A fetch of ``kind`` started beside the one in flight (a caller's own, when
        waiting for that one would block the caller's loop): it is not the flight, but a
        forced one is the rejected key's forced fetch all the same."""
        if kind == "forced":
            self.last_forced_at = now
            if rejected is not None:
                self._remember(rejected).verdict = Verdict.FORCED

    def ended(self) -> None:
        """The fetch in flight is over (or no longer waited for); its outcome, if any, is
        reported separately."""
        self.flight_kind = None
        self.flight_rejected = None

    def failed(
        self,
        now: float,
        rejected: ApiKey | None,
        *,
        count: bool = True,
        stamp: Hashable | None = None,
    ) -> Failed:
        """The fetch failed (``count``: a backend failure that earns a rest; ``stamp``:
        the provider's stamp taken before it)."""
        if rejected is not None:
            record = self.rejected.get(rejected.fingerprint)
            if record is not None and record.verdict is Verdict.FORCED:
                record.verdict = Verdict.FAILED
        if count:
            self.failures += 1
            self.retry_at = now + self.policy.backoff(self.failures, self.rng)
            self.failed_stamp = stamp
        entry = self.entry
        return Failed(
            attempt=self.failures,
            retry_in=max(0.0, (self.retry_at or now) - now),
            fallback=self.usable(now),
            stale_for=None if entry is None else now - entry.expires_at,
        )

    def succeeded(
        self,
        now: float,
        key: ApiKey,
        rejected: ApiKey | None,
        stamp: Hashable | None,
        *,
        forced: bool = False,
    ) -> Outcome:
        """The fetch returned ``key`` (the provider's ``stamp`` taken before it;
        ``forced``: a forced fetch, which a fleet makes all at once after a rotation)."""
        self.failures = 0
        self.retry_at = None
        if rejected is not None:
            record = self.rejected.get(rejected.fingerprint)
            if record is not None:
                record.verdict = Verdict.STUCK if key == rejected else Verdict.REPLACED
        held = self.entry
        lifetime = self.policy.lifetime(self.rng, first=self.first or forced)
        self.first = False
        refused = self.rejected.get(key.fingerprint)
        if (
            refused is not None
            and held is not None
            and held.key != key
            and not self.is_rejected(held.key)
        ):
            # Never step back to a key the API rejected: keep the held one, ask again soon.
            # The source was read at ``stamp``: only a change from there is news.
            self.kept_in_a_row += 1
            expires_at = max(held.expires_at, now + lifetime)
            # Never served past its expiry without asking the source.
            delay = min(self.policy.backoff(self.kept_in_a_row, self.rng), expires_at - now)
            self.entry = Entry(
                held.key,
                held.fetched_at,
                expires_at,
                now + delay,
                held.check_at,
                stamp,
            )
            first_time, refused.kept_logged = not refused.kept_logged, True
            return Kept(held.key, key, delay, first_time)
        self.kept_in_a_row = 0
        ahead = min(self.policy.refresh_ahead, lifetime / 2)
        check_at = now + self.policy.check_interval if self.checks else float("inf")
        self.entry = Entry(key, now, now + lifetime, now + lifetime - ahead, check_at, stamp)
        return Stored(key, held.key if held is not None else None)

    def forget(self) -> None:
        """``invalidate()``: drop the key and the failure state (rejections stay known)."""
        self.entry = None
        self.failures = 0
        self.retry_at = None
        self.first = True

    def note_stuck(self, now: float, key: ApiKey, every: float) -> int | None:
        """A request failed because ``key`` is still the best the source has: ``None``
        when a warning was given for it less than ``every`` seconds ago (counted as
        suppressed), else the number suppressed since the last warning (the caller warns)."""
        record = self._remember(key)
        if record.warned_at is not None and now - record.warned_at < every:
            record.suppressed += 1
            return None
        suppressed, record.suppressed, record.warned_at = record.suppressed, 0, now
        return suppressed

    def _remember(self, key: ApiKey) -> Rejection:
        fingerprint = key.fingerprint
        record = self.rejected.get(fingerprint)
        if record is None:
            if not self.rejected:
                import cachetools

                self.rejected = cachetools.LRUCache(maxsize=REMEMBERED_REJECTIONS)
            record = Rejection()
            self.rejected[fingerprint] = record
        return record
