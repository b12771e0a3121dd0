"""A hostile network, over real sockets on 127.0.0.1: a proxy the environment points at,
answers that are decompression bombs, endless streams, slow drips, and redirects to a
second local origin that records what it receives. Driven through ``scaling_client``,
the CLI and the Lambda extension provider; every test asserts on what crossed the
socket (no key), on memory and on what was read.

The server is :class:`scaling_credentials.testing.HostileServer` (fixture
``hostile_server``, from the library's pytest plugin), usable by any provider's tests;
the Vault provider's hostile-server tests live with that provider.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from scaling_credentials import (
    ConfigurationError,
    KeyCache,
    ScalingAPIError,
    ScalingAuth,
    _api,
    async_scaling_client,
    raise_for_scaling_error,
    scaling_client,
)
from scaling_credentials.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, main
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    HostileServer,
    MemoryProvider,
    ScriptedResponse,
)
from scaling_credentials.testing.provider_suite import assert_no_secret

Traced = Callable[[Callable[[], Any]], tuple[Any, int]]  # the traced fixture
Traced = Callable[[Callable[[], Any]], tuple[Any, int]]  # the fixture
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


# ============================================================================ hostile bodies

MIB = 1024 * 1024
BOMB = 256 * MIB  # decoded size; about 1 KiB on the wire
# What reading a 401 may cost: 64 KiB of body and a few decoder buffers. Far below the
# size of any bomb here, far above what the reader keeps.
MEMORY_BUDGET = 4 * MIB
REJECTION = b'{"statusCode": 401, "type": "not_authorized_error", "code": "invalid_api_key"}'

HOSTILE_401S = {
    "gzip-gzip-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=2),
    "gzip-bomb-chunked": lambda: HostileServer.gzip_bomb(size=BOMB, layers=1, length=False),
    "gzip-x3-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=3),
    "endless-gzip": lambda: HostileServer.endless(gzip=True),
    "endless": lambda: HostileServer.endless(),
}


@pytest.fixture
def origin(hostile_server: HostileServer) -> HostileServer:
    """The hostile server, as the origin a client's base URL points at."""
    return hostile_server


@pytest.mark.parametrize("case", sorted(HOSTILE_401S))
def test_scaling_client_reads_at_most_64_kib_of_a_hostile_401(
    origin: HostileServer, case: str, traced: Traced
) -> None:
    origin.route("/v1/oncall/schedules", HOSTILE_401S[case]())
    provider = MemoryProvider(KEY)
    with scaling_client(provider, base_url=origin.url + "/v1") as client:

        def request() -> tuple[int, ScalingAPIError]:
            with client.stream("GET", "/oncall/schedules") as response:
                with pytest.raises(ScalingAPIError) as info:
                    raise_for_scaling_error(response)
                return response.status_code, info.value

        (status, error), peak = traced(request)
    assert status == 401 and error.status_code == 401 and error.code is None
    assert peak < MEMORY_BUDGET, f"reading the 401 allocated {peak / MIB:.1f} MiB"
    assert provider.fetches == 1  # not a rejection: no refresh


@pytest.mark.parametrize("case", sorted(HOSTILE_401S))
def test_async_scaling_client_reads_at_most_64_kib_of_a_hostile_401(
    origin: HostileServer, case: str, traced: Traced
) -> None:
    origin.route("/v1/oncall/schedules", HOSTILE_401S[case]())
    provider = MemoryProvider(KEY)

    async def scenario() -> int:
        async with (
            async_scaling_client(provider, base_url=origin.url + "/v1") as client,
            client.stream("GET", "/oncall/schedules") as response,
        ):
            return response.status_code

    status, peak = traced(lambda: asyncio.run(scenario()))
    assert status == 401
    assert peak < MEMORY_BUDGET, f"reading the 401 allocated {peak / MIB:.1f} MiB"
    assert provider.fetches == 1


def test_a_hostile_401_from_a_redirect_target_is_capped_too(
    api: FakeScalingAPI, hostile_server: HostileServer, traced: Traced
) -> None:
    hostile_server.route("/bomb", HostileServer.gzip_bomb(size=BOMB))
    api.script(ScriptedResponse(307, b"", headers=(("Location", hostile_server.url + "/bomb"),)))
    provider = MemoryProvider(api.issue_key())
    with scaling_client(provider, base_url=api.url, follow_redirects=True) as client:

        def request() -> int:
            with client.stream("GET", "/oncall/schedules") as response:
                with pytest.raises(ScalingAPIError):
                    raise_for_scaling_error(response)
                return response.status_code

        status, peak = traced(request)
    assert status == 401
    assert peak < MEMORY_BUDGET, f"reading the 401 allocated {peak / MIB:.1f} MiB"
    assert_no_key(hostile_server.received)


def test_a_small_gzip_encoded_rejection_is_still_recognized(
    api: FakeScalingAPI, hostile_server: HostileServer
) -> None:
    # Bounded decoding still decodes: a compressed invalid_api_key is a rejection.
    compressed = gzip.compress(gzip.compress(REJECTION))
    hostile_server.route(
        "/v1/oncall/schedules",
        HostileServer.json(401, compressed, [("Content-Encoding", "gzip, gzip")]),
    )
    provider = MemoryProvider(KEY)
    cache = KeyCache(provider, min_refresh_interval=0)
    with scaling_client(cache, base_url=hostile_server.url + "/v1") as client:
        cache.get()
        provider.value = "scl_live_theNEXTkey0123456789abcdef"
        response = client.get("/oncall/schedules")
    assert response.status_code == 401
    assert provider.fetches == 2  # the rejection was read and the key refetched
    assert len(hostile_server.hits) == 2  # and the request resent once


def ticking(step: float = 1.0) -> Callable[[], float]:
    """A clock that moves ``step`` seconds at every reading: a deadline passes after a
    known number of reads, however fast or slow the machine."""
    clock = FakeClock()

    def now() -> float:
        clock.advance(step)
        return clock()

    return now


def test_a_dripping_401_does_not_hold_the_request(
    origin: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One byte every 50 ms of a 4 KiB body takes over 3 minutes, each read well within
    # any read timeout. The reader stops at ERROR_BODY_SECONDS (the clock moves one
    # second per chunk here) and hands the response back, streaming.
    monkeypatch.setattr(_api, "_clock", ticking(), raising=False)
    origin.route("/v1/oncall/schedules", HostileServer.drip(interval=0.05))
    provider = MemoryProvider(KEY)
    with (
        scaling_client(provider, base_url=origin.url + "/v1") as client,
        client.stream("GET", "/oncall/schedules") as response,
    ):
        assert response.status_code == 401
        assert not response.is_stream_consumed
    assert provider.fetches == 1
    assert origin.sent < 1024  # the head and a few bytes of the body, then it gave up


# ============================================================================ the CLI


def run_check(
    origin: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *options: str,
) -> tuple[int, str, str]:
    """``scaling-credentials check --json`` in this process, against ``origin``."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOSTILE_TEST_KEY", KEY)
    capsys.readouterr()
    code = main(
        [
            "check",
            "--source",
            "env:HOSTILE_TEST_KEY",
            "--base-url",
            origin.url + "/v1",
            "--json",
            *options,
        ]
    )
    out, err = capsys.readouterr()
    assert_no_key(out, err)
    return code, out, err


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, EXIT_FAILED), (200, EXIT_OK), (302, EXIT_CONFIG), (500, EXIT_FAILED)],
)
def test_cli_check_reads_at_most_64_kib_of_a_hostile_answer(
    origin: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: int,
    expected: int,
    traced: Traced,
) -> None:
    origin.route("/v1/oncall/schedules", HostileServer.gzip_bomb(status, size=BOMB))
    (code, out, _), peak = traced(lambda: run_check(origin, monkeypatch, capsys))
    assert code == expected
    assert json.loads(out)["status"] == status
    assert peak < MEMORY_BUDGET, f"the check allocated {peak / MIB:.1f} MiB"


def test_cli_check_reads_the_documented_error_of_an_encoded_401(
    origin: HostileServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = REJECTION[:-1] + b', "requestId": "req-hostile-1"}'
    origin.route(
        "/v1/oncall/schedules",
        HostileServer.json(401, gzip.compress(body), [("Content-Encoding", "gzip")]),
    )
    code, out, _ = run_check(origin, monkeypatch, capsys)
    document = json.loads(out)
    assert code == EXIT_FAILED
    assert (document["code"], document["request_id"]) == ("invalid_api_key", "req-hostile-1")


def test_cli_check_is_bounded_by_its_timeout_against_a_drip(
    origin: HostileServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    origin.route("/v1/oncall/schedules", HostileServer.drip(200, interval=0.05))
    code, _out, _ = run_check(origin, monkeypatch, capsys, "--timeout", "1")
    assert code in (EXIT_OK, EXIT_FAILED)  # answered 200 in time, or gave up at --timeout
    assert origin.sent < 1024


# ============================================================================ redirects


@pytest.mark.parametrize("follow", [True, False])
def test_a_redirect_to_a_second_origin_gets_no_key_and_its_401_is_no_rejection(
    hostile_server: HostileServer, follow: bool, traced: Traced
) -> None:
    # The second origin answers like the API rejecting a key, with a bomb for a body
    # too: it never received the key, so its 401 is returned untouched, unread.
    with HostileServer() as second:
        second.route("/v1/oncall/schedules", HostileServer.json(401, REJECTION))
        second.route("/bomb", HostileServer.gzip_bomb(size=BOMB))
        for target in ("/v1/oncall/schedules", "/bomb"):
            hostile_server.route(
                f"/v1/redirect{target}", HostileServer.redirect(second.url + target)
            )
        provider = MemoryProvider(KEY)
        cache = KeyCache(provider, min_refresh_interval=0)
        with scaling_client(cache, base_url=hostile_server.url + "/v1") as client:
            cache.get()
            provider.value = "scl_live_theNEXTkey0123456789abcdef"  # a refetch would resend
            for target in ("/v1/oncall/schedules", "/bomb"):

                def request(target: str = target) -> int:
                    with client.stream(
                        "GET", f"/redirect{target}", follow_redirects=follow
                    ) as response:
                        return response.status_code

                status, peak = traced(request)
                assert status == (401 if follow else 307)
                assert peak < MEMORY_BUDGET
        assert provider.fetches == 1  # no forced refetch
        assert len(hostile_server.hits) == 2  # no resend
        assert len(second.hits) == (2 if follow else 0)
        assert all("authorization" not in hit.headers for hit in second.hits)
        assert_no_key(second.received)


# ============================================================================ Lambda extension
# LambdaExtensionProvider speaks plain http to localhost:<port>, sending the session
# token in X-Aws-Parameters-Secrets-Token; here the "extension" is hostile. The provider
# streams each answer undecoded (it asks for no compression and refuses a compressed
# answer), stops at MAX_ANSWER or its timeout, and redacts the token from every text.

SESSION_TOKEN = "IQoJb3JpZ2luHOSTILEsessionToken0123456789abcdef"
EXTENSION_PATH = "/secretsmanager/get"


@pytest.fixture
def extension(
    hostile_server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., object]:
    """``extension(answer)``: a LambdaExtensionProvider pointed at the hostile server,
    which answers every secret request with ``answer``."""
    pytest.importorskip("scaling_credentials_aws")
    from scaling_credentials_aws import LambdaExtensionProvider

    for name in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)

    def make(answer: object, **options: object) -> object:
        hostile_server.route(EXTENSION_PATH, answer)  # type: ignore[arg-type]
        return LambdaExtensionProvider(
            "prod/scaling",
            port=hostile_server.port,
            ready_timeout=0,
            **options,  # type: ignore[arg-type]
        )

    return make


def extension_answers() -> dict[str, Callable[[], object]]:
    huge = b'{"SecretString": "' + b"x" * (8 * MIB) + b'"}'
    return {
        "huge-200": lambda: HostileServer.json(200, huge),
        "huge-403": lambda: HostileServer.reply(403, b"denied " * (MIB // 4)),
        "bomb-200": lambda: HostileServer.gzip_bomb(200, size=64 * MIB),
        "bomb-400": lambda: HostileServer.gzip_bomb(400, size=64 * MIB, length=False),
        "endless-200": lambda: HostileServer.endless(200),
    }


def fetch_error_in_thread(provider: object, wait: float) -> list[BaseException]:
    """The error of ``provider.fetch()`` run in a thread, if it ends within ``wait``
    seconds (an empty list if not: the server's stop at teardown ends it anyway)."""
    errors: list[BaseException] = []
    worker = threading.Thread(target=lambda: errors.append(fetch_error(provider)), daemon=True)
    worker.start()
    worker.join(timeout=wait)
    return errors


def fetch_error(provider: object) -> BaseException:
    from scaling_credentials import ProviderError

    with pytest.raises(ProviderError) as info:
        provider.fetch()  # type: ignore[attr-defined]
    return info.value


@pytest.mark.parametrize("case", ["huge-200", "huge-403", "bomb-200", "bomb-400"])
def test_extension_hostile_answers_give_a_typed_error_without_the_token(
    extension: Callable[..., object], hostile_server: HostileServer, case: str
) -> None:
    # What the provider does today, and must keep doing.
    provider = extension(extension_answers()[case]())
    error = fetch_error(provider)
    assert_no_secret(SESSION_TOKEN, str(error), repr(error))
    assert [hit.headers.get("x-aws-parameters-secrets-token") for hit in hostile_server.hits] == [
        SESSION_TOKEN
    ]


def test_extension_redirect_is_not_followed_and_the_token_goes_nowhere_else(
    extension: Callable[..., object],
) -> None:
    with HostileServer() as elsewhere:
        provider = extension(HostileServer.redirect(elsewhere.url + EXTENSION_PATH))
        error = fetch_error(provider)
        assert "307" in str(error)
        assert elsewhere.received == b""


@pytest.mark.parametrize("case", ["huge-200", "bomb-200", "bomb-400"])
def test_extension_capped_read_costs_no_memory(
    extension: Callable[..., object], case: str, traced: Traced
) -> None:
    provider = extension(extension_answers()[case]())
    _, peak = traced(lambda: fetch_error(provider))
    assert peak < MEMORY_BUDGET, f"the fetch allocated {peak / MIB:.1f} MiB"


def test_extension_capped_read_gives_up_on_an_endless_answer(
    extension: Callable[..., object], hostile_server: HostileServer
) -> None:
    provider = extension(HostileServer.endless(200), timeout=2.0)
    errors = fetch_error_in_thread(provider, wait=30)
    assert errors, "the provider is still reading an endless answer"
    assert hostile_server.sent < 4 * MIB


# How long the extension's capped read may take against a drip, at most (its own bound
# plus slack; the test waits this long, not more).
EXTENSION_READ_BOUND = 10.0


@pytest.mark.slow
def test_extension_capped_read_is_bounded_in_time_against_a_drip(
    extension: Callable[..., object],
) -> None:
    # A 4 KiB answer dripped at a byte every 50 ms (over three minutes), each byte well
    # within the provider's 2 s read timeout.
    provider = extension(HostileServer.drip(200, interval=0.05), timeout=2.0)
    errors = fetch_error_in_thread(provider, wait=EXTENSION_READ_BOUND)
    assert errors, "the provider is still reading a dripping answer"


def test_extension_error_echoing_the_session_token_does_not_quote_it(
    extension: Callable[..., object],
) -> None:
    provider = extension(HostileServer.reply(403, b"token " + SESSION_TOKEN.encode() + b" denied"))
    error = fetch_error(provider)
    assert_no_secret(SESSION_TOKEN, str(error), repr(error))


# ============================================================================ Vault
# VaultProvider against a hostile Vault (redirects to another origin, a byte recorder)
# is tested with the Vault provider: providers/vault/tests/test_vault_redirects.py. The
# ``hostile_server`` fixture and HostileServer's answers (bombs, drips, endless bodies)
# are there for it too.
