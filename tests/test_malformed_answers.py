"""Malformed and unexpected Scaling API answers, over real sockets: 401s that are HTML,
empty, invalid JSON, huge (with and without Content-Length), of the wrong types or with
unknown codes, and other statuses from proxies, through httpx.Client and (``kind``)
httpx.AsyncClient. ScalingAuth must not crash, must not retry (let alone loop), must not
refresh the key, and must return the response as is.

FakeScalingAPI's ``script()`` serves most bodies; a small raw HTTP server below serves
what FakeScalingAPI cannot (no Content-Length: chunked or close-delimited, a stalled body).
"""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from scaling_credentials import KeyCache, ScalingAPIError, ScalingAuth, raise_for_scaling_error
from scaling_credentials.testing import FakeClock, FakeScalingAPI, MemoryProvider, ScriptedResponse

PATH = "/oncall/schedules"
MIB = 1024 * 1024


def doc(**fields: object) -> bytes:
    return json.dumps(fields).encode()


REJECTION = doc(
    statusCode=401, type="not_authorized_error", code="invalid_api_key", requestId="r-1"
)

# 401 bodies that are not the documented "invalid_api_key" answer: a plain 401.
MALFORMED_401: dict[str, tuple[bytes, str]] = {
    "html": (
        b"<html><head><title>401 Authorization Required</title></head>"
        b"<body><h1>401 Authorization Required</h1><hr>nginx</body></html>",
        "text/html",
    ),
    "empty": (b"", "application/json"),
    "whitespace": (b" \r\n\t ", "application/json"),
    "invalid-json": (b'{"statusCode": 401, "code": "invalid_api_key"', "application/json"),
    "not-utf8": (b'{"code": "invalid_api_key\xff\xfe"}', "application/json"),
    "json-string": (b'"invalid_api_key"', "application/json"),
    "json-list": (b'["invalid_api_key"]', "application/json"),
    "json-number": (b"401", "application/json"),
    "json-null": (b"null", "application/json"),
    "code-number": (doc(statusCode=401, code=401), "application/json"),
    "code-null": (doc(statusCode=401, code=None), "application/json"),
    "code-list": (doc(statusCode=401, code=["invalid_api_key"]), "application/json"),
    "code-object": (doc(statusCode=401, code={"value": "invalid_api_key"}), "application/json"),
    "code-case": (doc(statusCode=401, code="INVALID_API_KEY"), "application/json"),
    "code-padded": (doc(statusCode=401, code=" invalid_api_key "), "application/json"),
    "code-huge": (doc(statusCode=401, code="invalid_api_key" + "x" * 10_000), "application/json"),
    "unknown-code": (
        doc(statusCode=401, type="not_authorized_error", code="key_paused"),
        "application/json",
    ),
    "not_authorized": (
        doc(statusCode=401, type="not_authorized_error", code="not_authorized"),
        "application/json",
    ),
    "missing-header": (
        doc(statusCode=401, type="not_authorized_error", code="missing_authorization_header"),
        "application/json",
    ),
    "type-only": (doc(statusCode=401, type="not_authorized_error"), "application/json"),
    "nested-code": (doc(error={"code": "invalid_api_key"}), "application/json"),
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    "huge-with-length": (
        REJECTION[:-1] + b', "padding": "' + b"x" * (2 * MIB) + b'"}',
        "application/json",
    ),
}


def make_auth(value: str) -> tuple[ScalingAuth, MemoryProvider]:
    provider = MemoryProvider(value)
    cache = KeyCache(provider, clock=FakeClock(), min_refresh_interval=0)
    return ScalingAuth(cache), provider


CLIENTS = ["sync", "async"]


@dataclass(frozen=True)
class Answer:
    """What a client returned, kept after the client is closed."""

    status: int
    content: bytes
    history: tuple[int, ...]
    unread: bool  # a streaming response the auth left unread

    @classmethod
    def of(cls, response: httpx.Response, *, unread: bool) -> Answer:
        history = tuple(r.status_code for r in response.history)
        content = response.content if response.is_stream_consumed else b""
        return cls(response.status_code, content, history, unread)


def get(
    kind: str, base_url: str, auth: ScalingAuth, *, stream: bool = False, read: bool = True
) -> Answer:
    """One GET of PATH through an ``httpx.Client`` or an ``httpx.AsyncClient``; with
    ``stream``, a streaming request whose body the caller reads (unless not ``read``) once
    the auth is done with it."""
    timeout = httpx.Timeout(30.0, read=2.0)
    if kind == "sync":
        with httpx.Client(base_url=base_url, auth=auth, timeout=timeout) as client:
            if not stream:
                return Answer.of(client.get(PATH), unread=False)
            with client.stream("GET", PATH) as response:
                unread = not response.is_stream_consumed
                if read:
                    response.read()
                return Answer.of(response, unread=unread)

    async def scenario() -> Answer:
        async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=timeout) as client:
            if not stream:
                return Answer.of(await client.get(PATH), unread=False)
            async with client.stream("GET", PATH) as response:
                unread = not response.is_stream_consumed
                if read:
                    await response.aread()
                return Answer.of(response, unread=unread)

    return asyncio.run(scenario())


@pytest.mark.parametrize("case", sorted(MALFORMED_401))
def test_malformed_401_is_returned_as_is_without_retry_or_refresh(
    api: FakeScalingAPI, case: str
) -> None:
    body, content_type = MALFORMED_401[case]
    key = api.issue_key()
    auth, provider = make_auth(key)
    api.script(ScriptedResponse(401, body, content_type=content_type))
    with httpx.Client(base_url=api.url, auth=auth) as client:
        response = client.get(PATH)
        assert response.status_code == 401
        assert response.content == body
        assert response.headers["content-type"] == content_type
        assert response.history == []
        assert provider.fetches == 1  # the first fetch only: no refresh
        assert len(api.requests) == 1  # sent once
        # The client is not wedged: the next request works.
        assert client.get(PATH).status_code == 200
    with pytest.raises(ScalingAPIError) as info:
        raise_for_scaling_error(response)
    assert info.value.status_code == 401
    assert info.value.code != "invalid_api_key"


@pytest.mark.parametrize("case", ["html", "invalid-json", "huge-with-length", "deeply-nested"])
def test_malformed_401_under_the_async_client(api: FakeScalingAPI, case: str) -> None:
    body, content_type = MALFORMED_401[case]
    auth, provider = make_auth(api.issue_key())
    api.script(ScriptedResponse(401, body, content_type=content_type))
    answer = get("async", api.url, auth)
    assert (answer.status, answer.content, answer.history) == (401, body, ())
    assert provider.fetches == 1 and len(api.requests) == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_real_rejection_with_nothing_new_in_the_source_is_sent_once(
    api: FakeScalingAPI, kind: str
) -> None:
    """The documented answer, but the source still holds the same key: one forced fetch,
    no resend, the 401 returned."""
    auth, provider = make_auth(api.issue_key())
    api.script(ScriptedResponse(401, REJECTION))
    answer = get(kind, api.url, auth)
    assert (answer.status, answer.content, answer.history) == (401, REJECTION, ())
    assert provider.fetches == 2 and len(api.requests) == 1


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("retry_answer", ["html", "empty", "huge-with-length"])
def test_a_malformed_answer_to_the_retry_ends_the_request(
    api: FakeScalingAPI, retry_answer: str, kind: str
) -> None:
    old = api.issue_key()
    auth, provider = make_auth(old)
    auth.cache.get()  # the old key is cached
    provider.value = api.rotate()
    body, content_type = MALFORMED_401[retry_answer]
    api.script(
        ScriptedResponse(401, REJECTION), ScriptedResponse(401, body, content_type=content_type)
    )
    answer = get(kind, api.url, auth)
    assert (answer.status, answer.content, answer.history) == (401, body, (401,))
    assert len(api.requests) == 2  # one retry, never more
    assert provider.fetches == 2


# ---------------------------------------------------------------------------- other statuses

OTHER: dict[str, tuple[int, bytes, str]] = {
    "502-html-proxy": (
        502,
        b"<html><body><h1>502 Bad Gateway</h1><hr>cloudflare</body></html>",
        "text/html",
    ),
    "503-text": (503, b"upstream connect error or disconnect/reset before headers", "text/plain"),
    "504-empty": (504, b"", "text/html"),
    "500-documented": (
        500,
        doc(statusCode=500, type="internal_error", code="internal", requestId="r-2"),
        "application/json",
    ),
    "403-invalid-api-key": (
        403,
        doc(statusCode=403, type="not_authorized_error", code="invalid_api_key"),
        "application/json",
    ),
    "429-throttled": (429, doc(message="Too Many Requests"), "application/json"),
    "200-invalid-api-key": (200, REJECTION, "application/json"),
    "200-garbage": (200, b"\x00\x01not json at all", "application/octet-stream"),
    "407-proxy-auth": (407, b"<html>Proxy Authentication Required</html>", "text/html"),
}


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("case", sorted(OTHER))
def test_other_statuses_are_returned_unread_and_untouched(
    api: FakeScalingAPI, case: str, kind: str
) -> None:
    status, body, content_type = OTHER[case]
    auth, provider = make_auth(api.issue_key())
    api.script(ScriptedResponse(status, body, content_type=content_type))
    answer = get(kind, api.url, auth, stream=True)
    assert (answer.status, answer.unread, answer.content) == (status, True, body)
    assert provider.fetches == 1 and len(api.requests) == 1


# ---------------------------------------------------------------------------- no Content-Length


class RawServer:
    """A one-request-per-connection HTTP server on 127.0.0.1 that answers with raw bytes
    (no Content-Length, chunked or close-delimited, or a body that stalls)."""

    def __init__(self, answer: Callable[[], Iterable[bytes]]) -> None:
        self.answer = answer
        self.requests = 0
        self.release = threading.Event()  # ends a stalled answer
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                with lock:
                    owner.requests += 1
                try:
                    for part in owner.answer():
                        if part == b"":  # a stall marker
                            owner.release.wait(30)
                            return
                        sock.sendall(part)
                except OSError:
                    pass  # the client went away

        lock = threading.Lock()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[], Iterable[bytes]]], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Callable[[], Iterable[bytes]]) -> RawServer:
        server = RawServer(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def chunked_401(total: int, *, stall_after: int | None = None) -> Callable[[], Iterator[bytes]]:
    def answer() -> Iterator[bytes]:
        yield (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        sent = 0
        piece = REJECTION[:-1] + b', "padding": "'
        while sent < total:
            if stall_after is not None and sent >= stall_after:
                yield b""  # stall, connection open
                return
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
            sent += len(piece)
            piece = b"x" * 65536
        yield b"0\r\n\r\n"

    return answer


def close_delimited(status: int, reason: bytes, body: bytes) -> Callable[[], Iterator[bytes]]:
    def answer() -> Iterator[bytes]:
        yield b"HTTP/1.1 %d %s\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n" % (
            status,
            reason,
        )
        yield body

    return answer


@pytest.mark.parametrize("kind", CLIENTS)
def test_huge_chunked_401_is_returned_as_is(raw: Callable[..., RawServer], kind: str) -> None:
    server = raw(chunked_401(8 * MIB))
    auth, provider = make_auth("scl_live_chunkedchunked0123456789")
    answer = get(kind, server.url, auth)
    assert answer.status == 401
    assert len(answer.content) >= 8 * MIB
    assert answer.content.startswith(REJECTION[:-1])
    assert provider.fetches == 1 and server.requests == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_huge_close_delimited_401_is_returned_as_is(
    raw: Callable[..., RawServer], kind: str
) -> None:
    body = b"<html>" + b"denied " * (MIB // 2) + b"</html>"
    server = raw(close_delimited(401, b"Unauthorized", body))
    auth, provider = make_auth("scl_live_closeclose0123456789abc")
    answer = get(kind, server.url, auth)
    assert (answer.status, answer.content) == (401, body)
    assert provider.fetches == 1 and server.requests == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_proxy_5xx_without_length_stays_streaming(raw: Callable[..., RawServer], kind: str) -> None:
    body = b"<html><h1>503 Service Unavailable</h1></html>"
    server = raw(close_delimited(503, b"Service Unavailable", body))
    auth, provider = make_auth("scl_live_proxyproxy0123456789abc")
    answer = get(kind, server.url, auth, stream=True)
    assert (answer.status, answer.unread, answer.content) == (503, True, body)
    assert provider.fetches == 1 and server.requests == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_stalled_chunked_401_does_not_hold_a_streaming_request(
    raw: Callable[..., RawServer], kind: str
) -> None:
    # 1 MiB of body arrives at once, then nothing: far more than any error body, so the
    # auth has all it needs to decide "not a rejection" without waiting for the rest.
    server = raw(chunked_401(8 * MIB, stall_after=MIB))
    auth, provider = make_auth("scl_live_stalledstalled0123456789")
    answer = get(kind, server.url, auth, stream=True, read=False)
    assert (answer.status, answer.unread) == (401, True)
    assert provider.fetches == 1 and server.requests == 1
