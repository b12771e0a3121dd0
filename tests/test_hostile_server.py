"""A hostile network, over real sockets on 127.0.0.1: a proxy the environment points at,
answers that are decompression bombs, endless streams, slow drips, and redirects to a
second local origin that records what it receives. Driven through ``scaling_client``,
the CLI and the Lambda extension provider; every test asserts on what crossed the
socket (no key), on memory and on what was read.

The server is :class:`scaling_credentials.testing.HostileServer` (fixture
``hostile_server``), usable by any provider's tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from scaling_credentials import (
    ConfigurationError,
    KeyCache,
    ScalingAuth,
    async_scaling_client,
    scaling_client,
)
from scaling_credentials.testing import FakeScalingAPI, HostileServer, MemoryProvider
from scaling_credentials.testing.provider_suite import assert_no_secret

KEY = "scl_live_HOSTILEkey0123456789abcdefXYZ"
TOKEN = KEY.removeprefix("scl_live_")
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "REQUEST_METHOD",
)


def auth(value: str = KEY) -> ScalingAuth:
    return ScalingAuth(KeyCache(MemoryProvider(value), min_refresh_interval=0))


def assert_no_key(*texts: bytes | str) -> None:
    for text in texts:
        shown = text.decode("latin-1") if isinstance(text, bytes) else text
        assert_no_secret(KEY, shown)
        assert_no_secret(TOKEN, shown)


# ============================================================================ proxies


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    """A "proxy" that records everything it is sent and answers 502; the environment
    holds no other proxy setting."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with HostileServer(default=HostileServer.reply(502)) as server:
        yield server


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_scaling_client_never_sends_plain_http_through_a_proxy(
    api: FakeScalingAPI,
    proxy: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    host: str,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    key = api.issue_key()
    base_url = api.url.replace("127.0.0.1", host)
    with scaling_client(MemoryProvider(key), base_url=base_url) as client:
        assert client.get("/oncall/schedules").status_code == 200

    async def scenario() -> int:
        async with async_scaling_client(MemoryProvider(key), base_url=base_url) as client:
            return (await client.get("/oncall/schedules")).status_code

    assert asyncio.run(scenario()) == 200
    assert proxy.received == b""
    assert [r.key is not None for r in api.requests] == [True, True]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_scaling_auth_refuses_plain_http_that_the_environment_sends_through_a_proxy(
    api: FakeScalingAPI, proxy: HostileServer, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)

    def sync() -> None:
        with httpx.Client(base_url=api.url, auth=auth()) as client:
            client.get("/oncall/schedules")

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=api.url, auth=auth()) as client:
            await client.get("/oncall/schedules")

    with pytest.raises(ConfigurationError, match="proxy") as info:
        sync() if driver == "sync" else asyncio.run(scenario())
    assert "NO_PROXY" in str(info.value)
    assert proxy.received == b""
    assert api.requests == []


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
def test_scaling_auth_sends_plain_http_that_no_proxy_keeps_direct(
    api: FakeScalingAPI, proxy: HostileServer, monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    with httpx.Client(base_url=api.url, auth=auth(api.issue_key())) as client:
        assert client.get("/oncall/schedules").status_code == 200
    assert proxy.received == b""


def test_https_through_a_proxy_stays_allowed_and_the_proxy_sees_only_connect(
    proxy: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CONNECT opens a tunnel: the key would travel inside TLS, which the proxy cannot
    # read. This proxy refuses the tunnel; what matters is what it was sent.
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with (
        httpx.Client(auth=auth()) as client,
        pytest.raises(httpx.ProxyError),
    ):
        client.get("https://api.scaling.cloud/v1/oncall/schedules")
    assert [(h.method, h.target) for h in proxy.hits] == [("CONNECT", "api.scaling.cloud:443")]
    assert_no_key(proxy.received)
