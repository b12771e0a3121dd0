"""Redirects never carry Vault credentials to another origin.

requests follows a 307 with its method, body and headers: left alone, a Vault address
that answers ``307 Location: http://elsewhere/`` would receive the ``X-Vault-Token``
header, an AppRole ``role_id``/``secret_id`` or a service-account JWT at ``elsewhere``,
including after a silent https -> http downgrade.

Here the configured Vault address is a hostile server on 127.0.0.1 that answers 307 to
a second local server (another port, so another origin) which records every byte it
receives; the tests assert on those bytes. A same-origin redirect (a standby sending
the client to the active node on the same host and port) still works, against a real
OpenBao behind a redirecting proxy.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hvac
import pytest

from scaling_credentials import ProviderError
from scaling_credentials.testing import FakeClock
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret, good_value
from scaling_credentials_vault import (
    AppRoleAuth,
    JWTAuth,
    KubernetesAuth,
    TokenAuth,
    VaultAuth,
    VaultProvider,
)
from scaling_credentials_vault._redirects import origin_of

TOKEN = "hvs.CAESIRedirectTestVaultToken0123456789"
ISSUED_TOKEN = "hvs.CAESIIssuedByTheHostileLogin987654321"
ROLE_ID = "role-id-3f1c7a52-98b2-4b71-a1c0-redirect"
SECRET_ID = "secret-id-5a0e9d3c-7b44-4f8e-9d2a-redirect"
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJlZGlyZWN0In0."
    "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cGF5bWVudHM6YXBwIn0."
    "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWF2ZS10aGUtcG9k"
)
KEY = good_value("redirect")
IO_TIMEOUT = 10.0


# ---------------------------------------------------------------------------- servers


class Recorder:
    """A TCP server on 127.0.0.1 that records every byte it receives and answers each
    request with a 500 (so that a client that got here does not hang)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def received(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._workers.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
                self._record(chunk)
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
                self._record(chunk)
            answer = b'{"errors":["recorded"]}'
            conn.sendall(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )
        except OSError:
            return
        finally:
            conn.close()

    def _record(self, chunk: bytes) -> None:
        with self._lock:
            self._chunks.append(chunk)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=IO_TIMEOUT)
        self._listener.close()
        for worker in self._workers:
            worker.join(timeout=IO_TIMEOUT)


@dataclass
class Answer:
    status: int
    payload: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_answer(status: int, document: dict[str, Any], location: str | None = None) -> Answer:
    headers = [("Content-Type", "application/json")]
    if location is not None:
        headers.append(("Location", location))
    return Answer(status, json.dumps(document).encode(), headers)


Route = Callable[[str, str, dict[str, str], bytes], Answer]


class LocalServer:
    """An HTTP(S) server on 127.0.0.1 whose answers come from
    ``route(method, path, headers, body)``; records the requests' methods and paths."""

    def __init__(self, route: Route, tls: ssl.SSLContext | None = None) -> None:
        self.route = route
        self.seen: list[tuple[str, str]] = []
        local = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                local.seen.append((self.command, self.path))
                answer = local.route(self.command, self.path, dict(self.headers.items()), body)
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.payload)))
                self.end_headers()
                self.wfile.write(answer.payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=IO_TIMEOUT)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.stop()


@pytest.fixture
def serve() -> Iterator[Callable[..., LocalServer]]:
    """``serve(route, tls=None)`` starts a :class:`LocalServer`, stopped at the end."""
    started: list[LocalServer] = []

    def start(route: Route, tls: ssl.SSLContext | None = None) -> LocalServer:
        started.append(LocalServer(route, tls))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def lookup_self_answer() -> Answer:
    return json_answer(200, {"data": {"ttl": 0, "renewable": False, "policies": ["default"]}})


def login_answer(ttl: int = 0, renewable: bool = False) -> Answer:
    return json_answer(
        200,
        {
            "auth": {
                "client_token": ISSUED_TOKEN,
                "lease_duration": ttl,
                "renewable": renewable,
                "policies": ["default"],
            }
        },
    )


def kv_answer() -> Answer:
    return json_answer(200, {"data": {"data": {"api_key": KEY}, "metadata": {"version": 3}}})


def hostile_vault(target: str, redirected: Callable[[str], bool]) -> Route:
    """Answer like Vault, except that paths for which ``redirected(path)`` holds get a
    307 to ``target`` (the same path there)."""

    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if redirected(path):
            return json_answer(307, {}, location=target + path)
        if path == "/v1/auth/token/lookup-self":
            return lookup_self_answer()
        if path.startswith("/v1/auth/") and path.endswith("/login"):
            return login_answer()
        if path.startswith("/v1/secret/data/"):
            return kv_answer()
        return json_answer(404, {"errors": []})

    return route


def refused(provider: VaultProvider, recorder: Recorder, *secrets: str) -> ProviderError:
    """Fetch, expect the refusal, and check what crossed to the other origin and what
    the error says."""
    with pytest.raises(ProviderError) as info:
        provider.fetch()
    error = info.value
    received = recorder.received
    # Which credentials crossed, by position: a failure never prints them.
    crossed = [index for index, secret in enumerate(secrets) if secret.encode() in received]
    assert crossed == [], "credentials reached the other origin"
    assert len(received) == 0, "the provider sent a request to the other origin"
    rendered = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    for secret in secrets:
        assert_no_secret(secret, rendered, repr(vars(error.__cause__)))
    assert recorder.origin in str(error), str(error)
    assert "redirect" in str(error)
    return error


# ---------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    "redirected_path",
    ["/v1/auth/token/lookup-self", "/v1/secret/data/scaling/api"],
    ids=["login-lookup-self", "kv-read"],
)
def test_token_is_not_sent_to_another_origin(
    redirected_path: str,
    recorder: Recorder,
    serve: Callable[..., LocalServer],
    vault_env: pytest.MonkeyPatch,
) -> None:
    vault = serve(hostile_vault(recorder.origin, lambda path: path == redirected_path))
    provider = VaultProvider("scaling/api", url=vault.url, auth=TokenAuth(TOKEN))
    refused(provider, recorder, TOKEN)
    assert (("GET", redirected_path)) in vault.seen


def test_the_error_names_the_origin_only_never_the_location_path(
    recorder: Recorder, serve: Callable[..., LocalServer], vault_env: pytest.MonkeyPatch
) -> None:
    # A hostile Location may echo what it received; the message names scheme, host, port.
    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/v1/auth/token/lookup-self":
            return lookup_self_answer()
        return json_answer(307, {}, location=f"{recorder.origin}/steal?token={TOKEN}&key={KEY}")

    vault = serve(route)
    provider = VaultProvider("scaling/api", url=vault.url, auth=TokenAuth(TOKEN))
    error = refused(provider, recorder, TOKEN, KEY)
    assert "/steal" not in str(error)


def test_a_callers_client_is_guarded_too_and_left_unchanged(
    recorder: Recorder, serve: Callable[..., LocalServer], vault_env: pytest.MonkeyPatch
) -> None:
    vault = serve(hostile_vault(recorder.origin, lambda path: path.startswith("/v1/secret/")))
    client = hvac.Client(url=vault.url, token=TOKEN)
    hooks_before = {name: list(hooks) for name, hooks in client.session.hooks.items()}
    provider = VaultProvider("scaling/api", client=client)
    refused(provider, recorder, TOKEN)
    assert client.session.hooks == hooks_before
    assert client.token == TOKEN


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://vault.example.com:8200/v1/x", ("https", "vault.example.com", 8200)),
        ("https://VAULT.example.com/v1/x", ("https", "vault.example.com", 443)),
        ("http://vault.example.com/v1/x?y=1", ("http", "vault.example.com", 80)),
        ("http://user:pw@127.0.0.1:8200/", ("http", "127.0.0.1", 8200)),
        ("https://[::1]:8200/v1/x", ("https", "::1", 8200)),
        ("ftp://vault.example.com/x", None),
        ("/v1/relative", None),
        ("http://vault.example.com:99999/", None),
        ("http://[::1/", None),
    ],
)
def test_origin_of(url: str, origin: tuple[str, str, int] | None) -> None:
    assert origin_of(url) == origin


def test_scheme_or_port_change_is_another_origin() -> None:
    home = origin_of("https://vault.example.com:8200")
    assert origin_of("https://vault.example.com:8200/v1/other") == home
    assert origin_of("HTTPS://Vault.Example.com:8200/") == home
    assert origin_of("http://vault.example.com:8200/v1/x") != home  # downgrade
    assert origin_of("https://vault.example.com:8201/v1/x") != home
    assert origin_of("https://vault.example.com/v1/x") != home  # 443, not 8200
    assert origin_of("https://standby.example.com:8200/v1/x") != home


# ---------------------------------------------------------------------------- logins


@pytest.mark.parametrize("method", ["approle", "kubernetes", "jwt"])
def test_login_credentials_are_not_reposted_to_another_origin(
    method: str,
    recorder: Recorder,
    serve: Callable[..., LocalServer],
    vault_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    jwt_file = tmp_path / "token"
    jwt_file.write_text(JWT)
    auth: VaultAuth
    if method == "approle":
        auth, secrets = AppRoleAuth(ROLE_ID, SECRET_ID), (ROLE_ID, SECRET_ID)
    elif method == "kubernetes":
        auth, secrets = KubernetesAuth("app", jwt_path=jwt_file), (JWT,)
    else:
        auth, secrets = JWTAuth("app", jwt_file), (JWT,)
    login_path = f"/v1/auth/{method}/login"
    vault = serve(hostile_vault(recorder.origin, lambda path: path == login_path))
    provider = VaultProvider("scaling/api", url=vault.url, auth=auth)
    refused(provider, recorder, *secrets, *JWT.split("."))
    assert vault.seen == [("POST", login_path)]


def test_renewal_does_not_send_the_token_to_another_origin(
    recorder: Recorder, serve: Callable[..., LocalServer], vault_env: pytest.MonkeyPatch
) -> None:
    renew = "/v1/auth/token/renew-self"

    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/v1/auth/approle/login":
            return login_answer(ttl=30, renewable=True)
        return hostile_vault(recorder.origin, lambda p: p == renew)(method, path, headers, body)

    vault = serve(route)
    clock = FakeClock()
    provider = VaultProvider(
        "scaling/api", url=vault.url, auth=AppRoleAuth(ROLE_ID, SECRET_ID), clock=clock
    )
    assert_key_is(provider.fetch(), KEY)
    clock.advance(25)  # past two thirds of the 30 s TTL: renew-self is due
    refused(provider, recorder, ISSUED_TOKEN, ROLE_ID, SECRET_ID)
    assert ("POST", renew) in vault.seen


# ---------------------------------------------------------------------------- https -> http


def test_https_to_http_downgrade_is_refused(
    recorder: Recorder,
    serve: Callable[..., LocalServer],
    vault_env: pytest.MonkeyPatch,
    self_signed: Any,
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(self_signed.cert_file, self_signed.key_file)
    login_path = "/v1/auth/approle/login"
    vault = serve(hostile_vault(recorder.origin, lambda path: path == login_path), tls=context)
    assert vault.url.startswith("https://")
    provider = VaultProvider(
        "scaling/api",
        url=vault.url,
        auth=AppRoleAuth(ROLE_ID, SECRET_ID),
        verify=str(self_signed.cert_file),
    )
    refused(provider, recorder, ROLE_ID, SECRET_ID)


# ---------------------------------------------------------------------------- same origin


def redirecting_proxy(upstream: str, origin: Callable[[], str]) -> Route:
    """A reverse proxy in front of a real OpenBao that answers the first request for each
    path with a 307 to ``/active`` + the path on its own ``origin()`` (as a standby points
    to the active node), alternating absolute and relative Locations, and forwards
    requests under ``/active`` to ``upstream``."""
    target = urlsplit(upstream)
    redirects = 0

    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        nonlocal redirects
        if not path.startswith("/active/"):
            redirects += 1
            location = "/active" + path
            return Answer(
                307, headers=[("Location", (origin() if redirects % 2 else "") + location)]
            )
        forwarded = {k: v for k, v in headers.items() if k.lower() != "host"}
        connection = http.client.HTTPConnection(
            str(target.hostname), target.port, timeout=IO_TIMEOUT
        )
        try:
            connection.request(method, path[len("/active") :], body=body, headers=forwarded)
            answer = connection.getresponse()
            payload = answer.read()
        finally:
            connection.close()
        skipped = ("content-length", "connection", "transfer-encoding")
        kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in skipped]
        return Answer(answer.status, payload, kept)

    return route


def test_same_origin_redirect_is_followed(
    bao: Any,
    secret_path: str,
    write_kv2: Callable[..., int],
    serve: Callable[..., LocalServer],
    vault_env: pytest.MonkeyPatch,
) -> None:
    version = write_kv2(secret_path, {"api_key": KEY})
    proxy = serve(redirecting_proxy(bao.url, lambda: proxy.url))
    provider = VaultProvider(secret_path, url=proxy.url, auth=TokenAuth(bao.root_token))
    key = provider.fetch()
    assert_key_is(key, KEY)
    assert key.version == str(version)
    # The login's lookup-self and the read, each redirected once, then served.
    assert [path for _, path in proxy.seen] == [
        "/v1/auth/token/lookup-self",
        "/active/v1/auth/token/lookup-self",
        f"/v1/secret/data/{secret_path}",
        f"/active/v1/secret/data/{secret_path}",
    ]


def test_a_callers_session_hooks_still_run(
    bao: Any,
    secret_path: str,
    write_kv2: Callable[..., int],
    vault_env: pytest.MonkeyPatch,
) -> None:
    # The redirect check is a per-request hook; requests would let it replace the
    # session's own response hooks, so it is chained with them instead.
    write_kv2(secret_path, {"api_key": KEY})
    client = hvac.Client(url=bao.url, token=bao.root_token)
    seen: list[str] = []
    client.session.hooks["response"].append(lambda response, **_: seen.append(response.url))
    provider = VaultProvider(secret_path, client=client)
    assert_key_is(provider.fetch(), KEY)
    paths = [urlsplit(url).path for url in seen]
    assert paths == ["/v1/auth/token/lookup-self", f"/v1/secret/data/{secret_path}"]
