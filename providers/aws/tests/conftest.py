"""Fixtures for the AWS provider tests: a moto server over real HTTP, fake credentials,
a scripted Secrets Manager endpoint for errors moto cannot produce, and a local stand-in
for the AWS Parameters and Secrets Lambda Extension."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
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
SESSION_TOKEN = "fake-session-token-for-the-extension"
DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens there

_AWS_VARIABLES_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
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
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _handle


class _Serving:
    def __init__(self) -> None:
        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
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
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        raise NotImplementedError


class ScriptedSecretsManager(_Serving):
    """Answers GetSecretValue with scripted AWS JSON-protocol answers (the last one
    repeats), for error codes moto cannot produce: AccessDenied, DecryptionFailure,
    throttling, internal errors."""

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
    """

    backend: Any
    token: str = SESSION_TOKEN
    honour_refresh_now: bool = True
    not_ready: int = 0
    scripted: list[tuple[int, bytes]] = field(default_factory=list)
    requests: list[ExtensionRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()
        _Serving.__init__(self)

    def _record(self, path: str, params: dict[str, str], token: str | None, status: int) -> None:
        with self._lock:
            self.requests.append(ExtensionRequest(path, params, token, status))

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query))
        token = handler.headers.get("X-Aws-Parameters-Secrets-Token")
        status, payload = self._answer(parts.path, params, token)
        self._record(parts.path, params, token, status)
        content_type = "application/json" if payload.startswith(b"{") else "text/plain"
        return status, [("Content-Type", content_type)], payload

    def _answer(self, path: str, params: dict[str, str], token: str | None) -> tuple[int, bytes]:
        if token is None:
            return 400, b"missing X-Aws-Parameters-Secrets-Token header"
        if token != self.token:
            return 403, b"invalid X-Aws-Parameters-Secrets-Token"
        with self._lock:
            if self.not_ready > 0:
                self.not_ready -= 1
                return 400, b"not ready to serve traffic, please wait"
            if self.scripted:
                return self.scripted.pop(0)
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
        try:
            answer = self.backend.get_secret_value(**request)
        except ClientError as exc:
            error = exc.response["Error"]
            status = int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
            return status, json.dumps(
                {"__type": error["Code"], "message": error.get("Message", "")}
            ).encode()
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


@pytest.fixture
def fake_extension(sm: Any) -> Iterator[Callable[..., FakeExtension]]:
    """A factory of started :class:`FakeExtension` servers, stopped after the test."""
    started: list[FakeExtension] = []

    def make(**options: Any) -> FakeExtension:
        extension = FakeExtension(sm, **options)
        started.append(extension)
        return extension

    yield make
    for extension in started:
        extension.stop()
