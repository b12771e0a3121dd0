"""raise_for_scaling_error and the ready-made clients: edge bodies through
httpx.MockTransport (unit tests of one function), documented errors and real calls
through FakeScalingAPI over real sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from scaling_credentials import (
    ConfigurationError,
    EnvProvider,
    ScalingAPIError,
    ScalingAuth,
    __version__,
    _api,
    async_scaling_client,
    raise_for_scaling_error,
    scaling_client,
)
from scaling_credentials._api import MAX_ERROR_BODY, parse_error_body, read_error_body
from scaling_credentials.testing import FakeClock, FakeScalingAPI, MemoryProvider, ScriptedResponse
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret

REQUEST_ID = "550e8400-e29b-41d4-a716-446655440000"
KEY = "scl_live_LEAKMARKER8u9i0123456789"
SCHEDULES_URL = "https://api.scaling.cloud/v1/oncall/schedules"


def documented(status: int, type_: str, code: str, request_id: str = REQUEST_ID) -> bytes:
    return json.dumps(
        {"statusCode": status, "type": type_, "code": code, "requestId": request_id}
    ).encode()


def answer(
    status: int,
    content: bytes,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    url: str = SCHEDULES_URL,
) -> httpx.Response:
    """One response from a MockTransport client, as a user of httpx would get it."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return client.request(method, url)


def error_of(response: httpx.Response) -> ScalingAPIError:
    with pytest.raises(ScalingAPIError) as info:
        raise_for_scaling_error(response)
    assert info.value.response is response
    return info.value


# ====================================================================== 2xx


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_returns_the_response(status: int) -> None:
    response = answer(status, b'{"data": []}' if status != 204 else b"")
    assert raise_for_scaling_error(response) is response


def test_2xx_with_an_error_shaped_body_is_still_success() -> None:
    response = answer(200, documented(401, "not_authorized_error", "invalid_api_key"))
    assert raise_for_scaling_error(response) is response


@pytest.mark.parametrize("status", [100, 301, 304, 399])
def test_non_2xx_non_error_statuses_raise_too(status: int) -> None:
    assert error_of(answer(status, b"")).status_code == status


# ====================================================================== documented bodies


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (401, "not_authorized_error", "invalid_api_key"),
        (401, "not_authorized_error", "missing_authorization_header"),
        (401, "not_authorized_error", "not_authorized"),
        (400, "invalid_request_error", "bad_request"),
        (404, "invalid_request_error", "not_found"),
        (409, "invalid_request_error", "name_conflict"),
        (422, "validation_error", "invalid_body"),
        (500, "internal_error", "internal_error"),
    ],
)
def test_documented_error_fields(status: int, type_: str, code: str) -> None:
    error = error_of(answer(status, documented(status, type_, code)))
    assert error.status_code == status
    assert error.type == type_
    assert error.code == code
    assert error.request_id == REQUEST_ID
    message = str(error)
    assert str(status) in message
    assert f"{type_}/{code}" in message
    assert "GET /v1/oncall/schedules" in message
    assert f"requestId {REQUEST_ID}" in message


def test_invalid_api_key_message_says_rotate() -> None:
    error = error_of(answer(401, documented(401, "not_authorized_error", "invalid_api_key")))
    assert "rotate" in str(error)


def test_missing_header_message_points_at_scaling_auth() -> None:
    body = documented(401, "not_authorized_error", "missing_authorization_header")
    assert "ScalingAuth" in str(error_of(answer(401, body)))


def test_extra_fields_and_missing_status_code_are_fine() -> None:
    body = json.dumps({"type": "internal_error", "code": "x", "requestId": "r", "more": [1]})
    error = error_of(answer(500, body.encode()))
    assert (error.type, error.code, error.request_id) == ("internal_error", "x", "r")


def test_message_has_no_query_string_and_no_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, content=documented(401, "not_authorized_error", "x"))

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        response = client.get(
            "https://api.scaling.cloud/v1/oncall/schedules?q=private",
            headers={"Authorization": f"Bearer {KEY}"},
        )
    error = error_of(response)
    assert "private" not in str(error)
    assert_no_secret(KEY, str(error), repr(error))


# ====================================================================== other bodies


NON_DOCUMENTED = {
    "html-proxy-502": (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "empty": (500, b""),
    "invalid-json": (500, b'{"type": "internal_error", "code": '),
    "json-array": (500, b'[{"type": "internal_error"}]'),
    "json-string": (500, b'"internal_error"'),
    "json-null": (500, b"null"),
    "wrong-types": (401, b'{"type": 1, "code": ["invalid_api_key"], "requestId": {"a": 1}}'),
    "nulls": (401, b'{"type": null, "code": null, "requestId": null}'),
    "overlong-strings": (
        401,
        json.dumps({"type": "t" * 201, "code": "c" * 201, "requestId": "r" * 201}).encode(),
    ),
    "deeply-nested": (500, b"[" * 50_000),
    "not-utf8": (500, b"\xff\xfe\x00{"),
    "huge-valid-json": (
        500,
        documented(500, "internal_error", "internal_error")[:-1]
        + b', "pad": "'
        + b"x" * (MAX_ERROR_BODY + 10)
        + b'"}',
    ),
}


@pytest.mark.parametrize("case", sorted(NON_DOCUMENTED))
def test_non_documented_body_gives_status_only(case: str) -> None:
    status, content = NON_DOCUMENTED[case]
    error = error_of(answer(status, content, {"Content-Type": "text/html"}))
    assert error.status_code == status
    assert error.type is None
    assert error.code is None
    assert error.request_id is None
    assert f"Scaling API answered {status}" in str(error)


@pytest.mark.parametrize("case", sorted(NON_DOCUMENTED))
def test_parse_error_body_never_raises(case: str) -> None:
    _, content = NON_DOCUMENTED[case]
    body = parse_error_body(content)
    assert (body.type, body.code, body.request_id) == (None, None, None)


def test_huge_body_is_not_parsed_even_when_it_is_documented_json() -> None:
    content = NON_DOCUMENTED["huge-valid-json"][1]
    assert len(content) > MAX_ERROR_BODY
    assert json.loads(content)["code"] == "internal_error"  # valid, but too large to trust


def test_lying_or_bogus_content_length_is_not_trusted() -> None:
    # A content-length that is not a number: the body is not read for parsing.
    request = httpx.Request("GET", "https://api.scaling.cloud/v1/x")
    response = httpx.Response(
        500,
        headers={"Content-Length": "12abc"},
        content=documented(500, "internal_error", "internal_error"),
        request=request,
    )
    error = error_of(response)
    assert error.status_code == 500
    assert error.code is None


def test_response_without_a_request() -> None:
    response = httpx.Response(503, content=b"<html>busy</html>")
    error = error_of(response)
    assert error.status_code == 503
    assert "503" in str(error)


def test_request_id_in_body_wins_over_header() -> None:
    response = answer(
        404,
        documented(404, "invalid_request_error", "not_found", "body-id"),
        {"X-Request-Id": "header-id"},
    )
    assert error_of(response).request_id == "body-id"


def test_request_id_falls_back_to_the_header_for_a_documented_body_without_one() -> None:
    body = json.dumps({"statusCode": 404, "type": "invalid_request_error", "code": "not_found"})
    error = error_of(answer(404, body.encode(), {"X-Request-Id": "header-id"}))
    assert (error.type, error.code, error.request_id) == (
        "invalid_request_error",
        "not_found",
        "header-id",
    )


def test_html_proxy_answer_with_an_x_request_id_header_has_no_request_id() -> None:
    error = error_of(answer(502, b"<html>Bad Gateway</html>", {"X-Request-Id": "proxy-id"}))
    assert error.request_id is None


# ====================================================================== streaming responses


def test_unread_sync_stream_is_read_for_the_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = documented(404, "invalid_request_error", "not_found")
        return httpx.Response(404, content=iter([body]))  # a real, unread stream

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "https://api.scaling.cloud/v1/x") as response,
    ):
        error = error_of(response)
    assert error.code == "not_found"


def test_sync_stream_2xx_is_not_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b'{"data": []}']))

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "https://api.scaling.cloud/v1/x") as response,
    ):
        assert raise_for_scaling_error(response) is response
        assert not response.is_stream_consumed
        assert response.read() == b'{"data": []}'


def test_async_stream_unread_gives_status_only_and_read_gives_fields() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield documented(409, "invalid_request_error", "x")

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, content=body())  # a real, unread async stream

    async def scenario() -> tuple[ScalingAPIError, ScalingAPIError]:
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport) as client:
            async with client.stream("GET", "https://api.scaling.cloud/v1/x") as response:
                with pytest.raises(ScalingAPIError) as unread:
                    raise_for_scaling_error(response)
            async with client.stream("GET", "https://api.scaling.cloud/v1/x") as response:
                await response.aread()
                with pytest.raises(ScalingAPIError) as read:
                    raise_for_scaling_error(response)
        return unread.value, read.value

    unread, read = asyncio.run(scenario())
    assert (unread.status_code, unread.code) == (409, None)
    assert (read.status_code, read.code) == (409, "x")


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODED_BODIES: dict[str, tuple[str, Callable[[bytes], bytes], bool]] = {
    # name: (Content-Encoding, encoder, decodable within the cap)
    "gzip": ("gzip", gzip.compress, True),
    "deflate-zlib": ("deflate", zlib.compress, True),
    "deflate-raw": ("deflate", _raw_deflate, True),
    "gzip-gzip": ("gzip, gzip", lambda b: gzip.compress(gzip.compress(b)), True),
    "deflate-then-gzip": ("deflate, gzip", lambda b: gzip.compress(zlib.compress(b)), True),
    "identity-gzip": ("identity, gzip", gzip.compress, True),
    "unknown-is-ignored": ("x-custom", lambda b: b, True),
    "br": ("br", lambda b: b, False),
    "zstd": ("zstd", lambda b: b, False),
    "corrupt-gzip": ("gzip", lambda b: b"\x1f\x8b\x09" + gzip.compress(b)[3:], False),
    "not-gzip": ("gzip", lambda b: b, False),
    "bomb": ("gzip", lambda b: gzip.compress(b + b" " * (4 * 1024 * 1024)), False),
}


@pytest.mark.parametrize("case", sorted(ENCODED_BODIES))
@pytest.mark.parametrize("chunk", [7, 65536])
def test_encoded_error_bodies_are_decoded_within_the_cap(case: str, chunk: int) -> None:
    encoding, encode, decodable = ENCODED_BODIES[case]
    body = documented(401, "not_authorized_error", "invalid_api_key")
    raw = encode(body)

    def handler(request: httpx.Request) -> httpx.Response:
        parts = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
        return httpx.Response(401, content=iter(parts), headers={"Content-Encoding": encoding})

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "https://api.scaling.cloud/v1/x") as response,
    ):
        read = read_error_body(response)
        if decodable:
            assert read == body
            assert response.read() == body  # the caller still gets the whole answer
        else:
            assert read is None
            assert response.stream is not None
            assert b"".join(response.iter_raw()) == raw  # handed back whole, unread


def test_a_body_that_drips_past_the_deadline_is_given_up() -> None:
    clock = FakeClock()
    body = documented(401, "not_authorized_error", "invalid_api_key")

    def drip() -> Iterator[bytes]:
        for index in range(len(body)):
            clock.advance(1.0)  # each byte a second after the one before
            yield body[index : index + 1]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, content=drip())

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "https://api.scaling.cloud/v1/x") as response,
    ):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_api, "_clock", clock)
            assert read_error_body(response) is None
        assert response.read() == body


# ====================================================================== real sockets


def test_missing_authorization_header_from_the_fake(scaling_api: FakeScalingAPI) -> None:
    with httpx.Client(base_url=scaling_api.url) as client:
        response = client.get("/oncall/schedules")
    error = error_of(response)
    assert (error.status_code, error.type, error.code) == (
        401,
        "not_authorized_error",
        "missing_authorization_header",
    )
    assert error.request_id == response.headers["X-Request-Id"]
    assert error.request_id == scaling_api.requests[-1].request_id


def test_invalid_api_key_from_the_fake(scaling_api: FakeScalingAPI) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=scaling_api.url, headers=headers) as client:
        error = error_of(client.get("/oncall/schedules"))
    assert (error.status_code, error.code) == (401, "invalid_api_key")
    assert error.request_id
    assert_no_secret(KEY, str(error), repr(error))


def _authed(api: FakeScalingAPI) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.issue_key()}"})


@pytest.mark.parametrize(
    ("send", "status", "type_", "code"),
    [
        (lambda c: c.get("/nowhere"), 404, "invalid_request_error", "not_found"),
        (
            lambda c: c.get("/oncall/schedules/00000000-0000-0000-0000-000000000000"),
            404,
            "invalid_request_error",
            "not_found",
        ),
        (
            lambda c: c.post("/oncall/schedules", json={"name": "Primary on-call"}),
            409,
            "invalid_request_error",
            "name_conflict",
        ),
        (
            lambda c: c.post("/oncall/schedules", json={"nom": "x"}),
            422,
            "validation_error",
            "invalid_body",
        ),
    ],
    ids=["404-path", "404-id", "409", "422"],
)
def test_documented_errors_from_the_fake(
    scaling_api: FakeScalingAPI,
    send: Callable[[httpx.Client], httpx.Response],
    status: int,
    type_: str,
    code: str,
) -> None:
    with _authed(scaling_api) as client:
        response = send(client)
    error = error_of(response)
    assert (error.status_code, error.type, error.code) == (status, type_, code)
    assert error.request_id == response.json()["requestId"] == response.headers["x-request-id"]


def test_scripted_500_and_html_502_from_the_fake(scaling_api: FakeScalingAPI) -> None:
    scaling_api.script(
        ScriptedResponse(500, documented(500, "internal_error", "internal_error", "rid-500")),
        ScriptedResponse(502, b"<html>Bad Gateway</html>", content_type="text/html"),
    )
    with _authed(scaling_api) as client:
        first = error_of(client.get("/oncall/schedules"))
        second = error_of(client.get("/oncall/schedules"))
        third = client.get("/oncall/schedules")
    assert (first.status_code, first.type, first.code, first.request_id) == (
        500,
        "internal_error",
        "internal_error",
        "rid-500",
    )
    assert (second.status_code, second.type, second.code) == (502, None, None)
    assert raise_for_scaling_error(third) is third


def test_success_from_the_fake(scaling_api: FakeScalingAPI) -> None:
    with _authed(scaling_api) as client:
        response = raise_for_scaling_error(client.get("/oncall/schedules"))
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2


# ====================================================================== the clients


def test_scaling_client_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALING_API_BASE_URL", raising=False)
    with scaling_client(MemoryProvider(KEY)) as client:
        assert str(client.base_url).rstrip("/") == "https://api.scaling.cloud/v1"
        assert client.build_request("GET", "/oncall/schedules").url == SCHEDULES_URL
        assert client.headers["Accept"] == "application/json"
        assert client.headers["Content-Type"] == "application/json"
        user_agent = client.headers["User-Agent"]
        assert user_agent.startswith(f"scaling-credentials/{__version__} ")
        assert f"python-httpx/{httpx.__version__}" in user_agent
        assert client.timeout == httpx.Timeout(30.0, connect=5.0)
        assert isinstance(client.auth, ScalingAuth)
        assert_no_secret(KEY, repr(client.auth), str(client.headers))


def test_async_scaling_client_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALING_API_BASE_URL", raising=False)

    async def scenario() -> None:
        async with async_scaling_client(MemoryProvider(KEY)) as client:
            assert str(client.base_url).rstrip("/") == "https://api.scaling.cloud/v1"
            assert client.build_request("GET", "/oncall/schedules").url == SCHEDULES_URL
            assert client.headers["Accept"] == "application/json"
            assert client.headers["Content-Type"] == "application/json"
            assert client.headers["User-Agent"].startswith("scaling-credentials/")
            assert client.timeout == httpx.Timeout(30.0, connect=5.0)
            assert isinstance(client.auth, ScalingAuth)

    asyncio.run(scenario())


def test_scaling_client_options() -> None:
    auth = ScalingAuth(MemoryProvider(KEY))
    with scaling_client(
        base_url="https://eu.api.scaling.cloud/v1",
        auth=auth,
        headers={"User-Agent": "mine/1", "X-Extra": "1"},
        timeout=3.0,
    ) as client:
        assert client.auth is auth
        assert str(client.base_url).rstrip("/") == "https://eu.api.scaling.cloud/v1"
        assert client.headers["User-Agent"] == "mine/1"
        assert client.headers["X-Extra"] == "1"
        assert client.headers["Accept"] == "application/json"
        assert client.timeout == httpx.Timeout(3.0)


def test_base_url_comes_from_scaling_api_base_url(
    scaling_api: FakeScalingAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALING_API_BASE_URL", scaling_api.url)
    key = scaling_api.issue_key()
    provider = EnvProvider("K", environ={"K": key})
    with scaling_client(provider) as client:
        assert raise_for_scaling_error(client.get("/oncall/schedules")).status_code == 200

    async def scenario() -> int:
        async with async_scaling_client(provider) as client:
            return (await client.get("/oncall/schedules")).status_code

    assert asyncio.run(scenario()) == 200
    assert [r.path for r in scaling_api.requests] == ["/v1/oncall/schedules"] * 2


def test_an_explicit_base_url_wins_over_scaling_api_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCALING_API_BASE_URL", "http://127.0.0.1:9/v1")
    with scaling_client(MemoryProvider(KEY), base_url="https://eu.api.scaling.cloud/v1") as c:
        assert str(c.base_url).rstrip("/") == "https://eu.api.scaling.cloud/v1"

    async def scenario() -> str:
        explicit = "https://eu.api.scaling.cloud/v1"
        async with async_scaling_client(MemoryProvider(KEY), base_url=explicit) as client:
            return str(client.base_url).rstrip("/")

    assert asyncio.run(scenario()) == "https://eu.api.scaling.cloud/v1"


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_scaling_api_base_url_means_the_default(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALING_API_BASE_URL", value)
    with scaling_client(MemoryProvider(KEY)) as client:
        assert str(client.base_url).rstrip("/") == "https://api.scaling.cloud/v1"


@pytest.mark.parametrize(
    "value",
    [
        "api.scaling.cloud/v1",  # no scheme
        "ftp://api.scaling.cloud/v1",
        "https:///v1",  # no host
        "https://[::1/v1",  # unparseable
        "https://user:secret@api.scaling.cloud/v1",  # credentials
    ],
)
@pytest.mark.parametrize("factory", [scaling_client, async_scaling_client])
def test_a_malformed_scaling_api_base_url_is_a_configuration_error(
    value: str, factory: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALING_API_BASE_URL", value)
    with pytest.raises(ConfigurationError, match="SCALING_API_BASE_URL") as caught:
        factory(MemoryProvider(KEY))
    assert_no_secret("secret", str(caught.value), repr(caught.value))


@pytest.mark.parametrize(
    "value",
    [KEY, f"https://api.scaling.cloud/v1?key={KEY}", f"https://{KEY}@api.scaling.cloud/v1"],
    ids=["bare-key", "in-the-query", "as-userinfo"],
)
def test_a_key_in_scaling_api_base_url_is_never_echoed(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALING_API_BASE_URL", value)
    with pytest.raises(ConfigurationError, match="SCALING_API_BASE_URL") as caught:
        scaling_client(MemoryProvider(KEY))
    error = caught.value
    chained = f"{error.__cause__!r} {error.__context__!r}"
    assert_no_secret(KEY.removeprefix("scl_live_"), str(error), repr(error), chained)


def test_scaling_client_passes_ttl_to_the_cache() -> None:
    with scaling_client(MemoryProvider(KEY), ttl=42.0) as client:
        assert isinstance(client.auth, ScalingAuth)
        assert client.auth.cache.ttl == 42.0


def test_scaling_client_from_uri_and_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALING_API_KEY_SOURCE", raising=False)
    monkeypatch.setenv("SCALING_API_KEY", KEY)
    with scaling_client() as client:
        assert isinstance(client.auth, ScalingAuth)
        assert_key_is(client.auth.cache.get(), KEY)
    with scaling_client("env:SCALING_API_KEY") as client:
        assert isinstance(client.auth, ScalingAuth)
        assert isinstance(client.auth.cache.provider, EnvProvider)


def test_scaling_client_against_the_fake(scaling_api: FakeScalingAPI) -> None:
    key = scaling_api.issue_key()
    provider = EnvProvider("K", environ={"K": key})
    with scaling_client(provider, base_url=scaling_api.url) as client:
        response = raise_for_scaling_error(client.get("/oncall/schedules"))
        created = raise_for_scaling_error(
            client.post("/oncall/schedules", json={"name": "Night shift"})
        )
    assert len(response.json()["data"]) == 2
    assert created.status_code == 201
    assert created.json()["data"]["name"] == "Night shift"
    log = scaling_api.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/v1/oncall/schedules", 200),
        ("POST", "/v1/oncall/schedules", 201),
    ]
    assert all(r.key is not None and r.key.startswith("scl_live_****") for r in log)


def test_async_scaling_client_against_the_fake(scaling_api: FakeScalingAPI) -> None:
    key = scaling_api.issue_key()

    async def scenario() -> list[int]:
        provider = EnvProvider("K", environ={"K": key})
        async with async_scaling_client(provider, base_url=scaling_api.url) as client:
            responses = await asyncio.gather(*(client.get("/oncall/schedules") for _ in range(20)))
        return [raise_for_scaling_error(r).status_code for r in responses]

    assert asyncio.run(scenario()) == [200] * 20
    assert len(scaling_api.requests) == 20


def test_scaling_client_with_a_revoked_key_raises_with_the_fake(
    scaling_api: FakeScalingAPI,
) -> None:
    key = scaling_api.issue_key()
    scaling_api.revoke(key)
    with scaling_client(EnvProvider("K", environ={"K": key}), base_url=scaling_api.url) as c:
        error = error_of(c.get("/oncall/schedules"))
    assert (error.status_code, error.code) == (401, "invalid_api_key")
    assert_no_secret(key, str(error), repr(error))
