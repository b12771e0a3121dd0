"""Fixtures for the AWS provider tests: a moto server over real HTTP, fake credentials,
a scripted Secrets Manager endpoint for errors moto cannot produce, and a local stand-in
for the AWS Parameters and Secrets Lambda Extension."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from scaling_credentials.testing import free_port, wait_for_port

REGION = "us-east-1"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEFakeSessionToken/for+the+extension=="
DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens there

_AWS_VARIABLES_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_SSM",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_LAMBDA_FUNCTION_NAME",
    "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region only; no shared config, no instance metadata (so the
    credential chain never leaves loopback)."""
    for name in _AWS_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # A safety net: any client left on AWS's default endpoint talks to a closed loopback
    # port instead of the internet. Tests that use moto set the service's own variable.
    monkeypatch.setenv("AWS_ENDPOINT_URL", DEAD_ENDPOINT)


@pytest.fixture(scope="session")
def boto_session() -> boto3.session.Session:
    """A boto3 session with fake credentials, shared so tests do not each pay for one."""
    return boto3.session.Session(region_name=REGION, **FAKE_CREDENTIALS)


@pytest.fixture(scope="session")
def sm(moto_endpoint: str, boto_session: boto3.session.Session) -> Any:
    """A secretsmanager client on the moto server, for arranging secrets."""
    return boto_session.client("secretsmanager", endpoint_url=moto_endpoint)


@pytest.fixture
def secret_name(sm: Any) -> Iterator[str]:
    """A unique secret name, force-deleted after the test."""
    name = f"scaling/{uuid.uuid4().hex[:12]}"
    yield name
    try:
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    except ClientError:
        pass


@pytest.fixture(scope="session")
def ssm(moto_endpoint: str, boto_session: boto3.session.Session) -> Any:
    """An ssm client on the moto server, for arranging parameters."""
    return boto_session.client("ssm", endpoint_url=moto_endpoint)


@pytest.fixture
def parameter_name(ssm: Any) -> Iterator[str]:
    """A unique parameter name, deleted after the test."""
    name = f"/scaling/{uuid.uuid4().hex[:12]}/api-key"
    yield name
    try:
        ssm.delete_parameter(Name=name)
    except ClientError:
        pass


@pytest.fixture
def secrets_manager(moto_endpoint: str, boto_session: boto3.session.Session) -> Callable[..., Any]:
    """``secrets_manager(secret_id, **options)``: a SecretsManagerProvider on moto."""
    from scaling_credentials_aws import SecretsManagerProvider

    def build(name: str, **options: Any) -> SecretsManagerProvider:
        options.setdefault("session", boto_session)
        return SecretsManagerProvider(name, endpoint_url=moto_endpoint, **options)

    return build


@pytest.fixture
def parameter_store(moto_endpoint: str, boto_session: boto3.session.Session) -> Callable[..., Any]:
    """``parameter_store(name, **options)``: a ParameterStoreProvider on moto."""
    from scaling_credentials_aws import ParameterStoreProvider

    def build(name: str, **options: Any) -> ParameterStoreProvider:
        options.setdefault("session", boto_session)
        return ParameterStoreProvider(name, endpoint_url=moto_endpoint, **options)

    return build


def put_secret(sm: Any, name: str, **value: Any) -> str:
    """Create ``name`` or add a version (moving AWSCURRENT); return the VersionId."""
    try:
        return str(sm.put_secret_value(SecretId=name, **value)["VersionId"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        return str(sm.create_secret(Name=name, **value)["VersionId"])


@pytest.fixture
def put() -> Callable[..., str]:
    """``put(sm, name, SecretString=...)``: see :func:`put_secret`."""
    return put_secret


# ---------------------------------------------------------------------- a dedicated moto


@dataclass
class MotoProcess:
    """A ``moto_server`` subprocess of our own, stopped by its pid."""

    process: subprocess.Popen[bytes]
    endpoint: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def moto_process() -> Iterator[MotoProcess]:
    """A dedicated moto server process on a free port (for outages)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    moto = MotoProcess(process, f"http://127.0.0.1:{port}")
    try:
        wait_for_port(port, process=process, what="moto_server")
        yield moto
    finally:
        moto.stop()


# ---------------------------------------------------------------------- a tiny HTTP server


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any


class _Handler(BaseHTTPRequestHandler):
    server: _QuietServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.owner.respond(self, body)
        if callable(payload):  # a behaviour that writes its own answer
            payload(self)
            return
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _handle


class _Serving:
    def __init__(self, port: int = 0) -> None:
        self._server = _QuietServer(("127.0.0.1", port), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes | Behaviour]:
        raise NotImplementedError


# What a scripted answer may be besides (status, body): a function that writes the
# answer itself, byte by byte if it likes.
Behaviour = Callable[[BaseHTTPRequestHandler], None]


class Trickle:
    """A 200 whose body (``size`` bytes announced) comes one byte every ``interval``
    seconds, until it is complete or the client goes away."""

    def __init__(self, size: int = 1000, interval: float = 0.02) -> None:
        self.size, self.interval = size, interval
        self.sent = 0
        self.gone = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(self.size))
        handler.end_headers()
        try:
            for _ in range(self.size):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                self.sent += 1
                if self.gone.wait(self.interval):  # paced by the server, for the client
                    return
        except OSError:
            pass
        handler.close_connection = True


class Endless:
    """A 200 with a chunked body that never ends: 64 KiB chunks until the client stops
    reading (``sent`` counts the bytes that went out)."""

    def __init__(self, limit: int = 1 << 30) -> None:
        self.limit = limit
        self.sent = 0

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        chunk = b"{" * 65536
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            while self.sent < self.limit:
                handler.wfile.write(framed)
                self.sent += len(chunk)
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        handler.close_connection = True


class Hang:
    """Reads the request and never answers (until the server stops)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        self.release.wait(timeout=60)
        handler.close_connection = True


class ScriptedSecretsManager(_Serving):
    """Answers any AWS JSON-protocol request (Secrets Manager's, Systems Manager's) with
    scripted answers (the last one repeats), for error codes moto cannot produce:
    AccessDenied, DecryptionFailure, throttling, internal errors."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        super().__init__()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: tuple[int, dict[str, Any]]) -> None:
        with self._lock:
            self.answers = list(answers)

    def error(self, status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
        return status, {"__type": code, "Message": message}

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        with self._lock:
            self.received.append(json.loads(body or b"{}"))
            status, document = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", "r-1")]
        return status, headers, json.dumps(document).encode()


@pytest.fixture
def scripted_sm() -> Iterator[ScriptedSecretsManager]:
    server = ScriptedSecretsManager()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ExtensionRequest:
    path: str
    params: dict[str, str]
    token: str | None
    status: int


@dataclass
class FakeExtension(_Serving):
    """A stand-in for the AWS Parameters and Secrets Lambda Extension, following its
    documented protocol: ``GET /secretsmanager/get?secretId=&versionId=&versionStage=``,
    the ``X-Aws-Parameters-Secrets-Token`` header (400 when missing, 403 when wrong), a
    GetSecretValue-shaped JSON answer, a TTL cache of its own with no invalidation, and
    "not ready" answers right after a cold start. It reads from moto.

    ``honour_refresh_now`` decides whether ``refreshNow=true`` bypasses its cache (the
    Secrets Manager Agent does; whether the closed-source layer does is undocumented).
    ``scripted`` answers go first: ``(status, body)`` (``{token}`` in the body becomes
    the token the request carried) or a :data:`Behaviour`. A ``hostile`` stand-in echoes
    the token it received in every error answer. ``port_wanted`` 0 picks a free one.
    It serves Parameter Store parameters too (``GET /systemsmanager/parameters/get``),
    read from ``parameters`` (an ssm client).
    """

    backend: Any
    parameters: Any = None
    token: str = SESSION_TOKEN
    honour_refresh_now: bool = True
    not_ready: int = 0
    hostile: bool = False
    port_wanted: int = 0
    scripted: list[tuple[int, bytes] | Behaviour] = field(default_factory=list)
    scripted_done: list[Behaviour] = field(default_factory=list)
    requests: list[ExtensionRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()
        _Serving.__init__(self, self.port_wanted)

    def stop(self) -> None:
        with self._lock:
            behaviours = [*self.scripted, *self.scripted_done]
        for behaviour in behaviours:  # let any answer still being written end
            if isinstance(behaviour, Hang):
                behaviour.release.set()
            elif isinstance(behaviour, Trickle):
                behaviour.gone.set()
        _Serving.stop(self)

    def _record(self, path: str, params: dict[str, str], token: str | None, status: int) -> None:
        with self._lock:
            self.requests.append(ExtensionRequest(path, params, token, status))

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes | Behaviour]:
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query))
        token = handler.headers.get("X-Aws-Parameters-Secrets-Token")
        answer = self._answer(parts.path, params, token)
        if not isinstance(answer, tuple):
            self._record(parts.path, params, token, 0)
            return 0, [], answer
        status, payload = answer
        if token is not None:
            payload = payload.replace(b"{token}", token.encode())
            if self.hostile and status != 200:
                payload = self._echo(payload, token)
        self._record(parts.path, params, token, status)
        content_type = "application/json" if payload.startswith(b"{") else "text/plain"
        return status, [("Content-Type", content_type)], payload

    @staticmethod
    def _echo(payload: bytes, token: str) -> bytes:
        """The error answer with the token put in every text it has."""
        try:
            document = json.loads(payload)
        except ValueError:
            document = None
        if isinstance(document, dict):
            for name in ("__type", "message", "Message"):
                if name in document:
                    document[name] = f"{document[name]} {token}"
            return json.dumps(document).encode()
        return payload + b" (token " + token.encode() + b")"

    def _answer(
        self, path: str, params: dict[str, str], token: str | None
    ) -> tuple[int, bytes] | Behaviour:
        if token is None:
            return 400, b"missing X-Aws-Parameters-Secrets-Token header"
        if token != self.token:
            return 403, b"invalid X-Aws-Parameters-Secrets-Token"
        with self._lock:
            if self.not_ready > 0:
                self.not_ready -= 1
                return 400, b"not ready to serve traffic, please wait"
            if self.scripted:
                answer = self.scripted.pop(0)
                if not isinstance(answer, tuple):
                    self.scripted_done.append(answer)
                return answer
        if path == "/systemsmanager/parameters/get":
            return self._parameter(params)
        if path != "/secretsmanager/get":
            return 404, b"not found"
        secret_id = params.get("secretId")
        if not secret_id:
            return 400, b"secretId is required"
        cache_key = (secret_id, params.get("versionId", ""), params.get("versionStage", ""))
        refresh = self.honour_refresh_now and params.get("refreshNow") == "true"
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is not None and not refresh:
            return 200, cached
        request: dict[str, str] = {"SecretId": secret_id}
        if params.get("versionId"):
            request["VersionId"] = params["versionId"]
        if params.get("versionStage"):
            request["VersionStage"] = params["versionStage"]
        elif not params.get("versionId"):
            # AWS's default, said out loud: moto's default version does not follow an
            # AWSCURRENT moved by UpdateSecretVersionStage (finishSecret).
            request["VersionStage"] = "AWSCURRENT"
        try:
            answer = self.backend.get_secret_value(**request)
        except ClientError as exc:
            return _error_answer(exc)
        document = {
            "ARN": answer["ARN"],
            "Name": answer["Name"],
            "VersionId": answer["VersionId"],
            "VersionStages": answer.get("VersionStages", []),
            "CreatedDate": answer["CreatedDate"].timestamp(),
        }
        if "SecretString" in answer:
            document["SecretString"] = answer["SecretString"]
        if "SecretBinary" in answer:
            document["SecretBinary"] = base64.b64encode(answer["SecretBinary"]).decode()
        payload = json.dumps(document).encode()
        with self._lock:
            self._cache[cache_key] = payload
        return 200, payload

    def _parameter(self, params: dict[str, str]) -> tuple[int, bytes]:
        """``GET /systemsmanager/parameters/get?name=&withDecryption=``: GetParameter's
        answer, cached like secrets (no refresh option: none is documented)."""
        name = params.get("name")
        if not name:
            return 400, b"name is required"
        decrypt = params.get("withDecryption") == "true"
        cache_key = ("ssm", name, str(decrypt))
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is not None:
            return 200, cached
        try:
            answer = self.parameters.get_parameter(Name=name, WithDecryption=decrypt)
        except ClientError as exc:
            return _error_answer(exc)
        parameter = dict(answer["Parameter"])
        parameter["LastModifiedDate"] = parameter["LastModifiedDate"].timestamp()
        payload = json.dumps({"Parameter": parameter, "ResultMetadata": {}}).encode()
        with self._lock:
            self._cache[cache_key] = payload
        return 200, payload


def _error_answer(exc: ClientError) -> tuple[int, bytes]:
    """An AWS error as the extension passes it on: AWS's status, its type and message."""
    error = exc.response["Error"]
    status = int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    body = {"__type": error["Code"], "message": error.get("Message", "")}
    return status, json.dumps(body).encode()


@pytest.fixture
def fake_extension(sm: Any, ssm: Any) -> Iterator[Callable[..., FakeExtension]]:
    """A factory of started :class:`FakeExtension` servers, stopped after the test."""
    started: list[FakeExtension] = []

    def make(**options: Any) -> FakeExtension:
        extension = FakeExtension(sm, ssm, **options)
        started.append(extension)
        return extension

    yield make
    for extension in started:
        extension.stop()


# ---------------------------------------------------------------------- both drivers


@dataclass(frozen=True)
class Driver:
    """Calls a provider through its blocking or its async methods, so that one test
    runs every case through both."""

    name: str

    def fetch(self, provider: Any) -> Any:
        if self.name == "sync":
            return provider.fetch()
        return asyncio.run(provider.afetch())

    def refetch(self, provider: Any, rejected: Any) -> Any:
        if self.name == "sync":
            return provider.refetch(rejected)
        return asyncio.run(provider.arefetch(rejected))


@pytest.fixture(params=[Driver("sync"), Driver("async")], ids=lambda d: d.name)
def drive(request: pytest.FixtureRequest) -> Driver:
    """The sync driver, then the async one."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def behaviours() -> Any:
    """The scripted behaviours of :class:`FakeExtension` (tests cannot import conftest)."""
    return types.SimpleNamespace(Endless=Endless, Hang=Hang, Trickle=Trickle)


@pytest.fixture
def session_token() -> str:
    """The token the extension stand-in expects (``AWS_SESSION_TOKEN`` in every test)."""
    return SESSION_TOKEN
