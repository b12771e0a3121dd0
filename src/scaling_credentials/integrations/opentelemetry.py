"""OpenTelemetry metrics for a :class:`~scaling_credentials.KeyCache` (extra ``[otel]``).

Quick start::

    from scaling_credentials import ScalingAuth
    from scaling_credentials.integrations.opentelemetry import instrument

    auth = ScalingAuth()
    instrumentation = instrument(auth)  # the global MeterProvider, or meter_provider=...

The instruments, in the meter ``scaling_credentials`` (with the library's version), named
after the OpenTelemetry semantic conventions; each has the attribute
``scaling_credentials.source``:

* ``scaling_credentials.cache.fetches`` (counter, ``{fetch}``): reads of the source, by
  ``scaling_credentials.fetch.trigger`` (``ttl``, ``refresh-ahead``, ``forced``,
  ``change``) and ``scaling_credentials.fetch.outcome`` (``ok``, ``error``; with
  ``error.type`` on errors);
* ``scaling_credentials.cache.key_changes`` (counter, ``{change}``): the key in use
  changed (a rotation picked up), by ``scaling_credentials.fetch.trigger``;
* ``scaling_credentials.cache.rejections`` (counter, ``{rejection}``): the Scaling API
  rejected a key the cache served;
* ``scaling_credentials.cache.stale_serves`` (counter, ``{serve}``): reads served an
  expired key because the source is failing;
* ``scaling_credentials.cache.skipped_refreshes`` (counter, ``{refresh}``): forced
  refreshes not sent to the source, by ``scaling_credentials.refresh.skip_reason``
  (``interval``, ``backoff``);
* ``scaling_credentials.cache.key.age`` (observable gauge, ``s``): seconds since the key in
  use was read from its source (:attr:`KeyCache.key_age`).

Counts come from :meth:`KeyCache.subscribe`: a cache hit records nothing (the read path
is untouched). No attribute ever holds key material: the source is its scheme (``file``,
``aws-sm``, ``vault``, ...) unless ``full_source=True`` asks for its whole description.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, MutableMapping
from typing import Final

try:
    from opentelemetry import metrics
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "scaling_credentials.integrations.opentelemetry needs the OpenTelemetry API: "
        "pip install 'scaling-credentials[otel]'",
        name=exc.name,
    ) from exc

from scaling_credentials import (
    CacheEvent,
    ChainProvider,
    ConfigurationError,
    KeyCache,
    Provider,
    __version__,
)
from scaling_credentials.toolkit import redact

__all__ = ["Instrumentation", "instrument", "source_attribute"]

SCOPE: Final = "scaling_credentials"  # the meter (instrumentation scope) name

# Attribute keys.
SOURCE: Final = "scaling_credentials.source"
TRIGGER: Final = "scaling_credentials.fetch.trigger"
OUTCOME: Final = "scaling_credentials.fetch.outcome"
SKIP_REASON: Final = "scaling_credentials.refresh.skip_reason"
ERROR_TYPE: Final = "error.type"  # the semantic conventions' own

# Guards _by_provider. Held while a meter provider builds instruments, so never taken by
# the gauge's callback (an SDK calls it holding its own lock: that would deadlock).
_lock = threading.Lock()
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def source_attribute(provider: Provider, *, full: bool = False) -> str:
    """What the metrics say of ``provider``: its scheme (``file``, ``aws-sm``, ``vault``,
    ``chain(env,file)``; the class name for a description without one), or with ``full``
    its whole :meth:`~Provider.describe` (safe to log, but it may name paths and ARNs)."""
    if full:
        return redact(provider.describe())
    if isinstance(provider, ChainProvider):
        return "chain(" + ",".join(source_attribute(p) for p in provider.providers) + ")"
    try:
        description = provider.describe()
    except Exception:
        description = ""
    scheme, colon, _ = description.partition(":")
    if colon and _SCHEME.fullmatch(scheme):
        return scheme.lower()
    return type(provider).__name__


class _Instruments:
    """The instruments of one meter provider, shared by every cache instrumented with it
    (an SDK ignores the callbacks of an observable gauge registered twice under one name,
    so the one gauge reports every cache)."""

    def __init__(self, meter_provider: metrics.MeterProvider) -> None:
        meter = meter_provider.get_meter(SCOPE, __version__)
        self.fetches = meter.create_counter(
            "scaling_credentials.cache.fetches",
            unit="{fetch}",
            description="Fetches of the Scaling API key from its source, by trigger and outcome.",
        )
        self.key_changes = meter.create_counter(
            "scaling_credentials.cache.key_changes",
            unit="{change}",
            description="Times the key in use changed (a rotation picked up), by trigger.",
        )
        self.rejections = meter.create_counter(
            "scaling_credentials.cache.rejections",
            unit="{rejection}",
            description="Keys served by the cache that the Scaling API then rejected (401).",
        )
        self.stale_serves = meter.create_counter(
            "scaling_credentials.cache.stale_serves",
            unit="{serve}",
            description="Reads served an expired key because its source is failing.",
        )
        self.skipped_refreshes = meter.create_counter(
            "scaling_credentials.cache.skipped_refreshes",
            unit="{refresh}",
            description="Forced refreshes not sent to the source (min_refresh_interval, backoff).",
        )
        # id(cache) -> its instrumentation, which lives as long as the cache (the cache's
        # subscription holds it): a cache dropped without uninstrument() is not kept alive.
        self.active: MutableMapping[int, Instrumentation] = weakref.WeakValueDictionary()
        self.lock = threading.Lock()  # guards active; held for no call out
        meter.create_observable_gauge(
            "scaling_credentials.cache.key.age",
            callbacks=[self._observe_age],
            unit="s",
            description="Seconds since the key in use was read from its source.",
        )

    def _observe_age(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        with self.lock:
            instrumentations = list(self.active.values())
        oldest: dict[str, float] = {}  # caches reported alike: the oldest key counts
        for instrumentation in instrumentations:
            age = instrumentation.cache.key_age
            if age is not None:
                source = instrumentation.source
                oldest[source] = max(age, oldest.get(source, age))
        return [metrics.Observation(age, {SOURCE: source}) for source, age in oldest.items()]


# One _Instruments per meter provider (forgotten with it), and one for the global provider
# whichever it is: a proxy until set_meter_provider() is called, which then forwards.
_by_provider: MutableMapping[object, _Instruments] = weakref.WeakKeyDictionary()


class _Global:
    """The key of the global meter provider's instruments."""


_GLOBAL: Final = _Global()


class Instrumentation:
    """The metrics of one cache on one meter provider, as :func:`instrument` returns
    them. :meth:`uninstrument` stops them."""

    def __init__(self, cache: KeyCache, source: str, instruments: _Instruments) -> None:
        self.cache: Final = cache
        """The instrumented cache."""
        self.source: Final = source
        """The value of the ``scaling_credentials.source`` attribute."""
        self._instruments = instruments
        self._unsubscribe = cache.subscribe(self._record)
        self._active = True

    @property
    def active(self) -> bool:
        """Whether the metrics are still recorded (until :meth:`uninstrument`)."""
        return self._active

    def uninstrument(self) -> None:
        """Stop counting and stop reporting the key's age; calling it again does nothing."""
        instruments = self._instruments
        with instruments.lock:
            if not self._active:
                return
            self._active = False
            if instruments.active.get(id(self.cache)) is self:
                del instruments.active[id(self.cache)]
        self._unsubscribe()

    def __repr__(self) -> str:
        state = "active" if self._active else "stopped"
        return f"<Instrumentation {self.source} {state}>"

    def _record(self, event: CacheEvent) -> None:
        """Count one cache event (called by the cache, outside its lock)."""
        if not self._active:
            return  # an event delivered while uninstrument() ran
        instruments = self._instruments
        kind = event.kind
        attributes = {SOURCE: self.source}
        if kind == "fetched":
            attributes[TRIGGER] = event.trigger or "ttl"
            attributes[OUTCOME] = "ok"
            instruments.fetches.add(1, attributes)
        elif kind == "fetch_failed":
            attributes[TRIGGER] = event.trigger or "ttl"
            attributes[OUTCOME] = "error"
            attributes[ERROR_TYPE] = event.error or "Exception"
            instruments.fetches.add(1, attributes)
        elif kind == "key_changed":
            attributes[TRIGGER] = event.trigger or "ttl"
            instruments.key_changes.add(1, attributes)
        elif kind == "rejected":
            instruments.rejections.add(1, attributes)
        elif kind == "stale_served":
            instruments.stale_serves.add(1, attributes)
        elif kind == "refresh_skipped":
            attributes[SKIP_REASON] = event.trigger or "interval"
            instruments.skipped_refreshes.add(1, attributes)


def instrument(
    target: object,
    *,
    meter_provider: metrics.MeterProvider | None = None,
    full_source: bool = False,
) -> Instrumentation:
    """Record metrics for ``target``'s key cache on ``meter_provider``.

    ``target`` is a :class:`~scaling_credentials.KeyCache`, or anything whose ``.cache``
    is one (a :class:`~scaling_credentials.ScalingAuth`). ``meter_provider`` defaults to
    the global one (``opentelemetry.metrics.set_meter_provider``). ``full_source=True``
    reports the source's whole description instead of its scheme.

    Instrumenting a cache that is already instrumented on the same meter provider
    returns the :class:`Instrumentation` in place (nothing is counted twice); on another
    meter provider, each provider gets its own counts. Metrics never break a request: a
    meter that raises is reported once in the ``scaling_credentials.cache`` log.
    """
    cache = target if isinstance(target, KeyCache) else getattr(target, "cache", None)
    if not isinstance(cache, KeyCache):
        raise ConfigurationError(
            "instrument() takes a KeyCache or a ScalingAuth (anything with a .cache that is "
            f"a KeyCache), got {type(target).__name__}"
        )
    source = source_attribute(cache.provider, full=full_source)
    key = meter_provider if meter_provider is not None else _GLOBAL
    with _lock:
        instruments = _by_provider.get(key)
        if instruments is None:
            provider = meter_provider or metrics.get_meter_provider()
            instruments = _by_provider[key] = _Instruments(provider)
        with instruments.lock:
            existing = instruments.active.get(id(cache))
            if existing is None:
                existing = instruments.active[id(cache)] = Instrumentation(
                    cache, source, instruments
                )
    if existing.source != source:
        raise ConfigurationError(
            "this cache is already instrumented on this meter provider with source "
            f"{existing.source!r}; uninstrument() it first to change full_source"
        )
    return existing
