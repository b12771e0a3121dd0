"""ScalingRequestsAuth: requests sessions against FakeScalingAPI and HostileServer over real
sockets. Same promises as ScalingAuth: the key only where it may go, one refresh and one
resend after a rejected key, at most 64 KiB of a 401 read (after decoding), no header
across origins."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import requests

from scaling_credentials import ConfigurationError, KeyCache
from scaling_credentials.integrations.requests import (
    ScalingRequestsAuth,
    _withhold_across_origins,
)
from scaling_credentials.testing import (
    ClientFactory,
    FakeScalingAPI,
    HostileServer,
    MemoryProvider,
    rotate_and_revoke,
    run_rotation_threads,
)
from scaling_credentials.testing.provider_suite import assert_no_secret

T = TypeVar("T")
PATH = "/oncall/schedules"
KEY = "scl_live_REQUESTSkey0123456789abcdefXYZ"
NEXT = "scl_live_REQUESTSnext0123456789abcdefXY"
MIB = 1024 * 1024
BOMB = 256 * MIB
MEMORY_BUDGET = 4 * MIB
REJECTION = (
    b'{"statusCode": 401, "type": "not_authorized_error", "code": "invalid_api_key", '
    b'"requestId": "r-1"}'
)


def session_with(auth: ScalingRequestsAuth) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    return session


def auth_with(value: str, **options: object) -> tuple[ScalingRequestsAuth, MemoryProvider]:
    provider = MemoryProvider(value)
    cache = KeyCache(provider, min_refresh_interval=0, **options)  # type: ignore[arg-type]
    return ScalingRequestsAuth(cache), provider


def traced(action: Callable[[], T]) -> tuple[T, int]:
    """``action()`` and the peak of memory it allocated, in bytes."""
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
    auth, provider = auth_with(api.issue_key())
    with session_with(auth) as session:
        response = session.get(api.url + PATH)
    assert response.status_code == 200 and response.history == []
    assert response.json()["data"]
    assert provider.fetches == 1
    assert [r.status for r in api.requests] == [200]


def test_a_rejected_key_is_refreshed_and_the_request_resent_once(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    auth, provider = auth_with(old)
    with session_with(auth) as session:
        assert session.get(api.url + PATH).status_code == 200
        provider.value = rotate_and_revoke(api, lambda _: None, old)
        response = session.get(api.url + PATH)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert response.history[0].json()["code"] == "invalid_api_key"  # still readable
    assert provider.fetches == 2
    assert [r.status for r in api.requests] == [200, 401, 200]
    assert api.requests[-1].key != api.requests[-2].key


def test_the_source_holding_the_rejected_key_returns_the_401(api: FakeScalingAPI) -> None:
    auth, provider = auth_with(api.issue_key())
    api.revoke(provider.value)
    with session_with(auth) as session:
        response = session.get(api.url + PATH)
    assert response.status_code == 401 and response.history == []
    assert response.json()["code"] == "invalid_api_key"
    assert provider.fetches == 2  # one forced fetch, no loop
    assert len(api.requests) == 1


@pytest.mark.parametrize("code", ["missing_authorization_header", "not_authorized"])
def test_other_401s_are_returned_untouched(hostile_server: HostileServer, code: str) -> None:
    body = json.dumps({"statusCode": 401, "code": code}).encode()
    hostile_server.route("/v1" + PATH, HostileServer.json(401, body))
    auth, provider = auth_with(KEY)
    with session_with(auth) as session:
        response = session.get(hostile_server.url + "/v1" + PATH)
    assert response.status_code == 401 and response.content == body
    assert provider.fetches == 1


def test_a_one_shot_session_call_works_too(api: FakeScalingAPI) -> None:
    auth, _ = auth_with(api.issue_key())
    assert requests.get(api.url + PATH, auth=auth, timeout=10).status_code == 200


def test_source_forms_and_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALING_API_KEY", KEY)
    for auth in (
        ScalingRequestsAuth(),
        ScalingRequestsAuth("env:SCALING_API_KEY", ttl=60),
        ScalingRequestsAuth(MemoryProvider(KEY)),
    ):
        assert auth.cache.get().reveal() == KEY
        assert_no_secret(repr(auth), KEY)
    with pytest.raises(ConfigurationError, match="ttl applies when ScalingRequestsAuth"):
        ScalingRequestsAuth(KeyCache(MemoryProvider(KEY)), ttl=5)
    with pytest.raises(ConfigurationError, match="ScalingRequestsAuth takes a Provider"):
        ScalingRequestsAuth(42)  # type: ignore[arg-type]


# ============================================================================ destinations


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/v1/x", "allowed_hosts"),
        ("https://api.scaling.cloud.evil.com/v1/x", "refusing to send"),
        ("http://api.scaling.cloud/v1/x", "plain http"),
        ("http://localhost./v1/x", "refusing to send"),
        ("https://api.scaling.cloud/v1/" + KEY, "URL holds an API key"),
    ],
)
def test_refused_destinations_raise_before_anything_is_fetched_or_sent(
    url: str, reason: str
) -> None:
    auth, provider = auth_with(KEY)
    with session_with(auth) as session, pytest.raises(ConfigurationError, match=reason) as info:
        session.get(url)
    assert provider.fetches == 0
    assert_no_secret(str(info.value), KEY)


def test_allowed_hosts_extend_the_destinations(hostile_server: HostileServer) -> None:
    auth = ScalingRequestsAuth(MemoryProvider(KEY), allowed_hosts=["*.example.com"])
    prepared = auth(requests.Request("GET", "https://eu.example.com/v1/x").prepare())
    assert prepared.headers["Authorization"] == "Bearer " + KEY
    with pytest.raises(ConfigurationError, match="plain http"):
        auth(requests.Request("GET", "http://eu.example.com/v1/x").prepare())


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    """A recording proxy; the environment's proxy variables cleared first."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with HostileServer(default=HostileServer.reply(502)) as server:
        yield server


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_plain_http_that_the_environment_sends_through_a_proxy_is_refused(
    api: FakeScalingAPI, proxy: HostileServer, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    auth, _ = auth_with(api.issue_key())
    with session_with(auth) as session, pytest.raises(ConfigurationError, match="NO_PROXY"):
        session.get(api.url + PATH)
    assert proxy.received == b""
    assert api.requests == []


def test_plain_http_that_no_proxy_keeps_direct_is_sent(
    api: FakeScalingAPI, proxy: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    auth, _ = auth_with(api.issue_key())
    with session_with(auth) as session:
        assert session.get(api.url + PATH).status_code == 200
    assert proxy.received == b""


# ============================================================================ bodies


def test_replayable_bodies_are_resent_byte_for_byte(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    auth, provider = auth_with(old)
    payload = {"name": "Primary", "timezone": "Europe/Paris"}
    with session_with(auth) as session:
        session.get(api.url + PATH)
        provider.value = rotate_and_revoke(api, lambda _: None, old)
        response = session.post(api.url + PATH, json=payload)
    assert response.status_code == 201 and len(response.history) == 1
    first, second = api.requests[-2:]
    assert (first.status, second.status) == (401, 201)
    assert first.body == second.body == json.dumps(payload).encode()


@pytest.mark.parametrize("kind", ["generator", "file"])
def test_one_shot_bodies_are_not_resent_but_the_key_is_refreshed(
    api: FakeScalingAPI, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = api.issue_key()
    auth, provider = auth_with(old)
    auth.cache.get()
    new = rotate_and_revoke(api, lambda _: None, old)
    provider.value = new
    body: object = (
        (chunk for chunk in [b'{"name": ', b'"Primary"}'])
        if kind == "generator"
        else io.BytesIO(b'{"name": "Primary"}')
    )
    with session_with(auth) as session, caplog.at_level(logging.WARNING):
        response = session.post(api.url + PATH, data=body)  # type: ignore[arg-type]
        assert response.status_code == 401 and response.history == []
        assert auth.cache.get().reveal() == new  # refreshed: the next request uses it
        assert session.get(api.url + PATH).status_code == 200
    assert provider.fetches == 2
    assert "cannot be resent" in caplog.text
    assert_no_secret(caplog.text, old)
    assert_no_secret(caplog.text, new)


def test_success_bodies_are_not_read_and_stay_streaming(api: FakeScalingAPI) -> None:
    auth, _ = auth_with(api.issue_key())
    with session_with(auth) as session:
        response = session.get(api.url + PATH, stream=True)
        assert response.raw.tell() == 0  # nothing read from the socket yet
        assert response.json()["data"]
        response.close()


# ============================================================================ hostile 401s

HOSTILE_401S = {
    "gzip-gzip-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=2),
    "gzip-bomb-chunked": lambda: HostileServer.gzip_bomb(size=BOMB, layers=1, length=False),
    "gzip-x3-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=3),
    "endless-gzip": lambda: HostileServer.endless(gzip=True),
    "endless": lambda: HostileServer.endless(),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_401S))
def test_at_most_64_kib_of_a_hostile_401_is_read(hostile_server: HostileServer, case: str) -> None:
    hostile_server.route("/v1" + PATH, HOSTILE_401S[case]())
    auth, provider = auth_with(KEY)
    with session_with(auth) as session:

        def request() -> int:
            with session.get(hostile_server.url + "/v1" + PATH, stream=True) as response:
                return response.status_code

        status, peak = traced(request)
    assert status == 401
    assert peak < MEMORY_BUDGET, f"reading the 401 allocated {peak / MIB:.1f} MiB"
    assert provider.fetches == 1  # not a rejection: no refresh, no resend
    assert len(hostile_server.hits) == 1


def test_a_compressed_rejection_is_still_recognized(hostile_server: HostileServer) -> None:
    # Bounded decoding still decodes (two gzip layers, as urllib3 undoes them): the old
    # key's 401 is a rejection, and the request is resent with the new key.
    rejection = HostileServer.json(
        401, gzip.compress(gzip.compress(REJECTION)), [("Content-Encoding", "gzip, gzip")]
    )
    accepted = HostileServer.json(200, b'{"data": []}')
    hostile_server.route(
        "/v1" + PATH,
        lambda hit: (rejection if KEY in hit.headers.get("authorization", "") else accepted)(hit),
    )
    auth, provider = auth_with(KEY)
    auth.cache.get()
    provider.value = NEXT
    with session_with(auth) as session:
        response = session.get(hostile_server.url + "/v1" + PATH)
    assert response.status_code == 200
    assert response.history[0].content == REJECTION  # what the user reads: decoded, whole
    assert provider.fetches == 2


def test_a_large_401_is_handed_back_whole(hostile_server: HostileServer) -> None:
    body = b'{"statusCode": 401, "code": "invalid_api_key", "pad": "' + b"x" * 200_000 + b'"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = (
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    hostile_server.route("/v1" + PATH, lambda hit: iter([head, chunked]))
    auth, provider = auth_with(KEY)
    with session_with(auth) as session:
        response = session.get(hostile_server.url + "/v1" + PATH)
    assert response.status_code == 401
    assert response.content == body  # the 64 KiB read were put back in front of the rest
    assert provider.fetches == 1


def test_a_dripping_401_is_given_up_on(
    hostile_server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scaling_credentials._api as api_module

    clock = [0.0]
    monkeypatch.setattr(api_module, "_clock", lambda: clock[0])
    original = api_module.ErrorBodyReader.feed

    def feed(self: api_module.ErrorBodyReader, chunk: bytes) -> bool:
        clock[0] += 1.0  # each byte "takes" a second
        return original(self, chunk)

    monkeypatch.setattr(api_module.ErrorBodyReader, "feed", feed)
    hostile_server.route("/v1" + PATH, HostileServer.drip(interval=0.001))
    auth, provider = auth_with(KEY)
    with (
        session_with(auth) as session,
        session.get(hostile_server.url + "/v1" + PATH, stream=True) as response,
    ):
        assert response.status_code == 401
    assert provider.fetches == 1  # given up after ERROR_BODY_SECONDS: not a rejection
    assert clock[0] <= api_module.ERROR_BODY_SECONDS + 2


# ============================================================================ redirects


def test_the_key_never_follows_a_redirect_to_another_origin(
    hostile_server: HostileServer,
) -> None:
    # The second origin answers like the API rejecting a key: it never got the key, so
    # its 401 is returned untouched, with no refresh and no resend.
    with HostileServer() as second:
        second.route("/v1" + PATH, HostileServer.json(401, REJECTION))
        hostile_server.route("/v1/redirect", HostileServer.redirect(second.url + "/v1" + PATH))
        auth, provider = auth_with(KEY)
        provider.value = NEXT  # a refetch would resend with this
        with session_with(auth) as session:
            response = session.get(hostile_server.url + "/v1/redirect")
        assert response.status_code == 401
        assert [r.status_code for r in response.history] == [307]
        assert provider.fetches == 1
        assert len(hostile_server.hits) == 1 and len(second.hits) == 1
        assert "authorization" not in second.hits[0].headers
        assert_no_secret(second.received.decode("latin-1"), KEY)


def test_a_401_after_a_same_origin_redirect_is_a_rejection(api: FakeScalingAPI) -> None:
    from scaling_credentials.testing import ScriptedResponse

    old = api.issue_key()
    auth, provider = auth_with(old)
    auth.cache.get()
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    api.script(ScriptedResponse(307, b"", headers=(("Location", api.url + PATH),)))
    with session_with(auth) as session:
        response = session.get(api.url + "/elsewhere")
    assert response.status_code == 200
    assert [r.status for r in api.requests] == [307, 401, 200]
    assert provider.fetches == 2


@pytest.mark.parametrize(
    ("start", "location", "kept"),
    [
        ("https://api.scaling.cloud/v1/a", "/v1/b", True),
        ("https://api.scaling.cloud/v1/a", "https://api.scaling.cloud:443/v1/b", True),
        # requests itself keeps the header on these; the auth does not
        ("http://127.0.0.1/v1/a", "https://127.0.0.1/v1/b", False),
        ("https://api.scaling.cloud/v1/a", "http://api.scaling.cloud/v1/b", False),
        ("https://api.scaling.cloud/v1/a", "https://api.scaling.cloud:8443/v1/b", False),
        ("https://api.scaling.cloud/v1/a", "https://eu.api.scaling.cloud/v1/b", False),
        ("https://api.scaling.cloud/v1/a", "https://api.scaling.cloud:99999/v1/b", False),
    ],
)
def test_the_header_is_withheld_from_every_other_origin(
    start: str, location: str, kept: bool
) -> None:
    request = requests.Request("GET", start, headers={"Authorization": "Bearer " + KEY})
    prepared = request.prepare()
    response = requests.Response()
    response.status_code = 307
    response.url = start
    response.headers["Location"] = location
    _withhold_across_origins(response, prepared)
    assert ("Authorization" in prepared.headers) is kept


# ============================================================================ under load


def requests_client(auth: ScalingRequestsAuth) -> ClientFactory:
    @contextlib.contextmanager
    def open_client(base_url: str) -> Iterator[Callable[[str], tuple[int, int]]]:
        with session_with(auth) as session:

            def send(path: str) -> tuple[int, int]:
                response = session.get(base_url + path, timeout=30)
                return response.status_code, len(response.history)

            yield send

    return open_client


def test_rotation_under_8_threads_with_default_settings(api: FakeScalingAPI) -> None:
    keys = [api.issue_key()]
    provider = MemoryProvider(keys[0])
    auth = ScalingRequestsAuth(provider)  # the library's default KeyCache settings

    def write(value: str) -> None:
        provider.value = value

    run = run_rotation_threads(
        api,
        None,
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        client=requests_client(auth),
        threads=8,
        rotations=3,
    )
    assert run.failed == 0, f"{run.failed} failed requests"
    assert run.retried >= 3
    assert auth.cache.stats.fetches == 1 + 3  # one fetch per rotation
    assert auth.cache.stats.forced_fetches == 3


def test_one_auth_serves_many_threads_at_once(api: FakeScalingAPI) -> None:
    auth, provider = auth_with(api.issue_key())
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with session_with(auth) as session:
                for _ in range(20):
                    assert session.get(api.url + PATH).status_code == 200
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert provider.fetches == 1
