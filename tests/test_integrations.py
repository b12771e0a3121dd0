"""The promises every client keeps alike, checked for each: ScalingAuth (httpx),
ScalingRequestsAuth (requests) and ScalingMiddleware (aiohttp) against FakeScalingAPI and
HostileServer over real sockets. And one KeyCache behind the three at once. What only one
library does (its proxies, its redirects' own rules, its body types) is tested in
test_integration_requests.py and test_integration_aiohttp.py."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NamedTuple

import aiohttp
import httpx
import pytest
import requests

from scaling_credentials import ApiKey, ConfigurationError, KeyCache, ScalingAuth
from scaling_credentials._authcore import KeyAuthBase
from scaling_credentials.integrations.aiohttp import ScalingMiddleware
from scaling_credentials.integrations.requests import ScalingRequestsAuth
from scaling_credentials.testing import (
    AsyncClientFactory,
    ClientFactory,
    FakeClock,
    FakeScalingAPI,
    HostileServer,
    MemoryProvider,
    rotate_and_revoke,
    run_rotation_tasks,
    run_rotation_threads,
)
from scaling_credentials.testing.provider_suite import (
    assert_equal_masked,
    assert_key_is,
    assert_no_secret,
)

PATH = "/oncall/schedules"
KEY = "scl_live_SHAREDkey0123456789abcdefXYZabc"
NEXT = "scl_live_SHAREDnext0123456789abcdefXYZab"
MIB = 1024 * 1024
BOMB = 256 * MIB
MEMORY_BUDGET = 4 * MIB  # 64 KiB of body and a few decoder buffers
REJECTION = (
    b'{"statusCode": 401, "type": "not_authorized_error", "code": "invalid_api_key", '
    b'"requestId": "r-1"}'
)
Traced = Callable[[Callable[[], Any]], tuple[Any, int]]


class Answer(NamedTuple):
    status: int
    body: bytes  # empty when not read
    redirects: int


# ============================================================================ the drivers


def send_httpx(
    auth: Any, method: str, url: str, body: object, one_shot: bool, read: bool
) -> Answer:
    content: Any = iter([b'{"name": ', b'"Primary"}']) if one_shot else None
    with httpx.Client(auth=auth, follow_redirects=True, timeout=30) as client:
        request = client.build_request(method, url, json=body, content=content)
        response = client.send(request, stream=not read)
        try:
            redirects = sum(1 for r in response.history if r.is_redirect)
            return Answer(response.status_code, response.content if read else b"", redirects)
        finally:
            response.close()


def send_requests(
    auth: Any, method: str, url: str, body: object, one_shot: bool, read: bool
) -> Answer:
    data: Any = (c for c in [b'{"name": ', b'"Primary"}']) if one_shot else None
    with requests.Session() as session:
        session.auth = auth
        with session.request(
            method, url, json=body, data=data, stream=not read, timeout=30
        ) as response:
            redirects = sum(1 for r in response.history if r.is_redirect)
            return Answer(response.status_code, response.content if read else b"", redirects)


def send_aiohttp(
    auth: Any, method: str, url: str, body: object, one_shot: bool, read: bool
) -> Answer:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": '
        yield b'"Primary"}'

    async def scenario() -> Answer:
        async with (
            aiohttp.ClientSession(middlewares=(auth,)) as session,
            session.request(method, url, json=body, data=chunks() if one_shot else None) as r,
        ):
            return Answer(r.status, await r.read() if read else b"", len(r.history))

    return asyncio.run(scenario())


class Driver(NamedTuple):
    name: str
    auth: type[KeyAuthBase]
    send: Callable[[Any, str, str, object, bool, bool], Answer]

    def request(
        self,
        auth: KeyAuthBase,
        url: str,
        method: str = "GET",
        *,
        json: object = None,
        one_shot: bool = False,
        read: bool = True,
    ) -> Answer:
        return self.send(auth, method, url, json, one_shot, read)

    def make(self, value: str, **options: Any) -> tuple[KeyAuthBase, MemoryProvider]:
        provider = MemoryProvider(value)
        return self.auth(KeyCache(provider, min_refresh_interval=0, **options)), provider


DRIVERS = [
    Driver("httpx", ScalingAuth, send_httpx),
    Driver("requests", ScalingRequestsAuth, send_requests),
    Driver("aiohttp", ScalingMiddleware, send_aiohttp),
]


@pytest.fixture(params=DRIVERS, ids=lambda d: d.name)
def driver(request: pytest.FixtureRequest) -> Driver:
    result: Driver = request.param
    return result


def rejects(key: str, then: bytes = b'{"data": []}') -> Callable[[Any], Any]:
    """A HostileServer route answering a request carrying ``key`` with ``REJECTION``
    gzip-compressed, and any other with 200 and ``then``."""
    rejection = HostileServer.json(401, gzip.compress(REJECTION), [("Content-Encoding", "gzip")])
    accepted = HostileServer.json(200, then)
    return lambda hit: (rejection if key in hit.headers.get("authorization", "") else accepted)(hit)


# ============================================================================ the basics


def test_sends_the_key_and_leaves_a_success_alone(api: FakeScalingAPI, driver: Driver) -> None:
    auth, provider = driver.make(api.issue_key())
    answer = driver.request(auth, api.url + PATH)
    assert answer.status == 200 and json.loads(answer.body)["data"]
    assert provider.fetches == 1
    assert [r.status for r in api.requests] == [200]


def test_a_rejected_key_is_refreshed_and_the_request_resent_once(
    api: FakeScalingAPI, driver: Driver
) -> None:
    old = api.issue_key()
    auth, provider = driver.make(old)
    assert driver.request(auth, api.url + PATH).status == 200
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    assert driver.request(auth, api.url + PATH).status == 200
    assert provider.fetches == 2
    assert [r.status for r in api.requests] == [200, 401, 200]
    assert api.requests[-1].key != api.requests[-2].key


def test_the_source_holding_the_rejected_key_returns_the_401(
    api: FakeScalingAPI, driver: Driver
) -> None:
    auth, provider = driver.make(api.issue_key())
    api.revoke(provider.value)
    answer = driver.request(auth, api.url + PATH)
    assert answer.status == 401 and json.loads(answer.body)["code"] == "invalid_api_key"
    assert provider.fetches == 2  # one forced fetch, no loop
    assert len(api.requests) == 1


def test_a_source_back_on_a_rejected_key_warns_once_a_minute(
    api: FakeScalingAPI, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    # K1 is rejected, the source hands out K2, rejected too, then K1 again: the 401 is
    # returned with no resend, and the operator is warned (once a minute per key, the
    # rejections in between counted), naming both keys, masked.
    clock = FakeClock()
    k1 = api.issue_key()
    auth, provider = driver.make(k1, clock=clock)
    assert driver.request(auth, api.url + PATH).status == 200
    k2 = api.issue_key()
    api.revoke(k1)
    api.revoke(k2)
    provider.value = k2
    with caplog.at_level(logging.DEBUG, logger="scaling_credentials"):
        assert driver.request(auth, api.url + PATH).status == 401  # K1, then K2: retried once
        provider.value = k1  # back on a key the API rejected before
        caplog.clear()
        assert driver.request(auth, api.url + PATH).status == 401  # K2: K1 is no retry
        assert driver.request(auth, api.url + PATH).status == 401  # K1: stuck, counted
        clock.advance(61)
        assert driver.request(auth, api.url + PATH).status == 401  # K1: a minute later
    masked1, masked2 = ApiKey(k1).masked, ApiKey(k2).masked
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("scaling_credentials")
    ]
    assert len(warnings) == 2, warnings
    assert f"rejected key {masked2} and " in warnings[0]
    assert f"returned {masked1}, a key it rejected before" in warnings[0]
    assert "requests fail until the source holds a valid key" in warnings[0]
    assert f"rejected key {masked1} and " in warnings[1]
    assert "(1 more rejections of this key since the last warning)" in warnings[1]
    debug = [r.getMessage() for r in caplog.records if r.name == "scaling_credentials.auth"]
    assert f"the source returned {masked1}, a key the API rejected before" in debug[0], debug
    assert not any("no other key" in line for line in debug[:1]), debug
    assert_no_secret(k1, caplog.text)
    assert_no_secret(k2, caplog.text)
    assert [r.status for r in api.requests] == [200, 401, 401, 401, 401, 401]


@pytest.mark.parametrize("code", ["missing_authorization_header", "not_authorized"])
def test_other_401s_are_returned_untouched(
    hostile_server: HostileServer, driver: Driver, code: str
) -> None:
    body = json.dumps({"statusCode": 401, "code": code}).encode()
    hostile_server.route("/v1" + PATH, HostileServer.json(401, body))
    auth, provider = driver.make(KEY)
    assert driver.request(auth, hostile_server.url + "/v1" + PATH)[:2] == (401, body)
    assert provider.fetches == 1


def test_source_forms_and_repr(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALING_API_KEY", KEY)
    for auth in (
        driver.auth(),
        driver.auth("env:SCALING_API_KEY", ttl=60),
        driver.auth(MemoryProvider(KEY)),
    ):
        assert_key_is(auth.cache.get(), KEY)
        assert repr(auth).startswith(f"<{driver.auth.__name__} ")
        assert_no_secret(KEY, repr(auth))
    with pytest.raises(ConfigurationError, match=f"ttl applies when {driver.auth.__name__}"):
        driver.auth(KeyCache(MemoryProvider(KEY)), ttl=5)
    with pytest.raises(ConfigurationError, match=f"{driver.auth.__name__} takes a Provider"):
        driver.auth(42)  # type: ignore[arg-type]


# ============================================================================ destinations

REFUSED = [
    ("https://example.com/v1/x", r"\(\.\.\., allowed_hosts"),
    ("https://api.scaling.cloud.evil.com/v1/x", "refusing to send"),
    ("https://evilapi.scaling.cloud/v1/x", "refusing to send"),
    ("http://api.scaling.cloud/v1/x", "plain http"),
    ("http://10.0.0.5/v1/x", "refusing to send"),
    ("http://localhost./v1/x", "refusing to send"),
    ("https://api.scaling.cloud/v1/" + KEY, "URL holds an API key"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_destinations_raise_before_anything_is_fetched_or_sent(
    driver: Driver, url: str, reason: str
) -> None:
    auth, provider = driver.make(KEY)
    with pytest.raises(ConfigurationError, match=reason) as info:
        driver.request(auth, url)
    assert provider.fetches == 0
    assert_no_secret(KEY, str(info.value))


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_the_three_clients_word_a_refusal_alike(url: str, reason: str) -> None:
    texts = []
    for each in DRIVERS:
        with pytest.raises(ConfigurationError) as info:
            each.request(each.make(KEY)[0], url)
        texts.append(str(info.value).replace(each.auth.__name__ + "(", "<auth>("))
    assert len(set(texts)) == 1, texts


PASTED_TOKEN = "PASTEDkey0123456789abcdefXYZ"
PASTED = {
    "path": f"/v1/keys/scl_live_{PASTED_TOKEN}",
    "query": f"/v1/x?key=scl_live_{PASTED_TOKEN}",
    "encoded": f"/v1/x?key=scl%5Flive%5F{PASTED_TOKEN}",
    "prefix-encoded": f"/v1/keys/%73%63%6C%5F%6C%69%76%65%5F{PASTED_TOKEN}",
}


@pytest.mark.parametrize("where", sorted(PASTED))
def test_a_url_holding_a_key_is_refused_on_every_request(
    hostile_server: HostileServer, driver: Driver, where: str
) -> None:
    # The host passed every check once (a request to another path): a URL on it that
    # holds a key is still refused, before a byte is sent.
    hostile_server.route("/v1" + PATH, HostileServer.json(200, b'{"data": []}'))
    auth, _ = driver.make(KEY)
    url = hostile_server.url + PASTED[where]
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="URL holds an API key"):
            driver.request(auth, url)
        assert driver.request(auth, hostile_server.url + "/v1" + PATH).status == 200
    assert_no_secret(PASTED_TOKEN, hostile_server.received.decode("latin-1"))
    assert len(hostile_server.hits) == 2


def test_allowed_hosts_extend_the_destinations_over_https_only(
    api: FakeScalingAPI, driver: Driver
) -> None:
    auth = driver.auth(MemoryProvider(KEY), allowed_hosts=["*.example.com"])
    with pytest.raises(ConfigurationError, match="plain http"):
        driver.request(auth, "http://eu.example.com/v1/x")


# ============================================================================ bodies


def test_replayable_bodies_are_resent_byte_for_byte(api: FakeScalingAPI, driver: Driver) -> None:
    old = api.issue_key()
    auth, provider = driver.make(old)
    auth.cache.get()
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    payload = {"name": "Primary", "timezone": "Europe/Paris"}
    assert driver.request(auth, api.url + PATH, "POST", json=payload).status == 201
    first, second = api.requests
    assert (first.status, second.status) == (401, 201)
    assert json.loads(first.body) == json.loads(second.body) == payload
    assert first.body == second.body


def test_a_one_shot_body_is_not_resent_but_the_key_is_refreshed(
    api: FakeScalingAPI, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    old = api.issue_key()
    auth, provider = driver.make(old)
    auth.cache.get()
    new = rotate_and_revoke(api, lambda _: None, old)
    provider.value = new
    with caplog.at_level(logging.WARNING):
        assert driver.request(auth, api.url + PATH, "POST", one_shot=True).status == 401
    assert_key_is(auth.cache.get(), new)  # the next request uses it
    assert provider.fetches == 2
    assert len(api.requests) == 1
    assert "cannot be resent" in caplog.text
    assert_no_secret(old, caplog.text)
    assert_no_secret(new, caplog.text)


# ============================================================================ hostile 401s

HOSTILE_401S = {
    "gzip-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=1),
    "gzip-gzip-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=2),
    "gzip-x3-bomb": lambda: HostileServer.gzip_bomb(size=BOMB, layers=3),
    "gzip-bomb-chunked": lambda: HostileServer.gzip_bomb(size=BOMB, layers=1, length=False),
    "endless-gzip": lambda: HostileServer.endless(gzip=True),
    "endless": lambda: HostileServer.endless(),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_401S))
def test_at_most_64_kib_of_a_hostile_401_is_read(
    hostile_server: HostileServer, driver: Driver, case: str, traced: Traced
) -> None:
    hostile_server.route("/v1" + PATH, HOSTILE_401S[case]())
    auth, provider = driver.make(KEY)
    answer, peak = traced(
        lambda: driver.request(auth, hostile_server.url + "/v1" + PATH, read=False)
    )
    assert answer.status == 401
    assert peak < MEMORY_BUDGET, f"reading the 401 allocated {peak / MIB:.1f} MiB"
    assert provider.fetches == 1  # not a rejection: no refresh, no resend
    assert len(hostile_server.hits) == 1


def test_a_compressed_rejection_is_still_recognized(
    hostile_server: HostileServer, driver: Driver
) -> None:
    hostile_server.route("/v1" + PATH, rejects(KEY))
    auth, provider = driver.make(KEY)
    auth.cache.get()
    provider.value = NEXT
    assert driver.request(auth, hostile_server.url + "/v1" + PATH).status == 200
    assert provider.fetches == 2
    assert len(hostile_server.hits) == 2


def test_a_large_401_is_handed_back_whole(hostile_server: HostileServer, driver: Driver) -> None:
    body = b'{"statusCode": 401, "code": "invalid_api_key", "pad": "' + b"x" * 200_000 + b'"}'
    head = (
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    hostile_server.route("/v1" + PATH, lambda hit: iter([head, chunked]))
    auth, provider = driver.make(KEY)
    # What was read (64 KiB) is put back in front of the rest: the user reads it all.
    assert driver.request(auth, hostile_server.url + "/v1" + PATH)[:2] == (401, body)
    assert provider.fetches == 1


# ============================================================================ redirects


def test_the_key_never_follows_a_redirect_to_another_origin(
    hostile_server: HostileServer, driver: Driver
) -> None:
    # The second origin answers like the API rejecting a key: it never got the key, so
    # its 401 is returned untouched, with no refresh and no resend. There and back: the
    # key does not come back either.
    with HostileServer() as second:
        origin = hostile_server.url
        second.route("/v1" + PATH, HostileServer.json(401, REJECTION))
        second.route("/v1/bounce", HostileServer.redirect(origin + "/v1" + PATH))
        hostile_server.route("/v1/redirect", HostileServer.redirect(second.url + "/v1" + PATH))
        hostile_server.route("/v1/back", HostileServer.redirect(second.url + "/v1/bounce"))
        hostile_server.route("/v1" + PATH, HostileServer.json(401, REJECTION))
        auth, provider = driver.make(KEY)
        auth.cache.get()
        provider.value = NEXT  # a refetch would resend with this
        assert driver.request(auth, origin + "/v1/redirect")[0::2] == (401, 1)
        assert driver.request(auth, origin + "/v1/back")[0::2] == (401, 2)
        assert provider.fetches == 1
        keyed = [hit.path for hit in hostile_server.hits if "authorization" in hit.headers]
        assert keyed == ["/v1/redirect", "/v1/back"]
        assert all("authorization" not in hit.headers for hit in second.hits)
        assert_no_secret(KEY, second.received.decode("latin-1"))


def test_the_key_never_follows_a_protocol_relative_redirect(
    hostile_server: HostileServer, driver: Driver
) -> None:
    # Location: //host:port/path names another origin with the current scheme: the
    # clients follow it there, and the key stays behind.
    with HostileServer() as second:
        second.route("/v1" + PATH, HostileServer.json(401, REJECTION))
        relative = f"//127.0.0.1:{second.port}/v1{PATH}"
        hostile_server.route("/v1/redirect", HostileServer.redirect(relative))
        auth, provider = driver.make(KEY)
        auth.cache.get()
        provider.value = NEXT  # a refetch would resend with this
        status, _, redirects = driver.request(auth, hostile_server.url + "/v1/redirect")
        # Counted first, never shown: a hit that carried the key would print it.
        received = second.received.decode("latin-1")
        keyed = sum("authorization" in hit.headers for hit in second.hits)
        assert_no_secret(KEY, received)
        assert_no_secret(NEXT, received)
        assert keyed == 0
        assert (status, redirects) == (401, 1)
        assert provider.fetches == 1
        assert (len(second.hits), len(hostile_server.hits)) == (1, 1)


def test_a_401_after_a_same_origin_redirect_is_a_rejection(
    hostile_server: HostileServer, driver: Driver
) -> None:
    # httpx resends the request from its first hop, requests and aiohttp the hop that
    # got the 401: either way the key went there, and the answer ends 200.
    hostile_server.route("/v1/elsewhere", HostileServer.redirect("/v1" + PATH))
    hostile_server.route("/v1" + PATH, rejects(KEY))
    auth, provider = driver.make(KEY)
    auth.cache.get()
    provider.value = NEXT
    assert driver.request(auth, hostile_server.url + "/v1/elsewhere").status == 200
    assert provider.fetches == 2
    last = hostile_server.hits[-1]
    assert_equal_masked(
        (last.path, last.headers["authorization"]), ("/v1" + PATH, "Bearer " + NEXT)
    )


# ============================================================================ under load


def requests_client(auth: ScalingRequestsAuth) -> ClientFactory:
    @contextlib.contextmanager
    def open_client(base_url: str) -> Iterator[Callable[[str], tuple[int, int]]]:
        with requests.Session() as session:
            session.auth = auth

            def send(path: str) -> tuple[int, int]:
                response = session.get(base_url + path, timeout=30)
                return response.status_code, len(response.history)

            yield send

    return open_client


def aiohttp_client(middleware: ScalingMiddleware) -> AsyncClientFactory:
    @contextlib.asynccontextmanager
    async def open_client(
        base_url: str,
    ) -> AsyncIterator[Callable[[str], Awaitable[tuple[int, int]]]]:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:

            async def send(path: str) -> tuple[int, int]:
                async with session.get(base_url + path) as response:
                    await response.read()
                    return response.status, len(response.history)

            yield send

    return open_client


@pytest.mark.parametrize("load", ["requests, 8 threads", "aiohttp, 200 tasks"])
def test_rotation_under_load_with_default_settings(api: FakeScalingAPI, load: str) -> None:
    keys = [api.issue_key()]
    provider = MemoryProvider(keys[0])

    def rotate(_: int) -> None:
        keys.append(rotate_and_revoke(api, lambda key: setattr(provider, "value", key), keys[-1]))

    if load.startswith("requests"):
        auth: KeyAuthBase = ScalingRequestsAuth(provider)  # the default KeyCache settings
        run = run_rotation_threads(api, None, rotate, client=requests_client(auth), threads=8)
        assert run.retried >= 3  # the resent requests, each with its 401 in its history
    else:
        auth = ScalingMiddleware(provider)
        run = run_rotation_tasks(api, None, rotate, client=aiohttp_client(auth), tasks=200)
        assert len(run.statuses) == 200 * 4
    assert run.failed == 0, f"{run.failed} failed requests"
    assert (auth.cache.stats.fetches, auth.cache.stats.forced_fetches) == (4, 3)
    assert sum(1 for r in api.requests if r.status == 401) >= 3  # each resent, none failed


def test_one_cache_three_clients_one_rotation_one_forced_fetch(api: FakeScalingAPI) -> None:
    # httpx, requests and aiohttp clients in one process share one KeyCache; all three
    # meet the revoked key together, and the rotation costs one forced fetch.
    old = api.issue_key()
    provider = MemoryProvider(old)
    cache = KeyCache(provider)  # the library's defaults
    auths: dict[str, KeyAuthBase] = {d.name: d.auth(cache) for d in DRIVERS}
    warmed = threading.Barrier(len(DRIVERS) + 1, timeout=60)
    rotated = threading.Barrier(len(DRIVERS) + 1, timeout=60)
    statuses: dict[str, list[int]] = {d.name: [] for d in DRIVERS}
    errors: list[BaseException] = []

    def rounds(each: Driver) -> None:
        try:
            statuses[each.name].append(each.request(auths[each.name], api.url + PATH).status)
            warmed.wait()
            rotated.wait()
            for _ in range(10):
                statuses[each.name].append(each.request(auths[each.name], api.url + PATH).status)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            warmed.abort()
            rotated.abort()

    workers = [threading.Thread(target=rounds, args=(d,), daemon=True) for d in DRIVERS]
    for worker in workers:
        worker.start()
    warmed.wait()
    provider.value = rotate_and_revoke(api, lambda _: None, old)
    rotated.wait()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == [] and not any(worker.is_alive() for worker in workers)
    assert statuses == {d.name: [200] * 11 for d in DRIVERS}
    assert (cache.stats.fetches, cache.stats.forced_fetches) == (2, 1)
    assert provider.fetches == 2
