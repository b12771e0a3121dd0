"""ScalingAuth: the plain decisions it shares with every client (in _authcore), its
sources, concurrent and unknown-length cases under real clients. Every branch of the two
drivers, by hand and under real clients against FakeScalingAPI, is in
test_auth_drivers.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    EnvProvider,
    KeyCache,
    ScalingAuth,
)
from scaling_credentials._authcore import (
    check_destination,
    is_loopback,
    is_rejection,
    retry_decision,
)
from scaling_credentials.testing import FakeClock, FakeScalingAPI, MemoryProvider
from scaling_credentials.testing.provider_suite import assert_no_secret

K1 = "scl_live_firstkey0123456789abcd"
K2 = "scl_live_secondkey0123456789wxyz"


def error_body(code: str, status: int = 401) -> bytes:
    return json.dumps(
        {"statusCode": status, "type": "not_authorized_error", "code": code, "requestId": "r-1"}
    ).encode()


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
    assert is_rejection(status, body, carried=True) is expected


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
    parsed = httpx.URL(url)
    check_destination(parsed.scheme, parsed.host)


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
    parsed = httpx.URL(url)
    with pytest.raises(ConfigurationError, match=reason):
        check_destination(parsed.scheme, parsed.host)


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
    assert is_loopback(host) is expected


def test_allowed_hosts_must_be_host_names() -> None:
    with pytest.raises(ConfigurationError, match="bare host names"):
        ScalingAuth(MemoryProvider(K1), allowed_hosts=["https://gateway.example.com"])


# ---------------------------------------------------------------------------- sources


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
