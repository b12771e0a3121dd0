"""Stampede: backend calls when 32 threads / 1,000 asyncio tasks hit an expired entry at
once, and when they all receive invalid_api_key together; KeyCache vs. AWS Lambda
Powertools (SecretsProvider) vs. aws-secretsmanager-caching (SecretCache).

    uv run --all-packages --group bench python benchmarks/stampede.py [--quick]

Everything reads the same secret from a moto server on 127.0.0.1; backend calls are
counted at the boto3 client (botocore's before-send event: every HTTP request to Secrets
Manager, of any operation). Target for KeyCache: exactly 1 backend call per scenario.

How each side is expired: KeyCache takes a fake clock, moved past the entry's expiry.
The anchors read the wall clock, so their entry's expiry is set in the past directly
(Powertools: the ``ExpirableValue`` in ``provider.store``; SecretCache: the item's
``_next_refresh_time``). Neither anchor has a rejection path: for "invalid_api_key" each
caller does what their docs offer to get a newer value (Powertools
``get(..., force_fetch=True)``, SecretCache ``refresh_secret_now``). SecretCache sleeps
2.5-5 s in every ``refresh_secret_now`` before refreshing (a jitter against retry
loops); that sleep is set to 0 here to keep the run short: it spreads the calls out in
time but does not change how many there are. The anchors are synchronous: asyncio tasks
call them through ``asyncio.to_thread`` (calling them directly would block the event loop
for the whole backend call).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from _common import (
    BackendCounter,
    machine_lines,
    moto_server,
    new_key,
    parser,
    put_secret,
    report,
    sm_client,
    table,
)

from scaling_credentials import ApiKey, KeyCache
from scaling_credentials.testing import FakeClock
from scaling_credentials_aws import SecretsManagerProvider

SECRET = "scaling/bench-stampede"
TTL = 300


@dataclass
class Outcome:
    calls: dict[str, int]
    seconds: float
    errors: int
    values: set[str]

    def calls_text(self) -> str:
        total = sum(self.calls.values())
        detail = ", ".join(f"{op} {n}" for op, n in sorted(self.calls.items()))
        return f"**{total}**" + (f" ({detail})" if len(self.calls) > 1 else "")


# ---------------------------------------------------------------------- the three readers


class Ours:
    name = "KeyCache"

    def __init__(self, endpoint: str, counter: BackendCounter) -> None:
        self.clock = FakeClock()
        self.cache = KeyCache(
            SecretsManagerProvider(SECRET, client=sm_client(endpoint, counter)),
            ttl=TTL,
            clock=self.clock,
        )
        self.key = self.cache.get()

    def expire(self) -> None:
        self.clock.advance(TTL + 1)

    def read(self) -> str:
        return self.cache.get().reveal()

    async def aread(self) -> str:
        return (await self.cache.aget()).reveal()

    def rejected(self, key: ApiKey) -> str:
        return self.cache.refresh(rejected=key).reveal()

    async def arejected(self, key: ApiKey) -> str:
        return (await self.cache.arefresh(rejected=key)).reveal()


class Powertools:
    name = "Powertools SecretsProvider"

    def __init__(self, endpoint: str, counter: BackendCounter) -> None:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        self.provider = SecretsProvider(boto3_client=sm_client(endpoint, counter))
        self.read()

    def expire(self) -> None:
        from aws_lambda_powertools.utilities.parameters.base import ExpirableValue

        key = self.provider._build_cache_key(name=SECRET, transform=None)
        value = self.provider.store[key].value
        self.provider.store[key] = ExpirableValue(value, datetime.now() - timedelta(seconds=1))

    def read(self) -> str:
        return str(self.provider.get(SECRET, max_age=TTL))

    def rejected(self, key: ApiKey) -> str:
        return str(self.provider.get(SECRET, max_age=TTL, force_fetch=True))


class SecretsCache:
    name = "aws-secretsmanager-caching SecretCache"

    def __init__(self, endpoint: str, counter: BackendCounter) -> None:
        from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
        from aws_secretsmanager_caching.cache.items import SecretCacheObject

        SecretCacheObject.FORCE_REFRESH_JITTER_SLEEP = 0  # see the module docstring
        self.cache = SecretCache(
            config=SecretCacheConfig(secret_refresh_interval=TTL),
            client=sm_client(endpoint, counter),
        )
        self.read()

    def expire(self) -> None:
        item = self.cache._get_cached_secret(SECRET)
        item._next_refresh_time = datetime.now(timezone.utc) - timedelta(seconds=1)

    def read(self) -> str:
        return str(self.cache.get_secret_string(SECRET))

    def rejected(self, key: ApiKey) -> str:
        self.cache.refresh_secret_now(SECRET)
        return self.read()


# ---------------------------------------------------------------------- running a stampede


def threads(n: int, fn: Callable[[], str], counter: BackendCounter) -> Outcome:
    barrier = threading.Barrier(n, timeout=30)
    values: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            value = fn()
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                values.append(value)

    counter.reset()
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    start = time.perf_counter()
    for worker_thread in workers:
        worker_thread.start()
    for worker_thread in workers:
        worker_thread.join(timeout=60)
    seconds = time.perf_counter() - start
    return Outcome(dict(counter.calls), seconds, len(errors), set(values))


def tasks(n: int, make: Callable[[], Awaitable[str]], counter: BackendCounter) -> Outcome:
    async def run() -> tuple[list[Any], float]:
        gate = asyncio.Event()

        async def one() -> str:
            await gate.wait()  # every task is waiting before any reads
            return await make()

        pending = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0)
        start = time.perf_counter()
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 120)
        return results, time.perf_counter() - start

    counter.reset()
    results, seconds = asyncio.run(run())
    values = {r for r in results if isinstance(r, str)}
    errors = sum(1 for r in results if isinstance(r, BaseException))
    return Outcome(dict(counter.calls), seconds, errors, values)


def scenario(
    kind: str,
    reader: Ours | Powertools | SecretsCache,
    counter: BackendCounter,
    n: int,
    rotate: Callable[[], None],
) -> Outcome:
    """``kind``: expired-threads, expired-tasks, rejected-threads, rejected-tasks."""
    if kind.startswith("expired"):
        reader.expire()
        if kind == "expired-threads":
            return threads(n, reader.read, counter)
        if isinstance(reader, Ours):
            return tasks(n, reader.aread, counter)
        return tasks(n, lambda: asyncio.to_thread(reader.read), counter)
    old = ApiKey(reader.read())
    rotate()  # the source now holds a new key; the API rejects the old one
    if kind == "rejected-threads":
        return threads(n, lambda: reader.rejected(old), counter)
    if isinstance(reader, Ours):
        return tasks(n, lambda: reader.arejected(old), counter)
    return tasks(n, lambda: asyncio.to_thread(reader.rejected, old), counter)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n_threads, n_tasks = (32, 200) if args.quick else (32, 1000)
    kinds = {
        "expired-threads": f"{n_threads} threads, expired entry",
        "expired-tasks": f"{n_tasks} asyncio tasks, expired entry",
        "rejected-threads": f"{n_threads} threads, all get invalid_api_key",
        "rejected-tasks": f"{n_tasks} asyncio tasks, all get invalid_api_key",
    }
    rows = []
    ours_calls: list[int] = []
    with moto_server() as endpoint:
        admin = sm_client(endpoint)
        put_secret(admin, SECRET, new_key())

        def rotate() -> None:
            put_secret(admin, SECRET, new_key())

        for kind, label in kinds.items():
            n = n_threads if kind.endswith("threads") else n_tasks
            for make in (Ours, Powertools, SecretsCache):
                counter = BackendCounter()
                reader = make(endpoint, counter)
                outcome = scenario(kind, reader, counter, n, rotate)
                current = admin.get_secret_value(SecretId=SECRET)["SecretString"]
                if make is Ours:
                    ours_calls.append(sum(outcome.calls.values()))
                fresh = (
                    "all"
                    if outcome.values == {current}
                    else (f"{len(outcome.values)} distinct values")
                )
                rows.append(
                    (
                        label,
                        make.name,
                        outcome.calls_text(),
                        outcome.errors,
                        fresh,
                        f"{outcome.seconds * 1000:.0f}",
                    )
                )
    verdict = "met" if all(c == 1 for c in ours_calls) else "NOT met"
    lines = [
        "`benchmarks/stampede.py`: how many backend calls a burst of callers causes. All "
        "three read the same secret from moto on 127.0.0.1; calls are counted at the boto3 "
        "client (every HTTP request to Secrets Manager). Target for KeyCache: exactly 1 "
        f"per scenario ({verdict}: {ours_calls}).",
        "",
        *machine_lines(
            (
                "scaling-credentials",
                "scaling-credentials-aws",
                "boto3",
                "moto",
                "aws-lambda-powertools",
                "aws-secretsmanager-caching",
            )
        ),
        "",
        *table(
            [
                "scenario",
                "reader",
                "backend calls",
                "errors",
                "callers got the current key",
                "wall ms (noisy)",
            ],
            rows,
        ),
        "",
        "Method and reading:",
        "- KeyCache is expired with its fake clock; the anchors read the wall clock, so their "
        "entry's expiry is set in the past directly. Rejection: for KeyCache every caller "
        "calls `refresh(rejected=old)` / `await arefresh(rejected=old)` (what `ScalingAuth` "
        "does on a 401 `invalid_api_key`); the source already holds the new key.",
        "- KeyCache: one fetch runs off the callers' stacks and every caller waits for it "
        "(single-flight); a rejection refresh is coalesced the same way, and a caller that "
        "arrives after the new key is in is answered from the cache (the cached key differs "
        "from the rejected one). Each rejected key earns one forced fetch, shared by every "
        "caller; a key the source still holds after it is refetched at most once per "
        "`min_refresh_interval` (5 s).",
        "- Powertools has no lock around its cache: every thread that finds the entry "
        "expired calls GetSecretValue, so an expired entry costs up to one call per "
        "concurrent caller (how many depends on how long a call takes compared with "
        "thread start-up). For a rejected key it has no rejection path: "
        "`force_fetch=True` is one call per caller; without it, callers keep getting the "
        "rejected value (0 calls, every request fails) until `max_age` runs out.",
        "- aws-secretsmanager-caching holds a per-secret `RLock` across the backend call, "
        "so an expired entry costs one `DescribeSecret` (plus a `GetSecretValue` only for "
        "a new version) while every other caller waits on the lock, blocking its thread. "
        "`refresh_secret_now` has no coalescing: one `DescribeSecret` per caller, after a "
        "2.5-5 s sleep each (set to 0 here); without it callers are served the rejected "
        "value until the refresh interval (default 1 h) runs out.",
        "- asyncio: the anchors are synchronous, so tasks call them through "
        "`asyncio.to_thread`; the default executor runs min(32, CPUs + 4) of them at once "
        "(6 here), which caps the Powertools expired-entry count at the executor size; "
        "KeyCache's `aget`/`arefresh` wait on an asyncio future without a thread per "
        "caller.",
    ]
    report(args, "Stampede", lines)


if __name__ == "__main__":
    main()
