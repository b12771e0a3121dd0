"""ScalingAuth's two drivers, ``sync_auth_flow`` and ``async_auth_flow``, on every branch.

Each test runs once per driver (the ``driver`` fixture): first the flow stepped by hand
(``next``/``send`` or ``__anext__``/``asend``), then real ``httpx.Client`` and
``httpx.AsyncClient`` requests, against FakeScalingAPI over sockets or a MockTransport. The
async steps run on one event loop per test, so a test reads the same for both drivers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal, TypeVar

import httpx
import pytest

from scaling_credentials import ApiKey, ConfigurationError, KeyCache, ScalingAuth
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    MemoryProvider,
    ScriptedResponse,
)
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret

K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"
URL = "https://api.scaling.cloud/v1/oncall/schedules"
PATH = "/oncall/schedules"
MAX_ERROR_BODY = 64 * 1024

T = TypeVar("T")
Kind = Literal["sync", "async"]


# ---------------------------------------------------------------------------- the drivers


class Flow:
    """One request through one of ScalingAuth's drivers, stepped by hand."""

    def __init__(self, driver: Driver, auth: ScalingAuth, request: httpx.Request) -> None:
        self._driver = driver
        if driver.kind == "sync":
            self._sync = auth.sync_auth_flow(request)
        else:
            self._async = auth.async_auth_flow(request)

    def first(self) -> httpx.Request:
        """The request as the auth sends it first."""
        if self._driver.kind == "sync":
            return next(self._sync)
        return self._driver.run(self._async.__anext__())

    def send(self, response: httpx.Response) -> httpx.Request | None:
        """Answer the last request: the request to send again, or ``None`` when the flow
        ended (the client returns ``response`` to its caller)."""
        if self._driver.kind == "sync":
            try:
                return self._sync.send(response)
            except StopIteration:
                return None

        async def step() -> httpx.Request | None:
            try:
                return await self._async.asend(response)
            except StopAsyncIteration:
                return None

        return self._driver.run(step())


class Session:
    """An ``httpx.Client`` or ``httpx.AsyncClient``, called synchronously."""

    def __init__(self, driver: Driver, client: httpx.Client | httpx.AsyncClient) -> None:
        self._driver = driver
        self._client = client

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        if isinstance(self._client, httpx.Client):
            return self._client.request(method, url, **options)
        return self._driver.run(self._client.request(method, url, **options))

    @contextmanager
    def stream(self, method: str, url: str) -> Iterator[httpx.Response]:
        if isinstance(self._client, httpx.Client):
            with self._client.stream(method, url) as response:
                yield response
            return
        manager = self._client.stream(method, url)
        response = self._driver.run(manager.__aenter__())
        try:
            yield response
        finally:
            self._driver.run(manager.__aexit__(None, None, None))


class Driver:
    """The sync or the async side of httpx, for tests written once for both."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._loop = asyncio.new_event_loop() if kind == "async" else None

    def run(self, step: Awaitable[T]) -> T:
        assert self._loop is not None

        async def bounded() -> T:
            return await asyncio.wait_for(step, timeout=30)

        return self._loop.run_until_complete(bounded())

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    def read(self, response: httpx.Response) -> bytes:
        """The whole body of a response this driver's side received."""
        if self.kind == "sync":
            return response.read()
        return self.run(response.aread())

    def flow(self, auth: ScalingAuth, request: httpx.Request) -> Flow:
        return Flow(self, auth, request)

    def client(self, auth: ScalingAuth, **options: Any) -> AbstractContextManager[Session]:
        return self._client(auth, **options)

    @contextmanager
    def _client(self, auth: ScalingAuth, **options: Any) -> Iterator[Session]:
        if self.kind == "sync":
            with httpx.Client(auth=auth, **options) as client:
                yield Session(self, client)
            return
        async_client = httpx.AsyncClient(auth=auth, **options)
        self.run(async_client.__aenter__())
        try:
            yield Session(self, async_client)
        finally:
            self.run(async_client.aclose())

    def one_shot_body(self, chunks: list[bytes]) -> Iterable[bytes] | AsyncIterator[bytes]:
        """A request body that can be sent once (a generator of this driver's kind)."""
        if self.kind == "sync":
            return (chunk for chunk in chunks)

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return body()


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    driver = Driver(request.param)
    try:
        yield driver
    finally:
        driver.close()


class ChunkStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body of unknown length that either driver can read, or that fails
    the test when anyone reads it (``chunks=None``)."""

    def __init__(self, chunks: list[bytes] | None) -> None:
        self._chunks = chunks

    def _take(self) -> list[bytes]:
        if self._chunks is None:
            raise AssertionError("the auth read a body it must leave alone")
        return self._chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._take()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._take():
            yield chunk


def error_body(code: str, status: int = 401) -> bytes:
    return json.dumps(
        {"statusCode": status, "type": "not_authorized_error", "code": code, "requestId": "r-1"}
    ).encode()


def rejected(request: httpx.Request, code: str = "invalid_api_key") -> httpx.Response:
    return httpx.Response(401, content=error_body(code), request=request)


def auth_with(value: str = K1) -> tuple[ScalingAuth, MemoryProvider]:
    provider = MemoryProvider(value)
    return ScalingAuth(KeyCache(provider, clock=FakeClock(), min_refresh_interval=0)), provider


def sent_key(request: httpx.Request) -> ApiKey:
    """The key in the request's one Authorization header."""
    (header,) = request.headers.get_list("Authorization")
    scheme, _, value = header.partition(" ")
    assert scheme == "Bearer"
    return ApiKey(value)


# ---------------------------------------------------------------------------- by hand


def test_the_key_is_sent_and_a_success_ends_the_flow(driver: Driver) -> None:
    auth, provider = auth_with()
    flow = driver.flow(auth, httpx.Request("GET", URL))
    request = flow.first()
    assert_key_is(sent_key(request), K1)
    assert flow.send(httpx.Response(200, request=request)) is None
    assert provider.fetches == 1


def test_a_rejected_key_is_refreshed_and_the_request_sent_once_more(driver: Driver) -> None:
    auth, provider = auth_with()
    flow = driver.flow(auth, httpx.Request("POST", URL, json={"name": "a"}))
    request = flow.first()
    provider.value = K2
    retry = flow.send(rejected(request))
    assert retry is not None
    assert_key_is(sent_key(retry), K2)
    assert retry.content == b'{"name":"a"}'
    # Even another rejection ends the flow: never more than one retry.
    assert flow.send(rejected(retry)) is None
    assert provider.rejected == [ApiKey(K1)]
    assert provider.fetches == 2


@pytest.mark.parametrize(
    ("fault", "warning"),
    [
        ("same-key", "memory:memory still holds it"),
        ("refresh-fails", "refreshing it from memory:memory failed (ProviderError)"),
    ],
)
def test_the_401_is_returned_when_no_other_key_comes(
    driver: Driver, caplog: pytest.LogCaptureFixture, fault: str, warning: str
) -> None:
    auth, provider = auth_with()
    flow = driver.flow(auth, httpx.Request("GET", URL))
    request = flow.first()
    provider.fail = fault == "refresh-fails"
    with caplog.at_level(logging.WARNING, logger="scaling_credentials"):
        assert flow.send(rejected(request)) is None
    assert warning in caplog.text
    assert ApiKey(K1).masked in caplog.text
    assert_no_secret(K1, caplog.text)
    assert provider.fetches == 2  # one forced fetch, no retry


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, error_body("missing_authorization_header")),
        (401, b"<html>Unauthorized</html>"),
        (401, b""),
        (401, b"{not json"),
        (401, error_body("not_authorized")),
        (403, error_body("invalid_api_key", 403)),
        (500, b"upstream down"),
    ],
    ids=["missing-header", "html", "empty", "not-json", "not-authorized", "403", "500"],
)
def test_other_answers_are_returned_untouched(driver: Driver, status: int, body: bytes) -> None:
    auth, provider = auth_with()
    flow = driver.flow(auth, httpx.Request("GET", URL))
    request = flow.first()
    response = httpx.Response(status, content=body, request=request)
    assert flow.send(response) is None
    assert response.content == body
    assert provider.fetches == 1  # no refresh


def test_non_401_bodies_are_not_read(driver: Driver) -> None:
    auth, _ = auth_with()
    flow = driver.flow(auth, httpx.Request("GET", URL))
    request = flow.first()
    response = httpx.Response(200, stream=ChunkStream(None), request=request)
    assert flow.send(response) is None
    assert not response.is_stream_consumed


def test_a_401_with_a_huge_content_length_is_not_read(driver: Driver) -> None:
    auth, provider = auth_with()
    flow = driver.flow(auth, httpx.Request("GET", URL))
    request = flow.first()
    response = httpx.Response(
        401,
        headers={"Content-Length": str(10 * 1024 * 1024)},
        stream=ChunkStream(None),
        request=request,
    )
    assert flow.send(response) is None
    assert not response.is_stream_consumed
    assert provider.fetches == 1


def test_a_401_of_unknown_length_over_the_cap_is_returned_whole(driver: Driver) -> None:
    auth, provider = auth_with()
    flow = driver.flow(auth, httpx.Request("GET", URL))
    request = flow.first()
    chunks = [bytes([65 + i % 26]) * 16 * 1024 for i in range(8)]  # 128 KiB, no length
    response = httpx.Response(401, stream=ChunkStream(chunks), request=request)
    assert flow.send(response) is None
    assert provider.fetches == 1  # not a rejection: no refresh
    # What the auth peeked at is put back: the caller reads the whole body.
    body = driver.read(response)
    assert body == b"".join(chunks) and len(body) > MAX_ERROR_BODY


def test_a_one_shot_body_is_not_resent_but_the_key_is_refreshed(driver: Driver) -> None:
    auth, provider = auth_with()
    body = driver.one_shot_body([b'{"name": ', b'"streamed"}'])
    flow = driver.flow(auth, httpx.Request("POST", URL, content=body))
    request = flow.first()
    provider.value = K2
    assert flow.send(rejected(request)) is None
    current = auth.cache.peek()
    assert current is not None
    assert_key_is(current, K2)  # the next request goes out with the new key


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/v1/oncall/schedules",
        "https://api.scaling.cloud.evil.com/v1",
        "http://api.scaling.cloud/v1/oncall/schedules",
        "http://10.0.0.5/v1",
    ],
)
def test_a_refused_destination_raises_before_the_key_is_fetched(driver: Driver, url: str) -> None:
    auth, provider = auth_with()
    request = httpx.Request("GET", url)
    with pytest.raises(ConfigurationError, match="refusing to send"):
        driver.flow(auth, request).first()
    assert "Authorization" not in request.headers
    assert provider.fetches == 0


def test_allowed_hosts_need_https(driver: Driver) -> None:
    auth, _ = auth_with()
    auth = ScalingAuth(auth.cache, allowed_hosts=["gateway.example.com", "*.internal.example"])
    for url in ("https://gateway.example.com/v1", "https://a.b.internal.example/v1"):
        assert_key_is(sent_key(driver.flow(auth, httpx.Request("GET", url)).first()), K1)
    with pytest.raises(ConfigurationError, match="plain http"):
        driver.flow(auth, httpx.Request("GET", "http://gateway.example.com/v1")).first()
    with pytest.raises(ConfigurationError):
        driver.flow(auth, httpx.Request("GET", "https://internal.example.evil/v1")).first()


def test_the_header_is_set_once_and_follows_the_key(driver: Driver) -> None:
    auth, provider = auth_with()
    # A header the caller set is replaced, not joined by a second one.
    stale = httpx.Request("GET", URL, headers={"Authorization": "Bearer scl_live_callers0wn"})
    assert_key_is(sent_key(driver.flow(auth, stale).first()), K1)
    # The same key for every request while it is cached: one fetch.
    for _ in range(3):
        assert_key_is(sent_key(driver.flow(auth, httpx.Request("GET", URL)).first()), K1)
    assert provider.fetches == 1
    # After a rejection, the retry carries the new key, once, and so does what follows.
    flow = driver.flow(auth, httpx.Request("GET", URL))
    request = flow.first()
    provider.value = K2
    retry = flow.send(rejected(request))
    assert retry is not None
    assert_key_is(sent_key(retry), K2)
    assert_key_is(sent_key(driver.flow(auth, httpx.Request("GET", URL)).first()), K2)
    assert provider.fetches == 2


# ---------------------------------------------------------------------------- real clients


def test_a_refused_host_gets_nothing_through_a_client(driver: Driver) -> None:
    auth, provider = auth_with()
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    with driver.client(auth, transport=httpx.MockTransport(handler)) as client:
        for url in ("https://example.com/v1/oncall/schedules", "http://api.scaling.cloud/v1"):
            with pytest.raises(ConfigurationError):
                client.request("GET", url)
    assert sent == []
    assert provider.fetches == 0


@pytest.mark.parametrize("big", [False, True], ids=["rejection", "one-mebibyte"])
def test_a_401_of_unknown_length_through_a_client(driver: Driver, big: bool) -> None:
    body = b"x" * (1024 * 1024) if big else error_body("invalid_api_key")
    auth, provider = auth_with()
    auth.cache.get()
    provider.value = K2
    sent: list[ApiKey] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(sent_key(request))
        if len(sent) == 1:  # no Content-Length: the auth reads at most the cap
            chunks = [body[i : i + 16 * 1024] for i in range(0, len(body), 16 * 1024)]
            return httpx.Response(401, stream=ChunkStream(chunks))
        return httpx.Response(200, json={"data": []})

    with driver.client(auth, transport=httpx.MockTransport(handler)) as client:
        response = client.request("GET", URL)
    if big:  # not an error body: returned whole, no refresh, no retry
        assert (response.status_code, response.content) == (401, body)
        assert provider.fetches == 1 and sent == [ApiKey(K1)]
    else:
        assert response.status_code == 200
        assert provider.fetches == 2 and sent == [ApiKey(K1), ApiKey(K2)]


def test_a_rotation_against_the_fake_api(driver: Driver, api: FakeScalingAPI) -> None:
    old = api.issue_key()
    provider = MemoryProvider(old)
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
    with driver.client(auth, base_url=api.url) as client:
        assert client.request("GET", PATH).status_code == 200
        provider.value = new = api.rotate()
        api.revoke(old)
        response = client.request("POST", PATH, json={"name": "Replay me", "timezone": "UTC"})
    assert response.status_code == 201
    assert [r.status_code for r in response.history] == [401]
    posts = [r for r in api.requests if r.method == "POST"]
    assert [(r.status, r.key) for r in posts] == [
        (401, ApiKey(old).masked),
        (201, ApiKey(new).masked),
    ]
    assert posts[0].body == posts[1].body  # resent byte for byte
    assert provider.fetches == 2


def test_a_one_shot_body_gets_the_401_and_the_next_request_the_new_key(
    driver: Driver, api: FakeScalingAPI
) -> None:
    old = api.issue_key()
    provider = MemoryProvider(old)
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
    auth.cache.get()  # warm: the old key is cached
    provider.value = new = api.rotate()
    api.revoke(old)
    with driver.client(auth, base_url=api.url) as client:
        body = driver.one_shot_body([b'{"name": "stream"}'])
        first = client.request("POST", PATH, content=body)
        second = client.request("POST", PATH, json={"name": "next"})
    assert (first.status_code, second.status_code) == (401, 201)
    assert [r.key for r in api.requests] == [ApiKey(old).masked, ApiKey(new).masked]


def test_streaming_responses_stay_streaming(driver: Driver, api: FakeScalingAPI) -> None:
    auth = ScalingAuth(MemoryProvider(api.issue_key()))
    with (
        driver.client(auth, base_url=api.url) as client,
        client.stream("GET", PATH) as response,
    ):
        assert response.status_code == 200
        assert not response.is_stream_consumed
        assert b"Primary on-call" in driver.read(response)


def test_authorization_does_not_follow_a_redirect_to_another_origin(
    driver: Driver, api: FakeScalingAPI
) -> None:
    key = api.issue_key()
    with FakeScalingAPI() as other:
        target = other.url.replace("127.0.0.1", "localhost") + PATH
        api.script(ScriptedResponse(302, b"", headers=(("Location", target),)))
        auth = ScalingAuth(MemoryProvider(key))
        with driver.client(auth, base_url=api.url, follow_redirects=True) as client:
            response = client.request("GET", PATH)
        assert response.status_code == 401
        assert [r.key for r in other.requests] == [None]  # no Authorization arrived


def test_a_401_from_a_redirect_target_that_never_got_the_key_is_no_rejection(
    driver: Driver, api: FakeScalingAPI
) -> None:
    # The redirect target never received the key (httpx drops Authorization across
    # origins): its 401 invalid_api_key says nothing about the key, so no forced refetch
    # and no resend; the 401 is returned as it is.
    key = api.issue_key()
    with FakeScalingAPI() as other:
        other.script(ScriptedResponse(401, error_body("invalid_api_key")))
        target = other.url + PATH
        api.script(ScriptedResponse(307, b"", headers=(("Location", target),)))
        provider = MemoryProvider(key)
        auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
        auth.cache.get()
        provider.value = K2  # a refetch would find another key and resend
        with driver.client(auth, base_url=api.url, follow_redirects=True) as client:
            response = client.request("GET", PATH)
        assert response.status_code == 401
        assert response.url == httpx.URL(target)
        assert provider.fetches == 1  # no forced refetch
        assert len(api.requests) == 1  # no resend
        assert [r.key for r in other.requests] == [None]


def test_a_401_from_the_origin_that_got_the_key_after_a_same_origin_redirect_is_a_rejection(
    driver: Driver, api: FakeScalingAPI
) -> None:
    provider = MemoryProvider(K1)
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
    auth.cache.get()
    moved = ScriptedResponse(302, b"", headers=(("Location", api.url + PATH),))
    api.script(moved, ScriptedResponse(401, error_body("invalid_api_key")), moved)
    provider.value = api.issue_key()
    with driver.client(auth, base_url=api.url, follow_redirects=True) as client:
        response = client.request("GET", "/moved")
    assert response.status_code == 200
    assert provider.fetches == 2
    assert [r.path for r in api.requests] == ["/v1/moved", "/v1" + PATH] * 2


def test_a_401_after_a_round_trip_through_another_origin_is_no_rejection(driver: Driver) -> None:
    # A -> B -> A: httpx dropped the key on the way to B, so the final request to A does
    # not carry it either, although A is the origin the key was first sent to.
    auth, provider = auth_with()
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("Authorization")))
        if request.url.path == "/first":
            return httpx.Response(302, headers={"Location": "https://eu.api.scaling.cloud/b"})
        if request.url.host == "eu.api.scaling.cloud":
            return httpx.Response(302, headers={"Location": "https://api.scaling.cloud/second"})
        return rejected(request)

    auth.cache.get()
    provider.value = K2
    with driver.client(
        auth, transport=httpx.MockTransport(handler), follow_redirects=True
    ) as client:
        response = client.request("GET", "https://api.scaling.cloud/first")
    assert response.status_code == 401
    assert [auth is not None for _, auth in seen] == [True, False, False]
    assert provider.fetches == 1
