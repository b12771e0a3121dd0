"""The ``scaling-credentials demo``: a key rotation under load, with no cloud account.

It starts a :class:`~scaling_credentials.testing.FakeScalingAPI` and a key file laid out
like a Kubernetes secret volume (the kubelet's ``..data`` symlink swap), then sends
requests from threads (``httpx.Client``) and asyncio tasks (``httpx.AsyncClient``)
through one ``ScalingAuth(KeyCache(FileProvider(path)))`` while a rotator writes a new
key to the file and revokes the old one, several times. The same load is then run with
a key read once at start-up (what code without the library does), for contrast.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from .._api import parse_error_body
from .._auth import ScalingAuth
from .._cache import KeyCache
from .._errors import ConfigurationError, ScalingCredentialsError
from .._file import FileProvider
from .._key import ApiKey
from .._provider import Provider
from .._registry import provider_from_uri
from ._fake_api import FakeScalingAPI
from ._volume import SecretVolume

__all__ = ["DemoOptions", "DemoReport", "RunResult", "format_summary", "run_demo", "validate"]

PATH = "/oncall/schedules"
# Rotations may come this close together at most: the library picks up any spacing (every
# rejected key is refetched at once), but a request must finish between two rotations for
# "at most one retry" to hold.
MIN_ROTATION_GAP = 0.1
# Per-request timeout: generous, only there so that a wedged server cannot hang the demo.
REQUEST_TIMEOUT = 10.0
JOIN_TIMEOUT = 15.0
# A short pause between one worker's requests, like a real service's think time: without
# it a dozen busy loops and the fake server fight over one GIL and latency becomes noise.
THINK_TIME = 0.005


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs: seconds of load per run, workers, and rotations per run."""

    duration: float = 4.0
    threads: int = 4
    tasks: int = 8
    rotations: int = 3
    source: str | None = None


@dataclass
class RunResult:
    """The outcome of one run of the load (with the library, or with a static key)."""

    label: str
    duration: float
    requests: int = 0
    failures: int = 0
    retries: int = 0
    provider_fetches: int = 0
    rotations: int = 0
    thread_requests: int = 0
    task_requests: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)

    def percentile(self, fraction: float) -> float | None:
        """Latency in milliseconds at ``fraction`` (nearest rank), ``None`` with no data."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return ordered[rank - 1] * 1000

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (no secret in it)."""
        p50, p99 = self.percentile(0.50), self.percentile(0.99)
        return {
            "requests": self.requests,
            "failures": self.failures,
            "retries": self.retries,
            "provider_fetches": self.provider_fetches,
            "rotations": self.rotations,
            "thread_requests": self.thread_requests,
            "task_requests": self.task_requests,
            "failure_reasons": dict(sorted(self.failure_reasons.items())),
            "p50_ms": None if p50 is None else round(p50, 3),
            "p99_ms": None if p99 is None else round(p99, 3),
            "max_ms": round(max(self.latencies) * 1000, 3) if self.latencies else None,
            "duration_s": round(self.duration, 3),
        }


@dataclass
class DemoReport:
    """Both runs, and where the key came from."""

    options: DemoOptions
    source: str
    library: RunResult
    static: RunResult | None
    min_refresh_interval: float | None = None  # the library run's cache setting

    @property
    def ok(self) -> bool:
        """True when the library run sent requests and none of them failed."""
        return self.library.requests > 0 and self.library.failures == 0

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (no secret in it)."""
        return {
            "ok": self.ok,
            "source": self.source,
            "duration_s": self.options.duration,
            "threads": self.options.threads,
            "tasks": self.options.tasks,
            "rotations": self.library.rotations,
            "min_refresh_interval_s": self.min_refresh_interval,
            "library": self.library.as_json(),
            "static": None if self.static is None else self.static.as_json(),
        }


# --------------------------------------------------------------------------- load


class _Tally:
    """Counters shared by every worker of one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.failures = 0
        self.retries = 0
        self.by_kind: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.latencies: list[float] = []

    def record(self, kind: str, latency: float, failure: str | None, retried: bool) -> None:
        with self._lock:
            self.requests += 1
            self.by_kind[kind] += 1
            self.latencies.append(latency)
            if retried:
                self.retries += 1
            if failure is not None:
                self.failures += 1
                self.reasons[failure] += 1

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.requests, self.failures, self.retries


def _outcome(response: httpx.Response) -> tuple[str | None, bool]:
    if response.is_success:
        return None, bool(response.history)
    code = parse_error_body(response.content).code
    return f"HTTP {response.status_code}" + (f" {code}" if code else ""), bool(response.history)


class _StaticKeyAuth(httpx.Auth):
    """What code without the library does: the key read once, sent forever."""

    def __init__(self, key: ApiKey) -> None:
        self._header = "Bearer " + key.reveal()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _thread_worker(base_url: str, auth: httpx.Auth, tally: _Tally, stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, auth=auth, timeout=REQUEST_TIMEOUT) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                failure, retried = _outcome(client.get(PATH))
            except (httpx.HTTPError, ScalingCredentialsError) as exc:
                failure, retried = type(exc).__name__, False
            tally.record("thread", time.perf_counter() - started, failure, retried)
            stop.wait(THINK_TIME)


async def _task_worker(client: httpx.AsyncClient, tally: _Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            failure, retried = _outcome(await client.get(PATH))
        except (httpx.HTTPError, ScalingCredentialsError) as exc:
            failure, retried = type(exc).__name__, False
        tally.record("task", time.perf_counter() - started, failure, retried)
        await asyncio.sleep(THINK_TIME)


def _async_workers(
    base_url: str, auth: httpx.Auth, tasks: int, tally: _Tally, stop: threading.Event
) -> None:
    async def main() -> None:
        limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
        async with httpx.AsyncClient(
            base_url=base_url, auth=auth, timeout=REQUEST_TIMEOUT, limits=limits
        ) as client:
            await asyncio.gather(*(_task_worker(client, tally, stop) for _ in range(tasks)))

    asyncio.run(main())


class _Rotator(threading.Thread):
    """Rotates ``rotations`` times, evenly spread over the run: issue a new key, write it
    to the volume, then revoke the old one at once."""

    def __init__(
        self,
        api: FakeScalingAPI,
        volume: SecretVolume,
        current: str,
        rotations: int,
        duration: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="demo-rotator", daemon=True)
        self._api = api
        self._volume = volume
        self._current = current
        self._rotations = rotations
        self._interval = duration / (rotations + 1)
        self._halt = stop
        self._count_lock = threading.Lock()
        self._done = 0

    @property
    def done(self) -> int:
        with self._count_lock:
            return self._done

    def run(self) -> None:
        started = last = time.monotonic()
        for number in range(1, self._rotations + 1):
            # On schedule, but never much sooner than one interval after the previous
            # rotation, even when this thread was starved and runs late.
            due = max(started + number * self._interval, last + 0.75 * self._interval)
            if self._halt.wait(max(0.0, due - time.monotonic())):
                return
            new = self._api.rotate()
            self._volume.write(new)
            self._api.revoke(self._current)
            self._current = new
            last = time.monotonic()
            with self._count_lock:
                self._done = number


class _Progress:
    """A live line (``\\r``) on a terminal, a plain line per second otherwise."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._live = stream is not None and _is_terminal(stream)
        self._width = 0
        self._last_plain = time.monotonic()

    @property
    def tick(self) -> float:
        return 0.1 if self._live else 0.25

    def note(self, text: str) -> None:
        if self._stream is not None:
            self._stream.write(text + "\n")
            self._stream.flush()

    def update(self, text: str, *, final: bool = False) -> None:
        stream = self._stream
        if stream is None:
            return
        if self._live:
            padding = " " * max(0, self._width - len(text))
            self._width = len(text)
            stream.write("\r" + text + padding + ("\n" if final else ""))
            stream.flush()
            return
        now = time.monotonic()
        if final or now - self._last_plain >= 1.0:
            self._last_plain = now
            stream.write(text + "\n")
            stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _run_load(
    label: str,
    base_url: str,
    auth: httpx.Auth,
    options: DemoOptions,
    progress: _Progress,
    start_rotator: Callable[[threading.Event], _Rotator | None],
    fetches: Callable[[], int],
) -> RunResult:
    tally = _Tally()
    stop = threading.Event()
    workers = [
        threading.Thread(
            target=_thread_worker,
            args=(base_url, auth, tally, stop),
            name=f"demo-thread-{n}",
            daemon=True,
        )
        for n in range(options.threads)
    ]
    if options.tasks:
        workers.append(
            threading.Thread(
                target=_async_workers,
                args=(base_url, auth, options.tasks, tally, stop),
                name="demo-asyncio",
                daemon=True,
            )
        )
    started = time.monotonic()
    for worker in workers:
        worker.start()
    rotator = start_rotator(stop)
    deadline = started + options.duration

    def line() -> str:
        requests, failures, retries = tally.snapshot()
        elapsed = min(time.monotonic() - started, options.duration)
        text = (
            f"{label:<26} {elapsed:4.1f}/{options.duration:.1f} s  {requests:>7,} requests  "
            f"{failures:>6,} failed  {retries:>4,} retried"
        )
        if rotator is not None:
            text += f"  rotations {rotator.done}/{options.rotations}"
        return text

    try:
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(progress.tick, remaining))
            progress.update(line())
    finally:
        stop.set()
        for thread in [*workers, *([rotator] if rotator is not None else [])]:
            thread.join(JOIN_TIMEOUT)
    progress.update(line(), final=True)
    elapsed = time.monotonic() - started
    with tally._lock:
        return RunResult(
            label=label,
            duration=elapsed,
            requests=tally.requests,
            failures=tally.failures,
            retries=tally.retries,
            provider_fetches=fetches(),
            rotations=rotator.done if rotator is not None else 0,
            thread_requests=tally.by_kind["thread"],
            task_requests=tally.by_kind["task"],
            failure_reasons=dict(tally.reasons),
            latencies=list(tally.latencies),
        )


# --------------------------------------------------------------------------- the demo


def validate(options: DemoOptions) -> None:
    """Raise :class:`ConfigurationError` for options the demo cannot run with."""
    if not 0 < options.duration <= 3600:
        raise ConfigurationError("--duration must be more than 0 and at most 3600 seconds")
    if options.threads < 0 or options.tasks < 0 or options.threads + options.tasks == 0:
        raise ConfigurationError("--threads and --tasks must be 0 or more, and not both 0")
    if options.threads > 256 or options.tasks > 1024:
        raise ConfigurationError("at most 256 --threads and 1024 --tasks")
    if options.rotations < 0:
        raise ConfigurationError("--rotations must be 0 or more")
    interval = options.duration / (options.rotations + 1)
    if options.source is None and interval < MIN_ROTATION_GAP:
        raise ConfigurationError(
            f"{options.rotations} rotations in {options.duration:g} s leave "
            f"{interval:.2f} s between them; allow at least {MIN_ROTATION_GAP:g} s "
            "(fewer --rotations or a longer --duration)"
        )


def run_demo(options: DemoOptions, progress_stream: TextIO | None = sys.stderr) -> DemoReport:
    """Run the demo and return its report; progress goes to ``progress_stream``."""
    validate(options)
    progress = _Progress(progress_stream)
    if options.source is not None:
        return _run_with_source(options, options.source, progress)
    with _temporary_volume() as volume, FakeScalingAPI() as api:
        progress.note(
            f"Fake Scaling API on {api.url}; key file {volume.path} (a Kubernetes-style "
            "secret volume).\n"
            f"{_plural(options.threads, 'thread')} and {_plural(options.tasks, 'asyncio task')} "
            f"send GET {PATH} for {options.duration:g} s while the key is rotated "
            f"{_plural(options.rotations, 'time')} (new key written to the file, old key "
            "revoked)."
        )
        library, floor = _library_run(api, volume, options, progress)
        static = _static_run(api, volume, options, progress)
        return DemoReport(options, f"file:{volume.path}", library, static, floor)


@contextlib.contextmanager
def _temporary_volume() -> Iterator[SecretVolume]:
    directory = Path(tempfile.mkdtemp(prefix="scaling-credentials-demo-"))
    try:
        yield SecretVolume(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _library_run(
    api: FakeScalingAPI, volume: SecretVolume, options: DemoOptions, progress: _Progress
) -> tuple[RunResult, float]:
    first = api.issue_key()
    volume.write(first)
    # The library's defaults (min_refresh_interval 5 s, rotations about a second apart);
    # a long TTL on purpose: no rotation is picked up by a TTL fetch, each one by the
    # file's change check or the 401-refresh-retry path.
    cache = KeyCache(FileProvider(volume.path), ttl=300.0)
    auth = ScalingAuth(cache)

    def rotator(stop: threading.Event) -> _Rotator:
        thread = _Rotator(api, volume, first, options.rotations, options.duration, stop)
        thread.start()
        return thread

    result = _run_load(
        "with scaling-credentials",
        api.url,
        auth,
        options,
        progress,
        rotator,
        lambda: cache.stats.fetches,
    )
    return result, cache.min_refresh_interval


def _static_run(
    api: FakeScalingAPI, volume: SecretVolume, options: DemoOptions, progress: _Progress
) -> RunResult:
    first = api.issue_key()
    volume.write(first)
    key = FileProvider(volume.path).fetch()  # read once, as code without the library does

    def rotator(stop: threading.Event) -> _Rotator:
        thread = _Rotator(api, volume, first, options.rotations, options.duration, stop)
        thread.start()
        return thread

    return _run_load(
        "static key (read once)",
        api.url,
        _StaticKeyAuth(key),
        options,
        progress,
        rotator,
        lambda: 1,
    )


def _run_with_source(options: DemoOptions, source: str, progress: _Progress) -> DemoReport:
    provider: Provider = provider_from_uri(source)
    key = provider.fetch()
    # The fake API accepts the key the source holds now; the demo cannot rotate a real
    # backend, so it runs the load once, with a short TTL so that the source is fetched
    # again (in the background, refresh-ahead) a few times during the run.
    ttl = max(1.0, options.duration / 3)
    cache = KeyCache(provider, ttl=ttl)
    with FakeScalingAPI(keys=[key.reveal()]) as api:
        progress.note(
            f"Fake Scaling API on {api.url}, accepting the key {provider.describe()} holds "
            f"now ({key.masked}).\n"
            f"{_plural(options.threads, 'thread')} and {_plural(options.tasks, 'asyncio task')} "
            f"send GET {PATH} for {options.duration:g} s; the key is refetched every "
            f"~{ttl:g} s (no rotation: the demo cannot rotate a real backend)."
        )
        result = _run_load(
            "with scaling-credentials",
            api.url,
            ScalingAuth(cache),
            options,
            progress,
            lambda _stop: None,
            lambda: cache.stats.fetches,
        )
    return DemoReport(options, provider.describe(), result, None)


# --------------------------------------------------------------------------- summary


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def format_summary(report: DemoReport) -> str:
    """The summary table and verdict, as text."""
    runs = [report.library] + ([report.static] if report.static is not None else [])
    headers = ["", *(run.label for run in runs)]
    rows: list[list[str]] = [
        ["requests", *(f"{run.requests:,}" for run in runs)],
        ["  from threads / tasks", *(f"{r.thread_requests:,} / {r.task_requests:,}" for r in runs)],
        ["failed requests", *(f"{run.failures:,}" for run in runs)],
        ["401s retried with a new key", f"{report.library.retries:,}", *(["-"] * (len(runs) - 1))],
        ["provider fetches", *(f"{run.provider_fetches:,}" for run in runs)],
        ["latency p50", *(_ms(run.percentile(0.50)) for run in runs)],
        ["latency p99", *(_ms(run.percentile(0.99)) for run in runs)],
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    options = report.options
    workers = f"{_plural(options.threads, 'thread')} + {_plural(options.tasks, 'asyncio task')}"
    if report.static is not None:
        title = (
            f"Key rotation under load: {workers}, {options.duration:g} s per run, "
            f"key rotated {_plural(report.library.rotations, 'time')} (old key revoked at once)"
        )
    else:
        title = f"Load through {report.source}: {workers}, {options.duration:g} s"
    lines[:0] = [title, ""]
    lib = report.library
    rotations = _plural(lib.rotations, "rotation")
    lines.append("")
    if report.ok:
        verdict = f"OK: none of {lib.requests:,} requests failed"
        verdict += f" across {rotations}" if report.static is not None else ""
    else:
        reasons = ", ".join(f"{k} x{v}" for k, v in sorted(lib.failure_reasons.items()))
        verdict = f"FAILED: {lib.failures:,} of {lib.requests:,} requests failed" + (
            f" ({reasons})" if reasons else ""
        )
    static = report.static
    if static is not None:
        share = static.failures / static.requests if static.requests else 0.0
        verdict += (
            f"; a key read once at start-up failed {static.failures:,} of "
            f"{static.requests:,} ({share:.0%})."
        )
    else:
        verdict += f" (source {report.source}; no rotation, no contrast run)."
    lines.append(verdict)
    if not report.ok and report.static is not None and lib.latencies:
        interval = options.duration / (options.rotations + 1)
        lines.append(
            f"A request fails only when it is held up across two rotations ({interval:.2f} s "
            f"apart here; the slowest took {max(lib.latencies) * 1000:.0f} ms): on a busy "
            "machine, use fewer --rotations or a longer --duration."
        )
    return "\n".join(lines)
