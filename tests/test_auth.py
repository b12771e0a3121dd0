"""ScalingAuth, in two layers: the flow driven by hand, then real clients against
FakeScalingAPI over sockets."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    EnvProvider,
    KeyCache,
    ScalingAuth,
)
from scaling_credentials._auth import (
    _is_loopback,
    check_destination,
    is_key_rejection,
    retry_decision,
)
from scaling_credentials.testing import FakeClock, FakeScalingAPI, MemoryProvider
from scaling_credentials.testing.provider_suite import assert_no_secret

K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"

URL = "https://api.scaling.cloud/v1/oncall/schedules"


def error_body(code: str, status: int = 401) -> bytes:
    return json.dumps(
        {"statusCode": status, "type": "not_authorized_error", "code": code, "requestId": "r-1"}
    ).encode()


def rejected(request: httpx.Request, code: str = "invalid_api_key") -> httpx.Response:
    return httpx.Response(401, content=error_body(code), request=request)


def auth_with(value: str = K1, **options: object) -> tuple[ScalingAuth, MemoryProvider]:
    provider = MemoryProvider(value)
    options.setdefault("min_refresh_interval", 0)
    cache = KeyCache(provider, clock=FakeClock(), **options)  # type: ignore[arg-type]
    return ScalingAuth(cache), provider


# ---------------------------------------------------------------------------- plain decisions


def test_retry_decision() -> None:
    a, b = ApiKey(K1), ApiKey(K2)
    assert retry_decision(a, b, replayable=True) == "retry"
    assert retry_decision(a, ApiKey(K1), replayable=True) == "same-key"
    assert retry_decision(a, b, replayable=False) == "not-replayable"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, error_body("invalid_api_key"), True),
        (401, error_body("missing_authorization_header"), False),
        (401, error_body("not_authorized"), False),
        (401, b"<html>401</html>", False),
        (401, b"", False),
        (401, b"{not json", False),
        (401, b'{"code": 401}', False),
        (401, b'["invalid_api_key"]', False),
        (403, error_body("invalid_api_key", 403), False),
        (500, error_body("invalid_api_key", 500), False),
    ],
)
def test_is_key_rejection(status: int, body: bytes, expected: bool) -> None:
    request = httpx.Request("GET", URL)
    assert is_key_rejection(httpx.Response(status, content=body, request=request)) is expected


@pytest.mark.parametrize(
    "url",
    [
        "https://api.scaling.cloud/v1/x",
        "https://eu.api.scaling.cloud/v1/x",
        "http://127.0.0.1:8080/v1/x",
        "http://localhost:1/v1",
        "http://127.8.9.10/v1",
        "http://[::1]:9000/v1",
    ],
)
def test_destinations_that_may_receive_the_key(url: str) -> None:
    check_destination(httpx.URL(url))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/v1", "refusing to send"),
        ("https://api.scaling.cloud.evil.com/v1", "refusing to send"),
        ("https://evilapi.scaling.cloud/v1", "refusing to send"),
        ("https://scaling.cloud/v1", "refusing to send"),
        ("http://api.scaling.cloud/v1", "plain http"),
        ("http://10.0.0.5/v1", "refusing to send"),
        # The trailing-dot form is resolved through DNS, not /etc/hosts: not loopback.
        ("http://localhost./v1", "refusing to send"),
        ("http://LOCALHOST.:8080/v1", "refusing to send"),
        ("https://localhost./v1", "refusing to send"),
        ("http://localhost.localdomain/v1", "refusing to send"),
        ("http://127.0.0.1.nip.io/v1", "refusing to send"),
    ],
)
def test_destinations_that_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        check_destination(httpx.URL(url))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("0:0:0:0:0:0:0:1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost.", False),
        ("localhost..", False),
        ("localhost.localdomain", False),
        ("127.0.0.1.", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert _is_loopback(host) is expected


def test_allowed_hosts_need_https() -> None:
    auth, _ = auth_with()
    auth = ScalingAuth(auth.cache, allowed_hosts=["gateway.example.com", "*.internal.example"])
    for url in ("https://gateway.example.com/v1", "https://a.b.internal.example/v1"):
        next(auth.sync_auth_flow(httpx.Request("GET", url)))
    with pytest.raises(ConfigurationError, match="plain http"):
        next(auth.sync_auth_flow(httpx.Request("GET", "http://gateway.example.com/v1")))
    with pytest.raises(ConfigurationError):
        next(auth.sync_auth_flow(httpx.Request("GET", "https://internal.example.evil/v1")))


def test_allowed_hosts_must_be_host_names() -> None:
    with pytest.raises(ConfigurationError, match="bare host names"):
        ScalingAuth(MemoryProvider(K1), allowed_hosts=["https://gateway.example.com"])


# ---------------------------------------------------------------------------- the flow by hand


def test_flow_sends_the_key_and_stops_on_success() -> None:
    auth, _ = auth_with()
    flow = auth.sync_auth_flow(httpx.Request("GET", URL))
    request = next(flow)
    assert request.headers["Authorization"] == f"Bearer {K1}"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=request))


def test_flow_retries_once_with_the_new_key() -> None:
    auth, provider = auth_with()
    flow = auth.sync_auth_flow(httpx.Request("POST", URL, json={"name": "a"}))
    request = next(flow)
    provider.value = K2
    retry = flow.send(rejected(request))
    assert retry.headers["Authorization"] == f"Bearer {K2}"
    assert retry.content == b'{"name":"a"}'
    # Even another rejection ends the flow: never more than one retry.
    with pytest.raises(StopIteration):
        flow.send(rejected(retry))
    assert [k.reveal() for k in provider.rejected] == [K1]


def test_flow_returns_the_401_when_the_source_still_holds_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth, provider = auth_with()
    flow = auth.sync_auth_flow(httpx.Request("GET", URL))
    request = next(flow)
    with (
        caplog.at_level(logging.WARNING, logger="scaling_credentials"),
        pytest.raises(StopIteration),
    ):
        flow.send(rejected(request))
    assert "memory:memory still holds it" in caplog.text
    assert ApiKey(K1).masked in caplog.text
    assert_no_secret(K1, caplog.text)
    assert provider.fetches == 2


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(401, content=error_body("missing_authorization_header")),
        httpx.Response(401, content=b"<html>Unauthorized</html>"),
        httpx.Response(401, content=b""),
        httpx.Response(401, content=error_body("not_authorized")),
        httpx.Response(403, content=error_body("invalid_api_key", 403)),
        httpx.Response(500, content=b"upstream down"),
    ],
)
def test_other_answers_are_returned_untouched(response: httpx.Response) -> None:
    auth, provider = auth_with()
    flow = auth.sync_auth_flow(httpx.Request("GET", URL))
    next(flow)
    with pytest.raises(StopIteration):
        flow.send(response)
    assert provider.fetches == 1  # no refresh


def test_non_401_bodies_are_not_read() -> None:
    auth, _ = auth_with()

    def chunks() -> Iterator[bytes]:
        raise AssertionError("the auth read a non-401 body")
        yield b""  # pragma: no cover

    flow = auth.sync_auth_flow(httpx.Request("GET", URL))
    request = next(flow)
    response = httpx.Response(200, stream=httpx.ByteStream(b""), request=request)
    response.stream = chunks()  # type: ignore[assignment]
    with pytest.raises(StopIteration):
        flow.send(response)
    assert not response.is_stream_consumed


def test_a_huge_401_body_is_not_read() -> None:
    auth, provider = auth_with()
    flow = auth.sync_auth_flow(httpx.Request("GET", URL))
    request = next(flow)
    response = httpx.Response(
        401,
        headers={"Content-Length": str(10 * 1024 * 1024)},
        stream=httpx.ByteStream(b""),
        request=request,
    )
    with pytest.raises(StopIteration):
        flow.send(response)
    assert provider.fetches == 1


def test_one_shot_stream_is_not_resent_but_the_key_is_refreshed() -> None:
    auth, provider = auth_with()

    def body() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"streamed"}'

    flow = auth.sync_auth_flow(httpx.Request("POST", URL, content=body()))
    request = next(flow)
    provider.value = K2
    with pytest.raises(StopIteration):
        flow.send(rejected(request))
    assert auth.cache.peek().reveal() == K2  # type: ignore[union-attr]


def test_refresh_failure_returns_the_401(caplog: pytest.LogCaptureFixture) -> None:
    auth, provider = auth_with()
    flow = auth.sync_auth_flow(httpx.Request("GET", URL))
    request = next(flow)
    provider.fail = True
    with (
        caplog.at_level(logging.WARNING, logger="scaling_credentials"),
        pytest.raises(StopIteration),
    ):
        flow.send(rejected(request))
    assert "refreshing it from memory:memory failed" in caplog.text


def test_refused_host_raises_before_the_key_is_fetched_or_sent() -> None:
    auth, provider = auth_with()
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))
    with httpx.Client(transport=transport, auth=auth) as client:
        with pytest.raises(ConfigurationError):
            client.get("https://example.com/v1/oncall/schedules")
        with pytest.raises(ConfigurationError):
            client.get("http://api.scaling.cloud/v1/oncall/schedules")
    assert sent == []
    assert provider.fetches == 0


def test_async_flow_mirrors_the_sync_flow() -> None:
    auth, provider = auth_with()

    async def scenario() -> None:
        flow = auth.async_auth_flow(httpx.Request("GET", URL))
        request = await flow.__anext__()
        assert request.headers["Authorization"] == f"Bearer {K1}"
        provider.value = K2
        retry = await flow.asend(rejected(request))
        assert retry.headers["Authorization"] == f"Bearer {K2}"
        with pytest.raises(StopAsyncIteration):
            await flow.asend(rejected(retry))

    asyncio.run(scenario())


def test_source_forms() -> None:
    provider = MemoryProvider(K1)
    assert ScalingAuth(provider).cache.provider is provider
    cache = KeyCache(provider)
    assert ScalingAuth(cache).cache is cache
    assert ScalingAuth("env:SOME_VAR").cache.describe() == "env:SOME_VAR"
    with pytest.raises(ConfigurationError, match="pass ttl to KeyCache"):
        ScalingAuth(cache, ttl=5)
    with pytest.raises(ConfigurationError):
        ScalingAuth(42)  # type: ignore[arg-type]


def test_none_source_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCALING_API_KEY_SOURCE", "SCALING_API_KEY", "SCALING_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="SCALING_API_KEY_FILE"):
        ScalingAuth()
    monkeypatch.setenv("SCALING_API_KEY", K1)
    auth = ScalingAuth(ttl=30)
    assert isinstance(auth.cache.provider, EnvProvider)
    assert auth.cache.ttl == 30


def test_repr_holds_no_secret() -> None:
    auth, _ = auth_with()
    auth.cache.get()
    assert_no_secret(K1, repr(auth))


# ---------------------------------------------------------------------------- real clients


def test_sync_client_against_the_fake_api(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    provider = MemoryProvider(old)
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
    with httpx.Client(base_url=api.url, auth=auth) as client:
        assert client.get("/oncall/schedules").status_code == 200
        provider.value = api.rotate()
        api.revoke(old)
        response = client.post("/oncall/schedules", json={"name": "Replay me", "timezone": "UTC"})
    assert response.status_code == 201
    assert len(response.history) == 1 and response.history[0].status_code == 401
    posts = [r for r in api.requests if r.method == "POST"]
    assert [r.status for r in posts] == [401, 201]
    assert posts[0].body == posts[1].body  # resent byte for byte
    assert all(r.key is not None and "****" in r.key for r in api.requests)


def test_async_client_against_the_fake_api(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    provider = MemoryProvider(old)
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, auth=auth) as client:
            assert (await client.get("/oncall/schedules")).status_code == 200
            provider.value = api.rotate()
            api.revoke(old)
            return list(
                await asyncio.gather(
                    *(client.post("/oncall/schedules", json={"name": f"s{i}"}) for i in range(20))
                )
            )

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [201] * 20
    assert provider.fetches == 2


def test_async_one_shot_stream_returns_the_401(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    provider = MemoryProvider(old)
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))

    async def body() -> AsyncIterator[bytes]:
        yield b'{"name": "stream"}'

    async def scenario() -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=api.url, auth=auth) as client:
            await auth.cache.aget()  # warm: the old key is cached
            provider.value = api.rotate()
            api.revoke(old)
            first = await client.post("/oncall/schedules", content=body())
            second = await client.post("/oncall/schedules", json={"name": "next"})
            return first.status_code, second.status_code

    assert asyncio.run(scenario()) == (401, 201)


def test_streaming_responses_stay_streaming(api: FakeScalingAPI) -> None:
    auth = ScalingAuth(MemoryProvider(api.issue_key()))
    with (
        httpx.Client(base_url=api.url, auth=auth) as client,
        client.stream("GET", "/oncall/schedules") as response,
    ):
        assert response.status_code == 200
        assert not response.is_stream_consumed
        assert b"Primary on-call" in response.read()


def test_authorization_does_not_follow_a_redirect_to_another_origin(api: FakeScalingAPI) -> None:
    key = api.issue_key()
    with FakeScalingAPI() as other:
        from scaling_credentials.testing import ScriptedResponse

        target = other.url.replace("127.0.0.1", "localhost") + "/oncall/schedules"
        api.script(ScriptedResponse(302, b"", headers=(("Location", target),)))
        auth = ScalingAuth(MemoryProvider(key))
        with httpx.Client(base_url=api.url, auth=auth, follow_redirects=True) as client:
            response = client.get("/oncall/schedules")
        assert response.status_code == 401
        assert [r.key for r in other.requests] == [None]  # no Authorization arrived


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_401_from_a_redirect_target_that_never_got_the_key_is_no_rejection(
    api: FakeScalingAPI, driver: str
) -> None:
    # The redirect target never received the key (httpx drops Authorization across
    # origins): its 401 invalid_api_key says nothing about the key, so no forced refetch
    # and no resend; the 401 is returned as it is.
    from scaling_credentials.testing import ScriptedResponse

    key = api.issue_key()
    with FakeScalingAPI() as other:
        other.script(ScriptedResponse(401, error_body("invalid_api_key")))
        target = other.url + "/oncall/schedules"
        api.script(ScriptedResponse(307, b"", headers=(("Location", target),)))
        provider = MemoryProvider(key)
        auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
        auth.cache.get()
        provider.value = K2  # a refetch would find another key and resend
        if driver == "sync":
            with httpx.Client(base_url=api.url, auth=auth, follow_redirects=True) as client:
                response = client.get("/oncall/schedules")
        else:

            async def scenario() -> httpx.Response:
                async with httpx.AsyncClient(
                    base_url=api.url, auth=auth, follow_redirects=True
                ) as client:
                    return await client.get("/oncall/schedules")

            response = asyncio.run(scenario())
        assert response.status_code == 401
        assert response.url == httpx.URL(target)
        assert provider.fetches == 1  # no forced refetch
        assert len(api.requests) == 1  # no resend
        assert [r.key for r in other.requests] == [None]


def test_a_401_from_the_origin_that_got_the_key_after_a_same_origin_redirect_is_a_rejection(
    api: FakeScalingAPI,
) -> None:
    from scaling_credentials.testing import ScriptedResponse

    provider = MemoryProvider(K1)
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
    auth.cache.get()
    moved = ScriptedResponse(302, b"", headers=(("Location", api.url + "/oncall/schedules"),))
    api.script(moved, ScriptedResponse(401, error_body("invalid_api_key")), moved)
    provider.value = api.issue_key()
    with httpx.Client(base_url=api.url, auth=auth, follow_redirects=True) as client:
        response = client.get("/moved")
    assert response.status_code == 200
    assert provider.fetches == 2
    assert [r.path for r in api.requests] == ["/v1/moved", "/v1/oncall/schedules"] * 2


def test_a_401_after_a_round_trip_through_another_origin_is_no_rejection() -> None:
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

    with httpx.Client(
        transport=httpx.MockTransport(handler), auth=auth, follow_redirects=True
    ) as client:
        auth.cache.get()
        provider.value = K2
        response = client.get("https://api.scaling.cloud/first")
    assert response.status_code == 401
    assert [auth is not None for _, auth in seen] == [True, False, False]
    assert provider.fetches == 1


# ---------------------------------------------------- 401 bodies of unknown length


def _chunks(body: bytes, size: int = 16 * 1024) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("big", [False, True])
def test_401_of_unknown_length_sync(big: bool) -> None:
    body = b"x" * (1024 * 1024) if big else error_body("invalid_api_key")
    auth, provider = auth_with()
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Authorization"])
        if len(calls) == 1:
            return httpx.Response(401, content=iter(_chunks(body)))  # no Content-Length
        return httpx.Response(200, json={"data": []})

    provider.value = K1
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        auth.cache.get()
        provider.value = K2
        response = client.get(URL)
    if big:  # not an error body: returned whole, no refresh, no retry
        assert (response.status_code, len(response.content)) == (401, len(body))
        assert provider.fetches == 1 and len(calls) == 1
    else:
        assert response.status_code == 200 and len(calls) == 2


@pytest.mark.parametrize("big", [False, True])
def test_401_of_unknown_length_async(big: bool) -> None:
    body = b"y" * (1024 * 1024) if big else error_body("invalid_api_key")
    auth, provider = auth_with()
    calls: list[str] = []

    async def stream() -> AsyncIterator[bytes]:
        for chunk in _chunks(body):
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Authorization"])
        if len(calls) == 1:
            return httpx.Response(401, content=stream())
        return httpx.Response(200, json={"data": []})

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
            await auth.cache.aget()
            provider.value = K2
            return await client.get(URL)

    response = asyncio.run(scenario())
    if big:
        assert (response.status_code, len(response.content)) == (401, len(body))
        assert provider.fetches == 1 and len(calls) == 1
    else:
        assert response.status_code == 200 and len(calls) == 2
