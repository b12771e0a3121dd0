"""What is particular to ScalingMiddleware (the promises shared by every client are in
test_integrations.py): proxies as aiohttp uses them, ``auto_decompress=False``, a 401
that stalls, and redirects seen hop by hop."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from scaling_credentials import ConfigurationError, KeyCache
from scaling_credentials.integrations.aiohttp import ScalingMiddleware
from scaling_credentials.testing import (
    FakeScalingAPI,
    HostileServer,
    MemoryProvider,
    ScriptedResponse,
)
from scaling_credentials.testing.provider_suite import assert_no_secret

PATH = "/oncall/schedules"
KEY = "scl_live_AIOHTTPkey0123456789abcdefXYZab"
NEXT = "scl_live_AIOHTTPnext0123456789abcdefXYZa"
MIB = 1024 * 1024
Traced = Callable[[Callable[[], Any]], tuple[Any, int]]


def middleware_with(value: str) -> tuple[ScalingMiddleware, MemoryProvider]:
    provider = MemoryProvider(value)
    return ScalingMiddleware(KeyCache(provider, min_refresh_interval=0)), provider


def status_of(
    middleware: ScalingMiddleware,
    url: str,
    *,
    session_options: dict[str, Any] | None = None,
    **options: Any,
) -> int:
    """One GET through a new session with ``middleware``; its body is not read."""

    async def scenario() -> int:
        async with (
            aiohttp.ClientSession(middlewares=(middleware,), **(session_options or {})) as s,
            s.get(url, **options) as response,
        ):
            return response.status

    return asyncio.run(scenario())


# ============================================================================ proxies


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch, hostile_server: HostileServer) -> HostileServer:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return hostile_server


def test_plain_http_through_the_environment_proxy_is_refused(
    api: FakeScalingAPI, proxy: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    middleware, _ = middleware_with(api.issue_key())
    with pytest.raises(ConfigurationError, match="proxy"):
        status_of(middleware, api.url + PATH, session_options={"trust_env": True})
    # aiohttp reads the environment only with trust_env=True: without it, no proxy.
    assert status_of(middleware, api.url + PATH) == 200
    assert proxy.received == b""


def test_plain_http_through_an_explicit_proxy_is_refused(
    api: FakeScalingAPI, proxy: HostileServer
) -> None:
    middleware, _ = middleware_with(api.issue_key())
    with pytest.raises(ConfigurationError, match="proxy"):
        status_of(middleware, api.url + PATH, proxy=proxy.url)
    assert proxy.received == b""
    assert api.requests == []


def assert_no_key(*texts: bytes) -> None:
    for text in texts:
        shown = text.decode("latin-1")
        for secret in (KEY, KEY.removeprefix("scl_live_")):
            assert_no_secret(secret, shown)


def test_an_explicit_proxy_is_refused_after_the_host_was_reached_directly(
    proxy: HostileServer,
) -> None:
    # The destination passed its checks once (direct); the same URL through a proxy is a
    # new route, which the proxy would read in cleartext.
    with HostileServer() as origin:
        origin.route(PATH, HostileServer.json(200, b'{"data": []}'))
        middleware, _ = middleware_with(KEY)

        async def scenario() -> None:
            async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
                async with session.get(origin.url + PATH) as response:
                    assert response.status == 200
                with pytest.raises(ConfigurationError, match="proxy"):
                    async with session.get(origin.url + PATH, proxy=proxy.url):
                        pass

        asyncio.run(scenario())
        assert proxy.hits == []
        assert_no_key(proxy.received)
        assert len(origin.hits) == 1


def test_a_middleware_shared_with_a_trust_env_session_refuses_its_proxy(
    proxy: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One middleware, two sessions: the one without trust_env reaches the host directly;
    # the one with it would go through HTTP_PROXY, and is refused.
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with HostileServer() as origin:
        origin.route(PATH, HostileServer.json(200, b'{"data": []}'))
        middleware, _ = middleware_with(KEY)
        assert status_of(middleware, origin.url + PATH) == 200
        with pytest.raises(ConfigurationError, match="proxy"):
            status_of(middleware, origin.url + PATH, session_options={"trust_env": True})
        assert proxy.hits == []
        assert_no_key(proxy.received)
        assert len(origin.hits) == 1


# ============================================================================ 401 bodies

RAW_401S = {
    "gzip-bomb": lambda: HostileServer.gzip_bomb(size=256 * MIB, layers=1),
    "gzip-bomb-chunked": lambda: HostileServer.gzip_bomb(size=256 * MIB, length=False),
    "endless-gzip": lambda: HostileServer.endless(gzip=True),
}


@pytest.mark.parametrize("case", sorted(RAW_401S))
def test_without_auto_decompress_the_shared_decoder_bounds_a_bomb(
    hostile_server: HostileServer, case: str, traced: Traced
) -> None:
    hostile_server.route("/v1" + PATH, RAW_401S[case]())
    middleware, provider = middleware_with(KEY)
    options = {"auto_decompress": False}
    status, peak = traced(
        lambda: status_of(middleware, hostile_server.url + "/v1" + PATH, session_options=options)
    )
    assert status == 401
    assert peak < 4 * MIB, f"reading the 401 allocated {peak / MIB:.1f} MiB"
    assert provider.fetches == 1


def test_without_auto_decompress_a_compressed_rejection_is_recognized(
    hostile_server: HostileServer,
) -> None:
    rejection = HostileServer.json(
        401,
        gzip.compress(b'{"statusCode": 401, "code": "invalid_api_key"}'),
        [("Content-Encoding", "gzip")],
    )
    accepted = HostileServer.json(200, b'{"data": []}')
    hostile_server.route(
        "/v1" + PATH,
        lambda hit: (rejection if KEY in hit.headers.get("authorization", "") else accepted)(hit),
    )
    middleware, provider = middleware_with(KEY)
    middleware.cache.get()
    provider.value = NEXT
    options = {"auto_decompress": False}
    assert status_of(middleware, hostile_server.url + "/v1" + PATH, session_options=options) == 200
    assert provider.fetches == 2


@pytest.mark.parametrize(
    ("session_setting", "request_setting"),
    [(True, False), (False, True), (True, None), (False, None)],
    ids=["request-off", "request-on", "session-on", "session-off"],
)
def test_auto_decompress_is_read_per_request(
    hostile_server: HostileServer, session_setting: bool, request_setting: bool | None
) -> None:
    # A request's auto_decompress= overrides the session's: the middleware reads the
    # body as this answer was handed over (decoded by aiohttp, or still gzip'd).
    rejection = HostileServer.json(
        401,
        gzip.compress(b'{"statusCode": 401, "code": "invalid_api_key"}'),
        [("Content-Encoding", "gzip")],
    )
    accepted = HostileServer.json(200, b'{"data": []}')
    hostile_server.route(
        "/v1" + PATH,
        lambda hit: (rejection if KEY in hit.headers.get("authorization", "") else accepted)(hit),
    )
    middleware, provider = middleware_with(KEY)
    middleware.cache.get()
    provider.value = NEXT
    options = {} if request_setting is None else {"auto_decompress": request_setting}
    status = status_of(
        middleware,
        hostile_server.url + "/v1" + PATH,
        session_options={"auto_decompress": session_setting},
        **options,
    )
    assert status == 200
    assert provider.fetches == 2
    assert len(hostile_server.hits) == 2


def test_an_encoding_aiohttp_leaves_encoded_is_decoded_by_the_middleware(
    hostile_server: HostileServer,
) -> None:
    # aiohttp decodes one known encoding, not "gzip, gzip": with auto_decompress on, the
    # body it hands over is still encoded, and the bounded decoder undoes both layers.
    body = gzip.compress(gzip.compress(b'{"statusCode": 401, "code": "invalid_api_key"}'))
    rejection = HostileServer.json(401, body, [("Content-Encoding", "gzip, gzip")])
    accepted = HostileServer.json(200, b'{"data": []}')
    hostile_server.route(
        "/v1" + PATH,
        lambda hit: (rejection if KEY in hit.headers.get("authorization", "") else accepted)(hit),
    )
    middleware, provider = middleware_with(KEY)
    middleware.cache.get()
    provider.value = NEXT
    assert status_of(middleware, hostile_server.url + "/v1" + PATH) == 200
    assert provider.fetches == 2
    assert len(hostile_server.hits) == 2


def test_a_stalled_401_is_given_up_on_in_bounded_time(
    hostile_server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each read waits at most for what is left of ERROR_BODY_SECONDS (shortened here):
    # a body that stops coming does not hold the request until aiohttp's own timeout.
    import scaling_credentials._api as api_module

    monkeypatch.setattr(api_module, "ERROR_BODY_SECONDS", 0.2)

    def stall(hit: object) -> Iterator[bytes | float]:
        yield (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nConnection: close\r\n\r\n{"
        )
        yield 3600.0  # until the server stops

    hostile_server.route("/v1" + PATH, stall)
    middleware, provider = middleware_with(KEY)
    assert status_of(middleware, hostile_server.url + "/v1" + PATH) == 401
    assert provider.fetches == 1


# ============================================================================ redirects


def test_an_unfollowed_redirect_then_a_new_request_gets_the_key(api: FakeScalingAPI) -> None:
    # The middleware notes the redirect it answered; a later request that is not the
    # next hop is a request of its own, and carries the key.
    middleware, _ = middleware_with(api.issue_key())
    elsewhere = "http://127.0.0.1:9/v1/nowhere"  # another origin, never reached
    api.script(ScriptedResponse(307, b"", headers=(("Location", elsewhere),)))

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            statuses = []
            for url, follow in ((api.url + "/x", False), (api.url + PATH, True)):
                async with session.get(url, allow_redirects=follow) as response:
                    statuses.append(response.status)
            return statuses

    assert asyncio.run(scenario()) == [307, 200]
    assert [r.key is not None for r in api.requests] == [True, True]


def test_a_request_to_where_an_unfollowed_redirect_pointed_gets_the_key(
    api: FakeScalingAPI, hostile_server: HostileServer
) -> None:
    # A redirect to another origin, not followed (allow_redirects=False); then a request
    # of the caller's own, in the same task, to exactly that URL: not a redirect hop, so
    # it carries the key.
    middleware, _ = middleware_with(api.issue_key())
    hostile_server.route("/v1/redirect", HostileServer.redirect(api.url + PATH))

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            statuses = []
            for url, follow in (
                (hostile_server.url + "/v1/redirect", False),
                (api.url + PATH, True),
            ):
                async with session.get(url, allow_redirects=follow) as response:
                    statuses.append(response.status)
            return statuses

    assert asyncio.run(scenario()) == [307, 200]
    assert [r.key is not None for r in api.requests] == [True]
