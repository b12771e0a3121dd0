"""What is particular to ScalingRequestsAuth (the promises shared by every client are in
test_integrations.py): the retried 401 kept in ``history``, the environment's proxies as
requests reads them, file bodies, streaming answers, a dripping 401, and the redirects
on which requests itself would keep the header."""

from __future__ import annotations

import io
import logging

import pytest
import requests

from scaling_credentials import ConfigurationError, KeyCache
from scaling_credentials.integrations.requests import (
    ScalingRequestsAuth,
    _withhold_across_origins,
)
from scaling_credentials.testing import (
    FakeScalingAPI,
    HostileServer,
    MemoryProvider,
    rotate_and_revoke,
)
from scaling_credentials.testing.provider_suite import assert_equal_masked, assert_no_secret

PATH = "/oncall/schedules"
KEY = "scl_live_REQUESTSkey0123456789abcdefXYZ"


def session_with(auth: ScalingRequestsAuth) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    return session


def auth_with(value: str) -> tuple[ScalingRequestsAuth, MemoryProvider]:
    provider = MemoryProvider(value)
    return ScalingRequestsAuth(KeyCache(provider, min_refresh_interval=0)), provider


def test_the_retried_401_stays_in_the_history_and_readable(api: FakeScalingAPI) -> None:
    old = api.issue_key()
    auth, provider = auth_with(old)
    with session_with(auth) as session:
        assert session.get(api.url + PATH).status_code == 200
        provider.value = rotate_and_revoke(api, lambda _: None, old)
        response = session.get(api.url + PATH)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert response.history[0].json()["code"] == "invalid_api_key"
    assert_equal_masked(response.request.headers["Authorization"], "Bearer " + provider.value)


def test_a_one_off_call_works_too(api: FakeScalingAPI) -> None:
    auth, _ = auth_with(api.issue_key())
    assert requests.get(api.url + PATH, auth=auth, timeout=10).status_code == 200


def test_allowed_hosts_receive_the_key() -> None:
    auth = ScalingRequestsAuth(MemoryProvider(KEY), allowed_hosts=["*.example.com"])
    prepared = auth(requests.Request("GET", "https://eu.example.com/v1/x").prepare())
    assert_equal_masked(prepared.headers["Authorization"], "Bearer " + KEY)


# ============================================================================ proxies


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch, hostile_server: HostileServer) -> HostileServer:
    """A recording proxy; the environment's proxy variables cleared first."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    hostile_server.route("/v1" + PATH, HostileServer.reply(502))
    return hostile_server


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


def test_a_file_body_is_not_resent_but_the_key_is_refreshed(
    api: FakeScalingAPI, caplog: pytest.LogCaptureFixture
) -> None:
    old = api.issue_key()
    auth, provider = auth_with(old)
    auth.cache.get()
    new = rotate_and_revoke(api, lambda _: None, old)
    provider.value = new
    with session_with(auth) as session, caplog.at_level(logging.WARNING):
        response = session.post(api.url + PATH, data=io.BytesIO(b'{"name": "Primary"}'))
        assert response.status_code == 401 and response.history == []
        assert session.get(api.url + PATH).status_code == 200  # with the new key
    assert provider.fetches == 2
    assert "cannot be resent" in caplog.text
    assert_no_secret(old, caplog.text)


def test_success_bodies_are_not_read_and_stay_streaming(api: FakeScalingAPI) -> None:
    auth, _ = auth_with(api.issue_key())
    with session_with(auth) as session, session.get(api.url + PATH, stream=True) as response:
        assert response.raw.tell() == 0  # nothing read from the socket yet
        assert response.json()["data"]


def test_a_dripping_401_is_given_up_on(
    hostile_server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # read1 hands over each byte as it comes, so the reader meets its deadline between
    # bytes; the clock is advanced by a second per read instead of waiting.
    import scaling_credentials._api as api_module

    clock = [0.0]
    monkeypatch.setattr(api_module, "_clock", lambda: clock[0])
    original = api_module.ErrorBodyReader.feed

    def feed(self: api_module.ErrorBodyReader, chunk: bytes) -> bool:
        clock[0] += 1.0
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


@pytest.mark.parametrize(
    ("start", "location", "kept"),
    [
        ("https://api.scaling.cloud/v1/a", "/v1/b", True),
        ("https://api.scaling.cloud/v1/a", "https://api.scaling.cloud:443/v1/b", True),
        ("https://api.scaling.cloud/v1/a", "//api.scaling.cloud/v1/b", True),
        # requests itself keeps the header on the first of these; the auth does not
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
    prepared = requests.Request("GET", start, headers={"Authorization": "Bearer " + KEY}).prepare()
    response = requests.Response()
    response.status_code = 307
    response.url = start
    response.headers["Location"] = location
    _withhold_across_origins(response, prepared)
    assert ("Authorization" in prepared.headers) is kept
