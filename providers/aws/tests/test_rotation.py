"""Rotation and outages end to end: FakeScalingAPI + a secret in moto + KeyCache +
ScalingAuth, with real threads, real asyncio tasks and an injected clock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import pytest

from scaling_credentials import ApiKey, KeyCache, Provider, ProviderError, ScalingAuth
from scaling_credentials.testing import FakeClock, FakeScalingAPI
from scaling_credentials.testing.provider_suite import assert_key_is
from scaling_credentials_aws import LambdaExtensionProvider, SecretsManagerProvider

THREADS = 8
REQUESTS_PER_THREAD = 30
TASKS = 100
REQUESTS_PER_TASK = 2


class CountingProvider(Provider):
    """Counts the backend reads (one GetSecretValue or extension call each)."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.fetches = 0
        self.rejections: list[str] = []
        self._lock = threading.Lock()

    def fetch(self) -> ApiKey:
        with self._lock:
            self.fetches += 1
        return self.inner.fetch()

    def describe(self) -> str:
        return self.inner.describe()

    def refetch(self, rejected: ApiKey) -> ApiKey:
        with self._lock:
            self.fetches += 1
            self.rejections.append(rejected.masked)
        return self.inner.refetch(rejected)


def _rotate(api: FakeScalingAPI, sm: Any, secret: str, old: str) -> str:
    """What a rotation Lambda and the dashboard do: a new key, AWSCURRENT moved to it,
    then the old key revoked."""
    new = api.rotate()
    sm.put_secret_value(SecretId=secret, SecretString=new)
    api.revoke(old)
    return new


def _run_threads(
    api: FakeScalingAPI, auth: ScalingAuth, rotate: Callable[[], None]
) -> tuple[list[int], int]:
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    progress = threading.Semaphore(0)
    rotated = threading.Event()

    def worker(client: httpx.Client) -> None:
        for number in range(REQUESTS_PER_THREAD):
            if number == REQUESTS_PER_THREAD // 3:
                progress.release()
            if number == 2 * REQUESTS_PER_THREAD // 3:
                rotated.wait(timeout=30)  # some requests after the rotation, for sure
            try:
                status = client.get("/oncall/schedules").status_code
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                continue
            with lock:
                statuses.append(status)

    with httpx.Client(base_url=api.url, auth=auth, timeout=30) as client:
        threads = [threading.Thread(target=worker, args=(client,)) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for _ in range(THREADS):  # every thread is mid-run: rotate under load
            assert progress.acquire(timeout=30)
        rotate()
        rotated.set()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    assert not errors, [type(e).__name__ for e in errors]
    return statuses, len(statuses)


def test_rotation_under_eight_threads(
    api: FakeScalingAPI,
    sm: Any,
    moto_endpoint: str,
    boto_session: boto3.session.Session,
    secret_name: str,
    put: Callable[..., str],
) -> None:
    old = api.issue_key()
    put(sm, secret_name, SecretString=old)
    provider = CountingProvider(
        SecretsManagerProvider(secret_name, endpoint_url=moto_endpoint, session=boto_session)
    )
    cache = KeyCache(provider, min_refresh_interval=0)
    auth = ScalingAuth(cache)
    new: list[str] = []

    statuses, count = _run_threads(
        api, auth, lambda: new.append(_rotate(api, sm, secret_name, old))
    )

    assert count == THREADS * REQUESTS_PER_THREAD
    assert set(statuses) == {200}  # zero failed requests
    # One read at first use, one forced read after the rejection, however many threads
    # were rejected at once.
    assert provider.fetches == 2
    stats = cache.stats
    assert (stats.fetches, stats.forced_fetches, stats.errors) == (2, 1, 0)
    assert cache.peek() is not None and cache.peek() == ApiKey(new[0])
    assert len(provider.rejections) == 1
    rejected_with_old = [r for r in api.requests if r.status == 401]
    assert rejected_with_old, "the rotation happened under load: some requests were rejected"


def test_rotation_under_a_hundred_async_tasks(
    api: FakeScalingAPI,
    sm: Any,
    moto_endpoint: str,
    boto_session: boto3.session.Session,
    secret_name: str,
    put: Callable[..., str],
) -> None:
    old = api.issue_key()
    put(sm, secret_name, SecretString=old)
    provider = CountingProvider(
        SecretsManagerProvider(secret_name, endpoint_url=moto_endpoint, session=boto_session)
    )
    cache = KeyCache(provider, min_refresh_interval=0)

    async def scenario() -> list[int]:
        statuses: list[int] = []
        halfway = asyncio.Event()
        rotated = asyncio.Event()
        started = 0
        # 100 tasks share 20 connections: the tasks still race in the auth and the cache,
        # without paying for 100 TCP handshakes.
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(
            base_url=api.url, auth=ScalingAuth(cache), limits=limits, timeout=30
        ) as client:

            async def task() -> None:
                nonlocal started
                for number in range(REQUESTS_PER_TASK):
                    if number == REQUESTS_PER_TASK // 2:
                        started += 1
                        if started == TASKS:
                            halfway.set()
                        await asyncio.wait_for(rotated.wait(), timeout=30)
                    response = await client.get("/oncall/schedules")
                    statuses.append(response.status_code)

            tasks = [asyncio.create_task(task()) for _ in range(TASKS)]
            await asyncio.wait_for(halfway.wait(), timeout=30)
            await asyncio.to_thread(_rotate, api, sm, secret_name, old)
            rotated.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        return statuses

    statuses = asyncio.run(scenario())
    assert len(statuses) == TASKS * REQUESTS_PER_TASK
    assert set(statuses) == {200}
    assert provider.fetches == 2
    assert (cache.stats.fetches, cache.stats.forced_fetches) == (2, 1)


def test_rotation_through_an_extension_that_ignores_refresh_now(
    api: FakeScalingAPI,
    sm: Any,
    moto_endpoint: str,
    secret_name: str,
    put: Callable[..., str],
    fake_extension: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The extension keeps serving the old key from its cache; after the API rejects it,
    the provider reads Secrets Manager directly and requests keep succeeding."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    extension = fake_extension(honour_refresh_now=False)
    old = api.issue_key()
    put(sm, secret_name, SecretString=old)
    provider = CountingProvider(LambdaExtensionProvider(secret_name, port=extension.port))
    cache = KeyCache(provider, min_refresh_interval=0)

    statuses, count = _run_threads(
        api, ScalingAuth(cache), lambda: _rotate(api, sm, secret_name, old)
    )

    assert count == THREADS * REQUESTS_PER_THREAD
    assert set(statuses) == {200}
    assert provider.fetches == 2
    refreshes = [r for r in extension.requests if r.params.get("refreshNow") == "true"]
    assert len(refreshes) == 1  # it asked the extension first, then went direct


def test_ttl_refetches_through_an_extension_still_serving_the_revoked_key_keep_the_new_key(
    api: FakeScalingAPI,
    sm: Any,
    moto_endpoint: str,
    secret_name: str,
    put: Callable[..., str],
    fake_extension: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Lambda function with the library's defaults and a short TTL, behind an extension
    whose own cache ignores refreshNow: after the direct read found the new key, every
    TTL refetch gets the revoked key from the extension again. The cache keeps the new
    key (never a step back): one 401 in all, then none, invocation after invocation."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    extension = fake_extension(honour_refresh_now=False)
    old = api.issue_key()
    put(sm, secret_name, SecretString=old)
    clock = FakeClock()
    cache = KeyCache(LambdaExtensionProvider(secret_name, port=extension.port), ttl=3, clock=clock)
    statuses: list[int] = []

    def settle() -> None:
        flight = cache._flight
        if flight is not None:  # a background refresh: let it land before the clock moves
            assert flight.done.wait(10)

    with httpx.Client(base_url=api.url, auth=ScalingAuth(cache)) as client:
        assert client.get("/oncall/schedules").status_code == 200
        new = _rotate(api, sm, secret_name, old)
        for _ in range(8):  # invocations 3 s apart, a few requests each
            for _ in range(3):
                statuses.append(client.get("/oncall/schedules").status_code)
                settle()
            clock.advance(3)
    assert statuses == [200] * 24
    assert [r.status for r in api.requests].count(401) == 1  # the rotation, once
    held = cache.peek()
    assert held is not None
    assert_key_is(held, new)
    assert cache.is_rejected(ApiKey(old))
    assert cache.stats.forced_fetches == 1


def test_outage_serves_the_stale_key_within_max_stale_then_fails(
    api: FakeScalingAPI, moto_process: Any, boto_session: boto3.session.Session
) -> None:
    key = api.issue_key()
    admin = boto_session.client("secretsmanager", endpoint_url=moto_process.endpoint)
    admin.create_secret(Name="prod/scaling", SecretString=key)
    provider = CountingProvider(
        SecretsManagerProvider(
            "prod/scaling",
            endpoint_url=moto_process.endpoint,
            session=boto_session,
            max_attempts=1,
            connect_timeout=1,
        )
    )
    clock = FakeClock()
    cache = KeyCache(provider, ttl=60, jitter=0, max_stale=300, min_refresh_interval=0, clock=clock)
    with httpx.Client(base_url=api.url, auth=ScalingAuth(cache), timeout=30) as client:
        assert client.get("/oncall/schedules").status_code == 200
        assert provider.fetches == 1

        moto_process.stop()  # the backend goes away

        for step in (61, 60, 60, 60, 60):  # up to 301 s in: 241 s past expiry
            clock.advance(step)
            assert client.get("/oncall/schedules").status_code == 200
        # Each step is longer than any backoff step (at most 16 s by the fifth failure),
        # so each request tried the backend once, failed, and was served the cached key.
        stats = cache.stats
        assert (stats.errors, stats.stale_serves) == (5, 5)
        assert provider.fetches == 1 + 5

        clock.advance(120)  # 361 s past expiry: beyond max_stale
        with pytest.raises(ProviderError, match="cannot reach Secrets Manager"):
            cache.get()
        with pytest.raises(ProviderError):
            client.get("/oncall/schedules")
