"""Soak: threads and asyncio tasks send requests through httpx while the key rotates and
the key source fails now and then. The bounded run is tests/test_soak.py; run this file
for a longer one::

    uv run python benchmarks/soak.py --duration 300 --threads 16 --tasks 500

What runs, all in one process against one ``KeyCache`` (threads and tasks share it):

* a ``FakeScalingAPI`` on 127.0.0.1;
* the key in a file, written atomically (a Kubernetes secret volume), read through a
  ``FileProvider`` wrapped in a ``FaultyProvider`` that fails ``failure_rate`` of the
  fetches (seeded, so a run is reproducible);
* ``threads`` workers with one ``httpx.Client`` each, ``tasks`` asyncio tasks sharing one
  ``httpx.AsyncClient`` on a loop in its own thread, each pausing a random moment between
  requests (the pause keeps request latency well under the rotation period on a small
  machine);
* a rotation every ``period`` seconds, in the runbook's order: a new key is issued and
  written to the file; once the cache holds it (picked up through the TTL), the older
  keys are revoked. A request that was in flight with a revoked key gets a 401, takes
  the cached newer key and is sent once more. A key is revoked only once no request that
  could still be carrying it *as its retry key* is in flight (one that started before
  the key was picked up); on a fast machine that is at once, on a slow one a revocation
  waits a rotation or two. So a correct library has zero failed requests by
  construction, however slow the machine, and a wrong one (a retry with a stale key, a
  loop, a lost retry) shows up as failures.

Printed (and returned by :func:`run`): requests, failures, retries, backend attempts
against the computed bound, memory growth after warm-up (tracemalloc), threads and
tasks left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from scaling_credentials import FileProvider, KeyCache, ProviderError, ScalingAuth
from scaling_credentials._flight import FETCH_THREAD, quiesce
from scaling_credentials.testing import FakeScalingAPI, FaultyProvider

TASKS_PER_CLIENT = 50


@dataclass
class Report:
    """What a soak run measured."""

    duration: float = 0.0
    threads: int = 0
    tasks: int = 0
    rotations: int = 0
    revocations: int = 0
    requests: int = 0
    sync_requests: int = 0
    async_requests: int = 0
    workers_with_requests: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    backend_attempts: int = 0
    injected_failures: int = 0
    attempt_bound: int = 0
    forced_fetches: int = 0
    stale_serves: int = 0
    max_in_flight: int = 0
    min_gap_after_failure: float | None = None
    library_growth_bytes: int = 0
    total_growth_bytes: int = 0
    threads_left: list[str] = field(default_factory=list)
    tasks_left: int = 0


class Generations:
    """Which rotation each in-flight request started in, so that a key is revoked only
    when no request that could carry it as its retry key is still in flight."""

    def __init__(self) -> None:
        self.current = 0
        self._in_flight: Counter[int] = Counter()
        self._lock = threading.Lock()

    def enter(self) -> int:
        with self._lock:
            self._in_flight[self.current] += 1
            return self.current

    def leave(self, generation: int) -> None:
        with self._lock:
            self._in_flight[generation] -= 1

    def advance(self) -> None:
        with self._lock:
            self.current += 1

    def drained(self, up_to: int) -> bool:
        """Whether no request started in generation ``up_to`` or earlier is in flight."""
        with self._lock:
            return all(n == 0 for g, n in self._in_flight.items() if g <= up_to)


class Tally:
    """Counters shared by every worker (no per-request lists: memory must stay flat)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sync = 0
        self.async_ = 0
        self.failures: Counter[str] = Counter()
        self.retried = 0
        self.active: set[str] = set()

    def record(
        self, worker: str, response: httpx.Response | None, error: BaseException | None
    ) -> None:
        kind = worker.split("-", 1)[0]
        with self.lock:
            self.active.add(worker)
            if kind == "sync":
                self.sync += 1
            else:
                self.async_ += 1
            if error is not None:
                self.failures[type(error).__name__] += 1
                return
            assert response is not None
            self.retried += len(response.history)
            if response.status_code != 200:
                self.failures[f"HTTP {response.status_code}"] += 1


def _write_key(path: Path, value: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _library_bytes(snapshot: tracemalloc.Snapshot) -> int:
    library = snapshot.filter_traces(
        [
            tracemalloc.Filter(True, "*/scaling_credentials/*"),
            tracemalloc.Filter(False, "*/scaling_credentials/testing/*"),
        ]
    )
    return sum(stat.size for stat in library.statistics("filename"))


def _total_bytes(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in snapshot.statistics("filename"))


def run(
    *,
    duration: float = 20.0,
    threads: int = 16,
    tasks: int = 500,
    period: float = 1.0,
    failure_rate: float = 0.1,
    ttl: float = 0.5,
    sync_pause: float = 0.5,
    async_pause: float = 8.0,
    warmup: float = 8.0,
    seed: int = 20260101,
    trace_memory: bool = True,
    progress: bool = False,
) -> Report:
    """Run one soak and return its :class:`Report` (see the module docstring).

    ``sync_pause`` and ``async_pause`` are the mean pauses between a worker's requests,
    in seconds (each task starts within ``async_pause``); ``ttl`` the cache's TTL (the
    rotation is picked up through it). tracemalloc starts at the first rotation after
    ``warmup`` seconds (every worker has started by then); once every worker has
    stopped, what was allocated since and is still alive is the growth.
    """
    report = Report(threads=threads, tasks=tasks)
    threads_before = set(threading.enumerate())
    workdir = Path(tempfile.mkdtemp(prefix="scaling-soak-"))
    path = workdir / "api-key"
    backoff_initial, backoff_max = 0.05, 0.4
    tally = Tally()
    generations = Generations()
    stop = threading.Event()
    stopping: list[Callable[[], object]] = []  # wakes the async tasks
    async_ready = threading.Event()

    with FakeScalingAPI() as api:
        key = api.issue_key()
        _write_key(path, key)
        provider = FaultyProvider(
            FileProvider(path), failure_rate=failure_rate, rng=random.Random(seed + 1)
        )
        cache = KeyCache(
            provider,
            ttl=ttl,
            jitter=0.1,
            max_stale=60,
            min_refresh_interval=0,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            rng=random.Random(seed + 2),
        )
        auth = ScalingAuth(cache)
        for _ in range(100):  # warm up (the first fetch may meet an injected failure)
            try:
                cache.get()
                break
            except ProviderError:
                time.sleep(backoff_max)
        timeout = httpx.Timeout(60.0)

        def sync_worker(index: int) -> None:
            pause = random.Random(seed + 100 + index)
            with httpx.Client(base_url=api.url, auth=auth, timeout=timeout) as client:
                while not stop.is_set():
                    generation = generations.enter()
                    response: httpx.Response | None = None
                    error: BaseException | None = None
                    try:
                        response = client.get("/oncall/schedules")
                    except Exception as exc:
                        error = exc
                    finally:
                        generations.leave(generation)
                    tally.record(f"sync-{index}", response, error)
                    stop.wait(pause.uniform(0, 2 * sync_pause))

        async def async_main() -> int:
            # Several clients of up to TASKS_PER_CLIENT connections: httpcore's pool scans
            # every connection for every request, which costs more than everything else
            # here once a single pool holds hundreds of connections.
            count = max(1, -(-tasks // TASKS_PER_CLIENT))
            limits = httpx.Limits(
                max_connections=TASKS_PER_CLIENT, max_keepalive_connections=TASKS_PER_CLIENT
            )
            clients = [
                httpx.AsyncClient(base_url=api.url, auth=auth, timeout=timeout, limits=limits)
                for _ in range(count)
            ]

            halt = asyncio.Event()
            stopping.append(lambda: loop.call_soon_threadsafe(halt.set))
            loop = asyncio.get_running_loop()

            async def rest(seconds: float) -> None:
                try:
                    await asyncio.wait_for(halt.wait(), seconds)
                except asyncio.TimeoutError:
                    pass

            async def task(index: int) -> None:
                client = clients[index % count]
                pause = random.Random(seed + 10_000 + index)
                # Spread the start so that the tasks do not all connect at once.
                await rest(pause.uniform(0, async_pause))
                while not halt.is_set():
                    generation = generations.enter()
                    response: httpx.Response | None = None
                    error: BaseException | None = None
                    try:
                        response = await client.get("/oncall/schedules")
                    except Exception as exc:
                        error = exc
                    finally:
                        generations.leave(generation)
                    tally.record(f"async-{index}", response, error)
                    await rest(pause.uniform(0, 2 * async_pause))

            try:
                workers = [asyncio.create_task(task(i)) for i in range(tasks)]
                async_ready.set()
                await asyncio.gather(*workers)
            finally:
                for client in clients:
                    await client.aclose()
            current = asyncio.current_task()
            return len([t for t in asyncio.all_tasks() if t is not current])

        left: list[int] = []
        async_thread = threading.Thread(
            target=lambda: left.append(asyncio.run(async_main())), name="soak-async"
        )
        workers = [
            threading.Thread(target=sync_worker, args=(i,), name=f"soak-sync-{i}")
            for i in range(threads)
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        async_thread.start()
        async_ready.wait(60)
        tracing = False
        # (key, generation it was picked up in): revoked once safe, see revocable().
        pending: list[tuple[str, int]] = [(key, 0)]
        try:
            while time.monotonic() - started < duration:
                tick = time.monotonic()
                new = api.rotate()
                _write_key(path, new)
                # Wait until the cache holds the new key (TTL pickup, through failures).
                deadline = time.monotonic() + 60
                while (peek := cache.peek()) is None or peek.reveal() != new:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the cache did not pick up the new key in 60 s")
                    time.sleep(0.005)
                generations.advance()
                report.rotations += 1
                # Revoke every older key that no in-flight request can still be carrying
                # as its retry key: a key picked up in generation g is safe once nothing
                # started before g is in flight. A slow machine defers revocations; it
                # never makes them unsafe.
                still_pending = []
                for old, generation in pending:
                    if generations.drained(generation - 1):
                        api.revoke(old)
                        report.revocations += 1
                    else:
                        still_pending.append((old, generation))
                pending = [*still_pending, (new, generations.current)]
                api.clear_requests()  # the fake's request log would grow without bound
                if trace_memory and not tracing and time.monotonic() - started >= warmup:
                    # Traced from here on: what is still alive at the end and was
                    # allocated after warm-up is the growth.
                    gc.collect()
                    tracemalloc.start(1)
                    tracing = True
                if progress:
                    with tally.lock:
                        done = tally.sync + tally.async_
                    print(
                        f"{time.monotonic() - started:6.1f}s rotation {report.rotations}: "
                        f"{done} requests, {sum(tally.failures.values())} failed, "
                        f"{provider.calls} backend attempts, {report.revocations} revoked",
                        file=sys.stderr,
                    )
                stop.wait(max(0.0, period - (time.monotonic() - tick)))
        finally:
            stop.set()
            for wake in stopping:
                wake()
            elapsed = time.monotonic() - started
            for worker in workers:
                worker.join(timeout=60)
            async_thread.join(timeout=120)
        if tracing:
            # Every request has finished and every client is closed: what was allocated
            # after warm-up and is still alive is what the run kept (a leak would be
            # proportional to the requests sent).
            api.clear_requests()
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            report.library_growth_bytes = _library_bytes(snapshot)
            report.total_growth_bytes = _total_bytes(snapshot)

    # Background fetches land on their own once their backend call returns.
    quiesce(30)
    stats = cache.stats
    report.duration = round(elapsed, 2)
    report.sync_requests = tally.sync
    report.async_requests = tally.async_
    report.requests = tally.sync + tally.async_
    report.workers_with_requests = len(tally.active)
    report.failures = dict(tally.failures)
    report.failed = sum(tally.failures.values())
    report.retried = tally.retried
    report.backend_attempts = provider.calls
    report.injected_failures = provider.failures
    report.forced_fetches = stats.forced_fetches
    report.stale_serves = stats.stale_serves
    report.max_in_flight = provider.max_in_flight
    # The bound: each successful fetch stores an entry that lives at least
    # ttl * (1 - jitter), and the next fetch starts no earlier than refresh_ahead
    # (ttl / 10) before its end, so successful fetches are at least min_cycle apart
    # over the span of all attempts; each failed attempt adds one more (and is followed
    # by a backoff pause, checked through min_gap_after_failure). No forced fetch at all:
    # a key is revoked only once a newer one is cached.
    min_cycle = ttl * (1 - 0.1) - ttl / 10
    span = provider.attempts[-1] - provider.attempts[0] if provider.attempts else 0.0
    report.attempt_bound = 1 + int(span / min_cycle) + provider.failures
    attempts = provider.attempts
    gaps = [
        attempts[i + 1] - attempts[i] for i in provider.failed_attempts if i + 1 < len(attempts)
    ]
    report.min_gap_after_failure = round(min(gaps), 4) if gaps else None
    # The process's fetch threads wait for the next fetch by design: not left behind.
    report.threads_left = sorted(
        t.name
        for t in set(threading.enumerate()) - threads_before
        if t.is_alive() and t.name != FETCH_THREAD
    )
    report.tasks_left = left[0] if left else -1
    return report


def main(argv: list[str] | None = None) -> int:
    """Run a soak from the command line; exit 0 only with zero failed requests."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between rotations")
    parser.add_argument("--failure-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--no-tracemalloc", action="store_true")
    args = parser.parse_args(argv)
    report = run(
        duration=args.duration,
        threads=args.threads,
        tasks=args.tasks,
        period=args.period,
        failure_rate=args.failure_rate,
        seed=args.seed,
        trace_memory=not args.no_tracemalloc,
        progress=True,
    )
    print(json.dumps(asdict(report), indent=2))
    return 0 if report.failed == 0 and report.backend_attempts <= report.attempt_bound else 1


if __name__ == "__main__":
    sys.exit(main())
