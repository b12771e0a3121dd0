"""ScalingMiddleware: aiohttp sessions against FakeScalingAPI and HostileServer over real
sockets. Same promises as ScalingAuth: the key only where it may go, one refresh and one
resend after a rejected key, at most 64 KiB of a 401 read (after decoding), no key on a
redirect hop to another origin."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest

from scaling_credentials import ConfigurationError, KeyCache
from scaling_credentials.integrations.aiohttp import ScalingMiddleware
from scaling_credentials.testing import (
    AsyncClientFactory,
    FakeScalingAPI,
    HostileServer,
    MemoryProvider,
    ScriptedResponse,
    rotate_and_revoke,
    run_rotation_tasks,
)
from scaling_credentials.testing.provider_suite import assert_no_secret

T = TypeVar("T")
PATH = "/oncall/schedules"
KEY = "scl_live_AIOHTTPkey0123456789abcdefXYZab"
NEXT = "scl_live_AIOHTTPnext0123456789abcdefXYZa"
MIB = 1024 * 1024
BOMB = 256 * MIB
MEMORY_BUDGET = 4 * MIB
REJECTION = (
    b'{"statusCode": 401, "type": "not_authorized_error", "code": "invalid_api_key", '
    b'"requestId": "r-1"}'
)


def middleware_with(value: str, **options: object) -> tuple[ScalingMiddleware, MemoryProvider]:
    provider = MemoryProvider(value)
    cache = KeyCache(provider, min_refresh_interval=0, **options)  # type: ignore[arg-type]
    return ScalingMiddleware(cache), provider


Answer = tuple[int, bytes, int]  # status, body, how many answers before it


def run(
    middleware: ScalingMiddleware,
    url: str,
    method: str = "GET",
    *,
    read: bool = True,
    session_options: dict[str, Any] | None = None,
    **options: Any,
) -> Answer:
    """One request through a new session with ``middleware``: the final status, its body
    (when ``read``) and how many redirects came before it."""

    async def scenario() -> Answer:
        async with (
            aiohttp.ClientSession(middlewares=(middleware,), **(session_options or {})) as s,
            s.request(method, url, **options) as response,
        ):
            body = await response.read() if read else b""
            return response.status, body, len(response.history)

    return asyncio.run(scenario())


def traced(action: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = action()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak - before


# ============================================================================ the basics


def test_sends_the_key_and_leaves_a_success_alone(api: FakeScalingAPI) -> None:
    middleware, provider = middleware_with(api.issue_key())
    status, body, _ = run(middleware, api.url + PATH)
    assert status == 200 and json.loads(body)["data"]
    assert provider.fetches == 1
    assert [r.status for r in api.requests] == [200]


def test_a_rejected_key_is_refreshed_and_the_request_resent_once(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    middleware, provider = middleware_with(old)
    assert run(middleware, api.url + PATH)[0] == 200
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    assert run(middleware, api.url + PATH)[0] == 200
    assert provider.fetches == 2
    assert [r.status for r in api.requests] == [200, 401, 200]
    assert api.requests[-1].key != api.requests[-2].key


def test_the_source_holding_the_rejected_key_returns_the_401(api: FakeScalingAPI) -> None:
    middleware, provider = middleware_with(api.issue_key())
    api.revoke(provider.value)
    status, body, _ = run(middleware, api.url + PATH)
    assert status == 401 and json.loads(body)["code"] == "invalid_api_key"  # read whole
    assert provider.fetches == 2  # one forced fetch, no loop
    assert len(api.requests) == 1


def test_other_401s_are_returned_untouched(hostile_server: HostileServer) -> None:
    body = json.dumps({"statusCode": 401, "code": "missing_authorization_header"}).encode()
    hostile_server.route("/v1" + PATH, HostileServer.json(401, body))
    middleware, provider = middleware_with(KEY)
    assert run(middleware, hostile_server.url + "/v1" + PATH)[:2] == (401, body)
    assert provider.fetches == 1


def test_source_forms_and_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALING_API_KEY", KEY)
    for middleware in (
        ScalingMiddleware(),
        ScalingMiddleware("env:SCALING_API_KEY", ttl=60),
        ScalingMiddleware(MemoryProvider(KEY)),
    ):
        assert middleware.cache.get().reveal() == KEY
        assert_no_secret(repr(middleware), KEY)
    with pytest.raises(ConfigurationError, match="ttl applies when ScalingMiddleware"):
        ScalingMiddleware(KeyCache(MemoryProvider(KEY)), ttl=5)


# ============================================================================ destinations


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/v1/x", "ScalingMiddleware\\(..., allowed_hosts"),
        ("https://api.scaling.cloud.evil.com/v1/x", "refusing to send"),
        ("http://api.scaling.cloud/v1/x", "plain http"),
        ("http://localhost./v1/x", "refusing to send"),
        ("https://api.scaling.cloud/v1/" + KEY, "URL holds an API key"),
    ],
)
def test_refused_destinations_raise_before_anything_is_fetched_or_sent(
    url: str, reason: str
) -> None:
    middleware, provider = middleware_with(KEY)
    with pytest.raises(ConfigurationError, match=reason) as info:
        run(middleware, url)
    assert provider.fetches == 0
    assert_no_secret(str(info.value), KEY)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with HostileServer(default=HostileServer.reply(502)) as server:
        yield server


def test_plain_http_through_the_environment_proxy_is_refused(
    api: FakeScalingAPI, proxy: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    middleware, _ = middleware_with(api.issue_key())
    with pytest.raises(ConfigurationError, match="proxy"):
        run(middleware, api.url + PATH, session_options={"trust_env": True})
    # aiohttp reads the environment only with trust_env=True: without it, no proxy.
    assert run(middleware, api.url + PATH)[0] == 200
    assert proxy.received == b""


def test_plain_http_through_an_explicit_proxy_is_refused(
    api: FakeScalingAPI, proxy: HostileServer
) -> None:
    middleware, _ = middleware_with(api.issue_key())
    with pytest.raises(ConfigurationError, match="proxy"):
        run(middleware, api.url + PATH, proxy=proxy.url)
    assert proxy.received == b""
    assert api.requests == []


# ============================================================================ bodies


def test_replayable_bodies_are_resent_byte_for_byte(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    middleware, provider = middleware_with(old)
    middleware.cache.get()
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    payload = {"name": "Primary", "timezone": "Europe/Paris"}
    assert run(middleware, api.url + PATH, "POST", json=payload)[0] == 201
    first, second = api.requests
    assert (first.status, second.status) == (401, 201)
    assert first.body == second.body == json.dumps(payload).encode()


def test_a_streaming_body_is_not_resent_but_the_key_is_refreshed(
    api: FakeScalingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    old = api.issue_key()
    middleware, provider = middleware_with(old)
    middleware.cache.get()
    new = rotate_and_revoke(api, lambda _: None, old)
    provider.value = new

    async def body() -> AsyncIterator[bytes]:
        yield b'{"name": '
        yield b'"Primary"}'

    with caplog.at_level(logging.WARNING):
        assert run(middleware, api.url + PATH, "POST", data=body())[0] == 401
    assert middleware.cache.get().reveal() == new
    assert provider.fetches == 2
    assert len(api.requests) == 1
    assert "cannot be resent" in caplog.text
    assert_no_secret(caplog.text, old)


def test_success_bodies_are_not_read(api: FakeScalingAPI) -> None:
    middleware, _ = middleware_with(api.issue_key())

    async def scenario() -> int:
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            session.get(api.url + PATH) as response,
        ):
            assert response.content.total_bytes <= 4096  # only what arrived, unread
            return len(await response.read())

    assert asyncio.run(scenario()) > 0


# ============================================================================ hostile 401s

HOSTILE_401S = {
    "gzip-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=1),
    "gzip-gzip-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=2),
    "gzip-bomb-chunked": lambda: HostileServer.gzip_bomb(size=BOMB, layers=1, length=False),
    "endless-gzip": lambda: HostileServer.endless(gzip=True),
    "endless": lambda: HostileServer.endless(),
}


@pytest.mark.parametrize("decompress", [True, False])
@pytest.mark.parametrize("case", sorted(HOSTILE_401S))
def test_at_most_64_kib_of_a_hostile_401_is_read(
    hostile_server: HostileServer, case: str, decompress: bool
) -> None:
    hostile_server.route("/v1" + PATH, HOSTILE_401S[case]())
    middleware, provider = middleware_with(KEY)
    (status, _, _), peak = traced(
        lambda: run(
            middleware,
            hostile_server.url + "/v1" + PATH,
            read=False,
            session_options={"auto_decompress": decompress},
        )
    )
    assert status == 401
    assert peak < MEMORY_BUDGET, f"reading the 401 allocated {peak / MIB:.1f} MiB"
    assert provider.fetches == 1
    assert len(hostile_server.hits) == 1


@pytest.mark.parametrize("decompress", [True, False])
def test_a_compressed_rejection_is_still_recognized(
    hostile_server: HostileServer, decompress: bool
) -> None:
    rejection = HostileServer.json(401, gzip.compress(REJECTION), [("Content-Encoding", "gzip")])
    accepted = HostileServer.json(200, b'{"data": []}')
    hostile_server.route(
        "/v1" + PATH,
        lambda hit: (rejection if KEY in hit.headers.get("authorization", "") else accepted)(hit),
    )
    middleware, provider = middleware_with(KEY)
    middleware.cache.get()
    provider.value = NEXT
    status, _, _ = run(
        middleware,
        hostile_server.url + "/v1" + PATH,
        session_options={"auto_decompress": decompress},
    )
    assert status == 200
    assert provider.fetches == 2


def test_a_large_401_is_handed_back_whole(hostile_server: HostileServer) -> None:
    body = b'{"statusCode": 401, "code": "invalid_api_key", "pad": "' + b"x" * 200_000 + b'"}'
    hostile_server.route(
        "/v1" + PATH,
        lambda hit: iter(
            [
                b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
            ]
        ),
    )
    middleware, provider = middleware_with(KEY)
    assert run(middleware, hostile_server.url + "/v1" + PATH)[:2] == (401, body)
    assert provider.fetches == 1


def test_a_stalled_401_is_given_up_on_in_bounded_time(
    hostile_server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scaling_credentials._api as api_module

    monkeypatch.setattr(api_module, "ERROR_BODY_SECONDS", 0.2)

    def stall(hit: object) -> Iterator[bytes | float]:
        yield (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nConnection: close\r\n\r\n{"
        )
        yield 3600.0  # stalls until the server stops

    hostile_server.route("/v1" + PATH, stall)
    middleware, provider = middleware_with(KEY)
    status, _, _ = run(middleware, hostile_server.url + "/v1" + PATH, read=False)
    assert status == 401
    assert provider.fetches == 1


# ============================================================================ redirects


def test_the_key_never_follows_a_redirect_to_another_origin(
    hostile_server: HostileServer,
) -> None:
    with HostileServer() as second:
        second.route("/v1" + PATH, HostileServer.json(401, REJECTION))
        hostile_server.route("/v1/redirect", HostileServer.redirect(second.url + "/v1" + PATH))
        hostile_server.route("/v1/back", HostileServer.redirect(second.url + "/v1/bounce"))
        second.route("/v1/bounce", HostileServer.redirect(hostile_server.url + "/v1" + PATH))
        hostile_server.route("/v1" + PATH, HostileServer.json(401, REJECTION))
        middleware, provider = middleware_with(KEY)
        middleware.cache.get()
        provider.value = NEXT  # a refetch would resend with this
        assert run(middleware, hostile_server.url + "/v1/redirect")[0::2] == (401, 1)
        # There and back: after leaving the origin, the key does not come back either.
        assert run(middleware, hostile_server.url + "/v1/back")[0::2] == (401, 2)
        assert provider.fetches == 1
        keyed = [hit.path for hit in hostile_server.hits if "authorization" in hit.headers]
        assert keyed == ["/v1/redirect", "/v1/back"]
        assert all("authorization" not in hit.headers for hit in second.hits)
        assert_no_secret(second.received.decode("latin-1"), KEY)


def test_a_401_after_a_same_origin_redirect_is_a_rejection(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    middleware, provider = middleware_with(old)
    middleware.cache.get()
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    api.script(ScriptedResponse(307, b"", headers=(("Location", api.url + PATH),)))
    assert run(middleware, api.url + "/elsewhere")[0] == 200
    assert [r.status for r in api.requests] == [307, 401, 200]
    assert provider.fetches == 2


def test_an_unfollowed_redirect_then_a_new_request_gets_the_key(api: FakeScalingAPI) -> None:
    middleware, _ = middleware_with(api.issue_key())
    api.script(ScriptedResponse(307, b"", headers=(("Location", api.url + PATH),)))

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            statuses = []
            for url, follow in ((api.url + "/x", False), (api.url + PATH, True)):
                async with session.get(url, allow_redirects=follow) as response:
                    statuses.append(response.status)
            return statuses

    assert asyncio.run(scenario()) == [307, 200]


# ============================================================================ under load


def aiohttp_client(middleware: ScalingMiddleware) -> AsyncClientFactory:
    @contextlib.asynccontextmanager
    async def open_client(
        base_url: str,
    ) -> AsyncIterator[Callable[[str], Awaitable[tuple[int, int]]]]:
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(middlewares=(middleware,), connector=connector) as s:

            async def send(path: str) -> tuple[int, int]:
                async with s.get(base_url + path) as response:
                    await response.read()
                    return response.status, len(response.history)

            yield send

    return open_client


def test_rotation_under_200_tasks_with_default_settings(api: FakeScalingAPI) -> None:
    keys = [api.issue_key()]
    provider = MemoryProvider(keys[0])
    middleware = ScalingMiddleware(provider)  # the library's default KeyCache settings

    def write(value: str) -> None:
        provider.value = value

    result = run_rotation_tasks(
        api,
        None,
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        client=aiohttp_client(middleware),
        tasks=200,
        rotations=3,
    )
    assert len(result.statuses) == 200 * 4
    assert result.failed == 0, f"{result.failed} failed requests"
    assert middleware.cache.stats.fetches == 1 + 3  # one fetch per rotation
    assert middleware.cache.stats.forced_fetches == 3
    assert sum(1 for r in api.requests if r.status == 401) >= 3  # retried, not failed
