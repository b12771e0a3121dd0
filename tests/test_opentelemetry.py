"""OpenTelemetry metrics (scaling_credentials.integrations.opentelemetry), read back with
the SDK's in-memory reader: a rotation through ScalingAuth against FakeScalingAPI over
sockets with a key file swapped like a secret volume, an outage with a fake clock, exact
counts, no key material in any attribute, the key-age gauge, uninstrument(), a broken
meter provider, and nothing recorded for a cache hit."""

from __future__ import annotations

import gc
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.metrics import NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

import scaling_credentials
from scaling_credentials import (
    CacheEvent,
    ChainProvider,
    ConfigurationError,
    EnvProvider,
    FileProvider,
    KeyCache,
    Provider,
    ProviderError,
    ScalingAuth,
)
from scaling_credentials.integrations.opentelemetry import (
    Instrumentation,
    instrument,
    source_attribute,
)
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    FaultyProvider,
    MemoryProvider,
    SecretVolume,
    rotate_and_revoke,
)
from scaling_credentials.testing.provider_suite import assert_no_secret

K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"

FETCHES = "scaling_credentials.cache.fetches"
KEY_CHANGES = "scaling_credentials.cache.key_changes"
REJECTIONS = "scaling_credentials.cache.rejections"
STALE = "scaling_credentials.cache.stale_serves"
SKIPPED = "scaling_credentials.cache.skipped_refreshes"
AGE = "scaling_credentials.cache.key.age"
SOURCE = "scaling_credentials.source"
TRIGGER = "scaling_credentials.fetch.trigger"
OUTCOME = "scaling_credentials.fetch.outcome"

Points = dict[tuple[str, frozenset[tuple[str, Any]]], float]


def collect(reader: InMemoryMetricReader) -> Points:
    """Every data point, keyed by (metric name, attributes); checks the scope on the way."""
    data = reader.get_metrics_data()
    return points(data)


def points(data: MetricsData | None) -> Points:
    found: Points = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "scaling_credentials"
            assert scope.scope.version == scaling_credentials.__version__
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = frozenset((point.attributes or {}).items())
                    found[(metric.name, attributes)] = point.value  # type: ignore[union-attr]
    return found


def value(found: Points, name: str, **attributes: str) -> float:
    """The point of ``name`` with exactly these attributes (dots spelled as __), else 0."""
    wanted = frozenset((k.replace("__", "."), v) for k, v in attributes.items())
    return found.get((name, wanted), 0)


def totals(found: Points) -> dict[str, float]:
    """Each counter's sum over all attribute sets."""
    sums: dict[str, float] = {}
    for (name, _), number in found.items():
        if name != AGE:
            sums[name] = sums.get(name, 0) + number
    return sums


def every_attribute_value(found: Points) -> list[str]:
    return [str(v) for (_, attributes) in found for (_, v) in attributes]


def assert_no_key_material(found: Points, *keys: str) -> None:
    texts = every_attribute_value(found)
    assert texts, "no attributes at all"
    assert not [text for text in texts if "scl_live_" in text]
    for key in keys:
        assert_no_secret(key.removeprefix("scl_live_"), *texts)


def memory_cache(value: str | None = K1, clock: FakeClock | None = None) -> KeyCache:
    """A cache of an in-memory source (``memory:memory``), on a fake clock."""
    return KeyCache(MemoryProvider(value), ttl=60, jitter=0, clock=clock or FakeClock())


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


# --------------------------------------------------------------------------- a rotation


def test_a_rotation_through_scaling_auth_is_counted_without_key_material(
    scaling_api: FakeScalingAPI,
    tmp_path: Path,
    reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
) -> None:
    volume = SecretVolume(tmp_path)
    first = scaling_api.issue_key()
    volume.write(first)
    clock = FakeClock()
    cache = KeyCache(FileProvider(str(volume.path)), ttl=300, clock=clock)
    auth = ScalingAuth(cache)
    changed = threading.Event()
    instrumentation = instrument(auth, meter_provider=meter_provider)
    cache.subscribe(lambda e: changed.set() if e.kind == "key_changed" else None)
    assert instrumentation.cache is cache and instrumentation.source == "file"

    with httpx.Client(base_url=scaling_api.url, auth=auth) as client:
        assert client.get("/oncall/schedules").status_code == 200
        # The runbook's order, and the old key revoked before the file swap is noticed:
        # one 401, one forced fetch, the request resent with the new key.
        second = rotate_and_revoke(scaling_api, volume.write, first)
        response = client.get("/oncall/schedules")
        assert response.status_code == 200 and len(response.history) == 1
        # A second rotation, noticed by watching the file (a clock second later): no 401.
        changed.clear()
        third = scaling_api.rotate()
        volume.write(third)
        clock.advance(1.5)
        assert client.get("/oncall/schedules").status_code == 200
        assert changed.wait(10), "the file change was not picked up"
        scaling_api.revoke(second)
        response = client.get("/oncall/schedules")
        assert response.status_code == 200 and not response.history

    found = collect(reader)
    src = {"scaling_credentials__source": "file"}
    assert value(found, FETCHES, **src, **ok("ttl")) == 1
    assert value(found, FETCHES, **src, **ok("forced")) == 1
    assert value(found, FETCHES, **src, **ok("change")) == 1
    assert value(found, KEY_CHANGES, **src, scaling_credentials__fetch__trigger="forced") == 1
    assert value(found, KEY_CHANGES, **src, scaling_credentials__fetch__trigger="change") == 1
    assert value(found, REJECTIONS, **src) == 1
    assert totals(found) == {FETCHES: 3, KEY_CHANGES: 2, REJECTIONS: 1}
    assert value(found, AGE, **src) == 0  # fetched at this clock reading
    clock.advance(42)
    assert value(collect(reader), AGE, **src) == 42
    assert_no_key_material(found, first, second, third)
    for key in (first, second, third):
        assert_no_secret(key, repr(instrumentation))


def ok(trigger: str) -> dict[str, str]:
    return {
        "scaling_credentials__fetch__trigger": trigger,
        "scaling_credentials__fetch__outcome": "ok",
    }


# --------------------------------------------------------------------------- an outage


def test_an_outage_is_counted_exactly_and_the_key_ages(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    clock = FakeClock()
    backend = FaultyProvider(MemoryProvider(K1), clock=clock)
    cache = KeyCache(
        backend,
        ttl=60,
        jitter=0,
        refresh_ahead=0,
        max_stale=100,
        backoff_initial=10,
        backoff_max=10,
        clock=clock,
    )
    instrument(cache, meter_provider=meter_provider)
    key = cache.get()
    backend.fail = True
    clock.advance(61)
    for _ in range(5):
        assert cache.get() == key  # the first read's refetch fails; all five are stale
    assert cache.refresh() == key  # during backoff: skipped, the stale key returned
    found = collect(reader)
    src = {"scaling_credentials__source": "memory"}
    error = {**src, "scaling_credentials__fetch__trigger": "ttl", "error__type": "ProviderError"}
    assert value(found, FETCHES, **src, **ok("ttl")) == 1
    assert value(found, FETCHES, **error, scaling_credentials__fetch__outcome="error") == 1
    assert value(found, STALE, **src) == 5
    assert value(found, SKIPPED, **src, scaling_credentials__refresh__skip_reason="backoff") == 1
    assert totals(found) == {FETCHES: 2, STALE: 5, SKIPPED: 1}
    assert value(found, AGE, **src) == 61
    stats = cache.stats
    assert (stats.fetches, stats.errors, stats.stale_serves) == (2, 1, 5)

    # Past the stale window the error surfaces; the held key keeps ageing in the gauge.
    clock.advance(100)
    with pytest.raises(ProviderError):
        cache.get()
    found = collect(reader)
    assert value(found, FETCHES, **error, scaling_credentials__fetch__outcome="error") == 2
    assert value(found, AGE, **src) == 161

    # The backend returns: one ttl fetch, the age starts again.
    backend.fail = False
    clock.advance(10)
    assert cache.get() == key
    found = collect(reader)
    assert value(found, FETCHES, **src, **ok("ttl")) == 2
    assert value(found, AGE, **src) == 0
    assert value(found, KEY_CHANGES, **src, scaling_credentials__fetch__trigger="ttl") == 0
    assert_no_key_material(found, K1)


def test_a_key_the_source_still_holds_is_counted_as_a_skipped_refresh(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    cache = memory_cache()
    instrument(cache, meter_provider=meter_provider)
    key = cache.get()
    for _ in range(3):
        cache.refresh(rejected=key)  # a stuck key: one forced fetch, then the interval
    found = collect(reader)
    src = {"scaling_credentials__source": "memory"}
    assert value(found, REJECTIONS, **src) == 3
    assert value(found, FETCHES, **src, **ok("forced")) == 1
    assert value(found, SKIPPED, **src, scaling_credentials__refresh__skip_reason="interval") == 2


# --------------------------------------------------------------------------- lifecycle


def test_uninstrument_stops_counting_and_the_gauge(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    cache = memory_cache()
    instrumentation = instrument(cache, meter_provider=meter_provider)
    cache.get()
    assert instrumentation.active
    instrumentation.uninstrument()
    instrumentation.uninstrument()  # idempotent
    assert not instrumentation.active
    cache.invalidate()
    cache.get()
    cache.refresh(rejected=cache.get())
    found = collect(reader)
    assert totals(found) == {FETCHES: 1}
    assert not [name for name, _ in found if name == AGE]
    # Instrumented again: a new instrumentation, counting from where the counter was.
    again = instrument(cache, meter_provider=meter_provider)
    assert again is not instrumentation and again.active
    cache.invalidate()
    cache.get()
    assert totals(collect(reader)) == {FETCHES: 2}


def test_instrumenting_a_cache_twice_on_one_provider_counts_once(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    cache = memory_cache()
    auth = ScalingAuth(cache)
    first = instrument(cache, meter_provider=meter_provider)
    assert instrument(auth, meter_provider=meter_provider) is first
    assert instrument(cache, meter_provider=meter_provider) is first
    other_reader = InMemoryMetricReader()
    other_provider = MeterProvider(metric_readers=[other_reader])
    try:
        other = instrument(cache, meter_provider=other_provider)
        assert other is not first
        cache.get()
        assert totals(collect(reader)) == {FETCHES: 1}
        assert totals(collect(other_reader)) == {FETCHES: 1}
    finally:
        other_provider.shutdown()
    with pytest.raises(ConfigurationError, match="already instrumented"):
        instrument(cache, meter_provider=meter_provider, full_source=True)


def test_two_caches_of_one_kind_report_the_oldest_key(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    clock = FakeClock()
    old = KeyCache(MemoryProvider(K1, name="a"), ttl=600, jitter=0, clock=clock)
    instrument(old, meter_provider=meter_provider)
    old.get()
    clock.advance(30)
    new = KeyCache(MemoryProvider(K2, name="b"), ttl=600, jitter=0, clock=clock)
    instrument(new, meter_provider=meter_provider)
    new.get()
    found = collect(reader)
    assert value(found, AGE, scaling_credentials__source="memory") == 30
    assert value(found, FETCHES, scaling_credentials__source="memory", **ok("ttl")) == 2


def test_a_cache_dropped_without_uninstrument_is_not_kept_alive(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    import weakref

    cache = memory_cache()
    instrument(cache, meter_provider=meter_provider)
    cache.get()
    alive = weakref.ref(cache)
    del cache
    gc.collect()
    assert alive() is None
    assert not [name for name, _ in collect(reader) if name == AGE]


def test_instrumenting_while_metrics_are_collected_in_another_thread(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []

    def collect_until_stopped() -> None:
        try:
            for _ in range(10_000):
                if stop.is_set():
                    return
                reader.collect()
        except BaseException as exc:
            failures.append(exc)

    collector = threading.Thread(target=collect_until_stopped)
    collector.start()
    try:
        for _ in range(200):
            cache = memory_cache()
            instrumentation = instrument(cache, meter_provider=meter_provider)
            cache.get()
            instrumentation.uninstrument()
    finally:
        stop.set()
        collector.join(timeout=30)
    assert not collector.is_alive() and failures == []
    assert totals(collect(reader)) == {FETCHES: 200}


def test_the_global_meter_provider_is_used_by_default() -> None:
    code = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from scaling_credentials import KeyCache
from scaling_credentials.integrations.opentelemetry import instrument
from scaling_credentials.testing import MemoryProvider

cache = KeyCache(MemoryProvider("scl_live_firstkey0123456789abcd"), ttl=60)
first = instrument(cache)  # before the provider is set: through the API's proxy
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
assert instrument(cache) is first  # still the global provider: not counted twice
cache.get()
(metric,) = [
    m
    for r in reader.get_metrics_data().resource_metrics
    for s in r.scope_metrics
    for m in s.metrics
    if m.name == "scaling_credentials.cache.fetches"
]
print(sum(p.value for p in metric.data.data_points))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


# --------------------------------------------------------------------------- the source


class _Described(Provider):
    def __init__(self, description: str) -> None:
        self.description = description

    def describe(self) -> str:
        return self.description

    def fetch(self) -> Any:  # pragma: no cover - never fetched
        raise NotImplementedError


def test_the_source_is_reported_by_scheme_unless_asked_for_in_full(tmp_path: Path) -> None:
    path = tmp_path / "secret" / "api-key"
    file = FileProvider(str(path))
    assert source_attribute(file) == "file"
    assert source_attribute(file, full=True) == f"file:{path}"
    assert source_attribute(EnvProvider("X")) == "env"
    assert source_attribute(ChainProvider(EnvProvider("X"), file)) == "chain(env,file)"
    assert source_attribute(_Described("aws-sm:arn:aws:secretsmanager:eu:1:secret:x")) == "aws-sm"
    assert source_attribute(_Described("my store, /path/x")) == "_Described"
    # A description that is not what it should be never reaches an attribute.
    hostile = _Described(K1)
    assert source_attribute(hostile) == "_Described"
    assert_no_secret(K1, source_attribute(hostile, full=True))
    hostile.description = f"vault:{K1}"
    assert source_attribute(hostile) == "vault"


def test_full_source_reports_the_description(
    tmp_path: Path, reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    path = tmp_path / "api-key"
    path.write_text(K1)
    path.chmod(0o400)
    cache = KeyCache(FileProvider(str(path)), ttl=60, clock=FakeClock())
    instrument(cache, meter_provider=meter_provider, full_source=True)
    cache.get()
    found = collect(reader)
    assert value(found, FETCHES, scaling_credentials__source=f"file:{path}", **ok("ttl")) == 1
    assert_no_key_material(found, K1)


def test_a_target_without_a_cache_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"KeyCache or a ScalingAuth.*got str"):
        instrument("env:SCALING_API_KEY")


# --------------------------------------------------------------------------- failures


class _BrokenCounter:
    def add(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        raise RuntimeError("metrics backend down")


class _BrokenMeter(NoOpMeter):
    def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return _BrokenCounter()


class _BrokenMeterProvider(NoOpMeterProvider):
    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return _BrokenMeter(name)


def test_a_broken_meter_provider_never_breaks_a_request(
    scaling_api: FakeScalingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    first = scaling_api.issue_key()
    provider = MemoryProvider(first)
    auth = ScalingAuth(KeyCache(provider, ttl=60, clock=FakeClock()))
    instrument(auth, meter_provider=_BrokenMeterProvider())
    with (
        caplog.at_level(logging.WARNING, logger="scaling_credentials"),
        httpx.Client(base_url=scaling_api.url, auth=auth) as client,
    ):
        assert client.get("/oncall/schedules").status_code == 200
        rotate_and_revoke(scaling_api, lambda new: setattr(provider, "value", new), first)
        assert client.get("/oncall/schedules").status_code == 200
    reports = [r.getMessage() for r in caplog.records if "subscriber" in r.getMessage()]
    assert len(reports) == 1 and "RuntimeError" in reports[0], reports


def test_a_gauge_callback_sees_no_error_from_a_cache_without_a_key(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    cache = memory_cache(None)
    instrument(cache, meter_provider=meter_provider)
    with pytest.raises(ProviderError):
        cache.get()
    found = collect(reader)
    assert not [name for name, _ in found if name == AGE]
    assert (
        value(
            found,
            FETCHES,
            scaling_credentials__source="memory",
            scaling_credentials__fetch__trigger="ttl",
            scaling_credentials__fetch__outcome="error",
            error__type="SecretNotFoundError",
        )
        == 1
    )


# --------------------------------------------------------------------------- the hot path


def test_cache_hits_publish_no_event(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    cache = memory_cache()
    instrument(cache, meter_provider=meter_provider)
    cache.get()
    calls: list[CacheEvent] = []
    cache.subscribe(calls.append)
    for _ in range(10_000):
        cache.get()
    assert calls == []
    assert cache.stats.hits == 10_000
    assert totals(collect(reader)) == {FETCHES: 1}


# --------------------------------------------------------------------------- the names


def every_kind_of_event(meter_provider: Any) -> KeyCache:
    """One cache that goes through a fetch, a rotation, a stuck key and an outage;
    returned, since its key's age is reported only while it lives."""
    clock = FakeClock()
    provider = MemoryProvider(K1)
    cache = KeyCache(provider, ttl=60, jitter=0, refresh_ahead=0, max_stale=100, clock=clock)
    instrument(cache, meter_provider=meter_provider)
    first = cache.get()
    provider.value = K2
    second = cache.refresh(rejected=first)  # a rotation
    cache.refresh(rejected=second)  # stuck: its forced fetch
    cache.refresh(rejected=second)  # then skipped (interval)
    provider.fail = True
    clock.advance(61)
    cache.get()  # a failed fetch, a stale serve
    return cache


def test_the_names_in_the_operations_guide_are_those_exported(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    prometheus = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        alive = [every_kind_of_event(prometheus), every_kind_of_event(meter_provider)]
        exported = {
            name
            for family in registry.collect()
            for sample in family.samples
            for name in (sample.name, *sample.labels)
        }
    finally:
        prometheus.shutdown()
    found = collect(reader)
    del alive  # the gauges were read: the caches may go
    names = {name for name, _ in found} | {key for _, attrs in found for key, _ in attrs}
    assert len({name for name, _ in found}) == 6  # every instrument recorded something

    guide = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    in_guide = set(re.findall(r"\bscaling_credentials_[a-z_]*[a-z]", guide))
    in_guide -= {"scaling_credentials_event"}  # a log record's attribute
    assert in_guide and in_guide <= exported, in_guide - exported
    assert {n for n in exported if n.endswith(("_total", "_seconds"))} <= in_guide
    dotted = set(re.findall(r"\bscaling_credentials\.[a-z_.]*[a-z]", guide))
    dotted -= {"scaling_credentials.cache"}  # the logger
    dotted = {n for n in dotted if not n.startswith("scaling_credentials.integrations")}
    assert dotted <= names, dotted - names
    assert {n for n in names if n.startswith("scaling_credentials.")} <= dotted
    assert "error.type" in guide and "error_type" in exported


# --------------------------------------------------------------------------- the extra


def test_without_opentelemetry_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import scaling_credentials.integrations.opentelemetry\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'scaling-credentials[otel]'" in done.stdout


def test_the_instrumentation_type_is_public() -> None:
    assert Instrumentation.uninstrument.__doc__
    assert isinstance(
        instrument(KeyCache(MemoryProvider(K1)), meter_provider=NoOpMeterProvider()),
        Instrumentation,
    )
