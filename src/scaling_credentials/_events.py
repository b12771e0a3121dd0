"""Cache events for metrics and alerts: what happened, delivered to subscribers outside
the cache's lock. A subscriber that raises is reported once and never breaks a request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple

from ._fork import after_fork
from ._redact import get_logger

__all__ = ["CacheEvent", "EventKind", "Subscribers"]

logger: logging.Logger = get_logger("scaling_credentials.cache")

EventKind = Literal[
    "fetched", "key_changed", "fetch_failed", "stale_served", "rejected", "refresh_skipped"
]


class CacheEvent(NamedTuple):
    """Something that happened in a :class:`KeyCache`, for metrics and alerts.

    * ``kind``: ``fetched`` (a fetch returned a key), ``key_changed`` (the key held
      changed), ``fetch_failed`` (a fetch failed or timed out), ``stale_served`` (an
      expired key was served because the backend is failing), ``rejected`` (the API
      rejected a key this cache served), ``refresh_skipped`` (a forced refresh was not
      sent to the source: within ``min_refresh_interval`` or during backoff).
    * ``source``: the provider's description (safe to log).
    * ``key``: the key concerned, masked (``scl_live_****abcd``), or ``None``.
    * ``version``: that key's version in its source, when known.
    * ``duration``: seconds the fetch took (fetch events only).
    * ``error``: the error's type name (``fetch_failed`` only).
    * ``trigger``: what caused a fetch (``ttl``, ``refresh-ahead``, ``forced``,
      ``change``), or why a refresh was skipped (``interval``, ``backoff``).
    """

    kind: EventKind
    source: str
    key: str | None = None
    version: str | None = None
    duration: float | None = None
    error: str | None = None
    trigger: str | None = None


Callback = Callable[[CacheEvent], object]


class Subscribers:
    """The callbacks of one cache. Subscribing and unsubscribing replace a tuple, so
    delivery iterates without a lock."""

    def __init__(self) -> None:
        self._callbacks: tuple[Callback, ...] = ()
        self._lock = threading.Lock()
        self._reported: set[int] = set()
        after_fork(self, Subscribers._after_fork)

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def add(self, callback: Callback) -> Callable[[], None]:
        """Subscribe ``callback``; returns the function that unsubscribes it."""
        if not callable(callback):
            raise TypeError(f"subscribe takes a callable, got {type(callback).__name__}")
        with self._lock:
            self._callbacks = (*self._callbacks, callback)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = list(self._callbacks)
                if callback in callbacks:
                    callbacks.remove(callback)
                self._callbacks = tuple(callbacks)

        return unsubscribe

    def deliver(self, events: Iterable[CacheEvent]) -> None:
        """Give each event to each subscriber (call with no lock held)."""
        callbacks = self._callbacks
        if not callbacks:
            return
        for event in events:
            for callback in callbacks:
                try:
                    callback(event)
                except Exception as exc:
                    self._report(callback, exc)

    def _after_fork(self) -> None:
        # A thread (un)subscribing at the fork would hold the lock forever in the child.
        self._lock = threading.Lock()

    def _report(self, callback: Callback, exc: Exception) -> None:
        with self._lock:
            first = id(callback) not in self._reported
            self._reported.add(id(callback))
        if first:
            logger.warning(
                "a KeyCache subscriber (%s) raised %s; it keeps being called, and this is "
                "reported once",
                getattr(callback, "__qualname__", type(callback).__name__),
                type(exc).__name__,
            )
