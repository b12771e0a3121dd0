"""One KeyCache behind httpx, requests and aiohttp clients in one process, at once: one
rotation costs one forced fetch, whichever client meets the rejection first, and every
client's requests succeed. And the three drivers share one core: the same refusals."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import aiohttp
import httpx
import pytest
import requests

from scaling_credentials import ConfigurationError, KeyCache, ScalingAuth
from scaling_credentials.integrations.aiohttp import ScalingMiddleware
from scaling_credentials.integrations.requests import ScalingRequestsAuth
from scaling_credentials.testing import FakeScalingAPI, MemoryProvider, rotate_and_revoke

PATH = "/oncall/schedules"
ROUNDS = 20
KEY = "scl_live_SHAREDkey0123456789abcdefXYZabc"


def test_one_cache_three_clients_one_rotation_one_forced_fetch(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    provider = MemoryProvider(old)
    cache = KeyCache(provider)  # the library's defaults
    httpx_auth, requests_auth = ScalingAuth(cache), ScalingRequestsAuth(cache)
    middleware = ScalingMiddleware(cache)
    warmed = threading.Barrier(4, timeout=60)  # three clients and the rotation
    rotated = threading.Barrier(4, timeout=60)
    statuses: dict[str, list[int]] = {"httpx": [], "requests": [], "aiohttp": []}
    errors: list[BaseException] = []

    def rounds(name: str, send: Callable[[], int]) -> None:
        statuses[name].append(send())
        warmed.wait()
        rotated.wait()  # every client meets the revoked key together
        for _ in range(ROUNDS):
            statuses[name].append(send())

    def with_httpx() -> None:
        with httpx.Client(base_url=api.url, auth=httpx_auth) as client:
            rounds("httpx", lambda: client.get(PATH).status_code)

    def with_requests() -> None:
        with requests.Session() as session:
            session.auth = requests_auth
            rounds("requests", lambda: session.get(api.url + PATH, timeout=30).status_code)

    def with_aiohttp() -> None:
        async def scenario() -> None:
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:

                async def send() -> int:
                    async with session.get(api.url + PATH) as response:
                        return response.status

                statuses["aiohttp"].append(await send())
                await asyncio.to_thread(warmed.wait)
                await asyncio.to_thread(rotated.wait)
                for _ in range(ROUNDS):
                    statuses["aiohttp"].append(await send())

        asyncio.run(scenario())

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                warmed.abort()
                rotated.abort()

        return run

    workers = [
        threading.Thread(target=guarded(target), daemon=True)
        for target in (with_httpx, with_requests, with_aiohttp)
    ]
    for worker in workers:
        worker.start()
    warmed.wait()
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    rotated.wait()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    assert not any(worker.is_alive() for worker in workers)
    assert statuses == {name: [200] * (1 + ROUNDS) for name in statuses}
    assert cache.stats.fetches == 2  # the first, and one forced fetch for the rotation
    assert cache.stats.forced_fetches == 1
    assert provider.fetches == 2


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/v1/x",
        "http://api.scaling.cloud/v1/x",
        "http://localhost./v1/x",
        "https://api.scaling.cloud/v1/" + KEY,
    ],
)
def test_the_three_clients_refuse_alike(url: str) -> None:
    refusals: list[str] = []
    with (
        pytest.raises(ConfigurationError) as info,
        httpx.Client(auth=ScalingAuth(MemoryProvider(KEY))) as client,
    ):
        client.get(url)
    refusals.append(str(info.value))
    with pytest.raises(ConfigurationError) as info:
        requests.get(url, auth=ScalingRequestsAuth(MemoryProvider(KEY)), timeout=5)
    refusals.append(str(info.value))

    async def with_aiohttp() -> None:
        middleware = ScalingMiddleware(MemoryProvider(KEY))
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            await session.get(url)

    with pytest.raises(ConfigurationError) as info:
        asyncio.run(with_aiohttp())
    refusals.append(str(info.value))
    names = ("ScalingAuth(", "ScalingRequestsAuth(", "ScalingMiddleware(")
    unnamed = [text.replace(name, "<auth>(") for text, name in zip(refusals, names, strict=True)]
    assert unnamed[0] == unnamed[1] == unnamed[2]
