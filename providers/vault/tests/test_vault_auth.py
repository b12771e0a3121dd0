"""Auth methods against a real OpenBao server: AppRole with short token TTLs (expiry,
revocation, renewal), JWT as Kubernetes workloads use it (a key pair and a
service-account-shaped token made here), Kubernetes auth against a fake TokenReview API on
loopback, and token sources. The Vault token and the credentials stay out of reprs, logs
and errors."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scaling_credentials import ConfigurationError, ProviderError
from scaling_credentials.testing import FakeClock
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret, good_value
from scaling_credentials_vault import (
    AppRoleAuth,
    JWTAuth,
    KubernetesAuth,
    TokenAuth,
    VaultAuth,
    VaultProvider,
    VaultToken,
)

KEY = good_value("auth")
POLICY = "scaling-read"


class Counting(VaultAuth):
    """Wraps an auth method to count logins and remember the tokens handed out."""

    def __init__(self, inner: VaultAuth) -> None:
        self.inner = inner
        self.tokens: list[VaultToken] = []

    def login(self, client: Any) -> VaultToken:
        token = self.inner.login(client)
        self.tokens.append(token)
        return token

    def describe(self) -> str:
        return self.inner.describe()

    def secrets(self) -> tuple[str, ...]:
        return self.inner.secrets()

    @property
    def logins(self) -> int:
        return len(self.tokens)


def token_is_dead(root: hvac.Client, accessor: str | None) -> bool:
    assert accessor
    try:
        root.auth.token.lookup_accessor(accessor)
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return True
    return False


@pytest.fixture
def kv_secret(bao_root: hvac.Client, secret_path: str) -> str:
    bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": KEY})
    return secret_path


@dataclass
class AppRole:
    role_id: str
    secret_id: str
    name: str


@pytest.fixture
def approle(bao_root: hvac.Client) -> Callable[..., AppRole]:
    if "approle/" not in bao_root.sys.list_auth_methods()["data"]:
        bao_root.sys.enable_auth_method("approle")

    def make(**token_options: Any) -> AppRole:
        name = f"app-{uuid.uuid4().hex[:8]}"
        bao_root.auth.approle.create_or_update_approle(
            name, token_policies=[POLICY], **token_options
        )
        return AppRole(
            role_id=bao_root.auth.approle.read_role_id(name)["data"]["role_id"],
            secret_id=bao_root.auth.approle.generate_secret_id(name)["data"]["secret_id"],
            name=name,
        )

    return make


# ---------------------------------------------------------------------------- AppRole


def test_approle_reads_keep_working_across_token_expiry(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    approle: Callable[..., AppRole],
    poll: Callable[..., None],
    vault_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaling_credentials")
    role = approle(token_ttl="2s", token_max_ttl="2s")
    # One provider whose clock does not move: it only learns of the expiry from Vault's
    # 403 and logs in again. One on the real clock: it logs in again before reading.
    frozen = Counting(AppRoleAuth(role.role_id, role.secret_id))
    timely = Counting(AppRoleAuth(role.role_id, role.secret_id))
    stale_provider = VaultProvider(kv_secret, url=bao.url, auth=frozen, clock=FakeClock())
    real_provider = VaultProvider(kv_secret, url=bao.url, auth=timely)
    assert_key_is(stale_provider.fetch(), KEY)
    assert_key_is(real_provider.fetch(), KEY)
    assert frozen.tokens[0].ttl == 2

    # Vault's own token expiry: a real wait of about two seconds, bounded.
    poll(lambda: token_is_dead(bao_root, frozen.tokens[0].accessor), timeout=15, what="expiry")
    poll(lambda: token_is_dead(bao_root, timely.tokens[0].accessor), timeout=15, what="expiry")

    assert_key_is(stale_provider.fetch(), KEY)
    assert_key_is(real_provider.fetch(), KEY)
    assert frozen.logins == 2
    assert timely.logins == 2
    assert "logging in again" in caplog.text
    secrets = [role.role_id, role.secret_id, *(t.token for t in frozen.tokens + timely.tokens)]
    for secret in secrets:
        assert_no_secret(secret, caplog.text, repr(stale_provider), repr(frozen.inner))


def test_approle_relogin_after_the_token_is_revoked(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    approle: Callable[..., AppRole],
    vault_env: pytest.MonkeyPatch,
) -> None:
    role = approle(token_ttl="10m")
    auth = Counting(AppRoleAuth(role.role_id, role.secret_id))
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth)
    assert_key_is(provider.fetch(), KEY)
    assert_key_is(provider.fetch(), KEY)
    assert auth.logins == 1  # the token is kept between fetches

    bao_root.auth.token.revoke_accessor(auth.tokens[0].accessor)
    assert_key_is(provider.fetch(), KEY)
    assert auth.logins == 2
    assert auth.tokens[1].token != auth.tokens[0].token


def test_approle_relogin_with_revoke_self(
    bao: Any, kv_secret: str, approle: Callable[..., AppRole], vault_env: pytest.MonkeyPatch
) -> None:
    role = approle(token_ttl="10m")
    auth = Counting(AppRoleAuth(role.role_id, role.secret_id))
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth)
    provider.fetch()
    bao.client(auth.tokens[0].token).auth.token.revoke_self()
    assert_key_is(provider.fetch(), KEY)
    assert auth.logins == 2


def test_concurrent_reads_after_revocation_log_in_once(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    approle: Callable[..., AppRole],
    vault_env: pytest.MonkeyPatch,
) -> None:
    role = approle(token_ttl="10m")
    auth = Counting(AppRoleAuth(role.role_id, role.secret_id))
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth)
    provider.fetch()
    bao_root.auth.token.revoke_accessor(auth.tokens[0].accessor)
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def read() -> None:
        start.wait(timeout=10)
        try:
            results.append(provider.fetch().reveal())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, [type(e).__name__ for e in errors]
    assert results == [KEY] * 6
    assert auth.logins == 2  # the first thread logs in, the others use its token


def test_renewable_token_is_renewed_near_expiry(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    approle: Callable[..., AppRole],
    vault_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaling_credentials.vault")
    role = approle(token_ttl="60s", token_max_ttl="1h")
    auth = Counting(AppRoleAuth(role.role_id, role.secret_id))
    clock = FakeClock()
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth, clock=clock)
    provider.fetch()
    assert auth.tokens[0].renewable
    clock.advance(30)  # under two thirds of the TTL: nothing to do
    provider.fetch()
    assert "renewed" not in caplog.text
    clock.advance(15)  # past two thirds: renew-self
    provider.fetch()
    assert "renewed the Vault token" in caplog.text
    assert auth.logins == 1
    info = bao_root.auth.token.lookup_accessor(auth.tokens[0].accessor)["data"]
    assert info["ttl"] > 50
    assert_no_secret(auth.tokens[0].token, caplog.text)


def test_non_renewable_token_means_a_new_login_near_expiry(
    bao: Any, kv_secret: str, approle: Callable[..., AppRole], vault_env: pytest.MonkeyPatch
) -> None:
    role = approle(token_ttl="60s", token_type="batch")  # batch tokens cannot be renewed
    auth = Counting(AppRoleAuth(role.role_id, role.secret_id))
    clock = FakeClock()
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth, clock=clock)
    provider.fetch()
    assert not auth.tokens[0].renewable
    clock.advance(45)
    assert_key_is(provider.fetch(), KEY)
    assert auth.logins == 2


def test_approle_secret_id_from_a_file_is_read_at_each_login(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    approle: Callable[..., AppRole],
    vault_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    role = approle(token_ttl="10m")
    (tmp_path / "role_id").write_text(role.role_id + "\n")
    (tmp_path / "secret_id").write_text(role.secret_id)
    auth = Counting(
        AppRoleAuth(role_id_file=tmp_path / "role_id", secret_id_file=tmp_path / "secret_id")
    )
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth)
    provider.fetch()
    fresh = bao_root.auth.approle.generate_secret_id(role.name)["data"]["secret_id"]
    bao_root.auth.approle.destroy_secret_id(role.name, role.secret_id)
    (tmp_path / "secret_id").write_text(fresh)
    bao_root.auth.token.revoke_accessor(auth.tokens[0].accessor)
    assert_key_is(provider.fetch(), KEY)
    assert auth.logins == 2


def test_approle_bad_secret_id(
    bao: Any, kv_secret: str, approle: Callable[..., AppRole], vault_env: pytest.MonkeyPatch
) -> None:
    role = approle()
    wrong = str(uuid.uuid4())
    provider = VaultProvider(kv_secret, url=bao.url, auth=AppRoleAuth(role.role_id, wrong))
    with pytest.raises(ProviderError) as info:
        provider.fetch()
    message = str(info.value)
    assert "AppRole login at auth/approle failed" in message
    assert "VAULT_SECRET_ID" in message
    assert_no_secret(wrong, message, repr(info.value))
    assert_no_secret(role.role_id, message, repr(info.value))


def test_approle_mount_missing(bao: Any, kv_secret: str, vault_env: pytest.MonkeyPatch) -> None:
    provider = VaultProvider(
        kv_secret, url=bao.url, auth=AppRoleAuth("r", "s", mount_point="nowhere")
    )
    with pytest.raises(ProviderError, match="is an auth method enabled at auth/nowhere"):
        provider.fetch()


# ---------------------------------------------------------------------------- JWT


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Signer:
    """An RSA key pair and RS256 JWTs shaped like projected Kubernetes service-account
    tokens (no PyJWT: a JWT is three base64url parts and a PKCS#1 v1.5 signature)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def service_account_token(
        self,
        *,
        namespace: str = "payments",
        name: str = "scaling-app",
        audience: str = "vault",
        lifetime: int = 600,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "kubernetes.io": {
                "namespace": namespace,
                "pod": {"name": f"{name}-7d9f8b6c5-x2x4q", "uid": str(uuid.uuid4())},
                "serviceaccount": {"name": name, "uid": "5b6a1f0e-2a83-4c1e-9d0b-6f3c3c1b2a10"},
            },
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(signature)


def write_atomically(path: Path, text: str) -> None:
    """Replace the file the way the kubelet does: write aside, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@pytest.fixture
def jwt_mount(bao_root: hvac.Client) -> Iterator[str]:
    mount = f"jwt-{uuid.uuid4().hex[:8]}"
    bao_root.sys.enable_auth_method("jwt", path=mount)
    yield mount
    bao_root.sys.disable_auth_method(mount)


def test_jwt_login_as_a_kubernetes_workload_and_token_rotation(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    jwt_mount: str,
    tmp_path: Path,
    vault_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaling_credentials")
    signer = Signer()
    bao_root.auth.jwt.configure(jwt_validation_pubkeys=[signer.public_pem], path=jwt_mount)
    bao_root.auth.jwt.create_role(
        "scaling-app",
        user_claim="sub",
        allowed_redirect_uris=[],
        role_type="jwt",
        bound_audiences=["vault"],
        bound_subject="system:serviceaccount:payments:scaling-app",
        token_policies=[POLICY],
        token_ttl="10m",
        path=jwt_mount,
    )
    token_file = tmp_path / "vault-token"
    first_jwt = signer.service_account_token()
    write_atomically(token_file, first_jwt)
    auth = Counting(JWTAuth("scaling-app", jwt_path=token_file, mount_point=jwt_mount))
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth)
    assert_key_is(provider.fetch(), KEY)
    assert auth.tokens[0].policies == ("default", POLICY)

    # The cluster's signing key rotates and the kubelet writes a token signed with the new
    # one: the old token no longer logs in, so the next login must re-read the file.
    rotated = Signer()
    bao_root.auth.jwt.configure(jwt_validation_pubkeys=[rotated.public_pem], path=jwt_mount)
    second_jwt = rotated.service_account_token()
    write_atomically(token_file, second_jwt)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        bao_root.auth.jwt.jwt_login("scaling-app", first_jwt, use_token=False, path=jwt_mount)
    bao_root.auth.token.revoke_accessor(auth.tokens[0].accessor)

    assert_key_is(provider.fetch(), KEY)
    assert auth.logins == 2
    for secret in (first_jwt, second_jwt, *(t.token for t in auth.tokens)):
        assert_no_secret(secret, caplog.text, repr(provider), repr(auth.inner))


def test_jwt_wrong_audience_is_a_clear_error(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    jwt_mount: str,
    tmp_path: Path,
    vault_env: pytest.MonkeyPatch,
) -> None:
    signer = Signer()
    bao_root.auth.jwt.configure(jwt_validation_pubkeys=[signer.public_pem], path=jwt_mount)
    bao_root.auth.jwt.create_role(
        "scaling-app",
        user_claim="sub",
        allowed_redirect_uris=[],
        role_type="jwt",
        bound_audiences=["vault"],
        token_policies=[POLICY],
        path=jwt_mount,
    )
    jwt = signer.service_account_token(audience="not-vault")
    write_atomically(tmp_path / "token", jwt)
    provider = VaultProvider(
        kv_secret,
        url=bao.url,
        auth=JWTAuth("scaling-app", tmp_path / "token", mount_point=jwt_mount),
    )
    with pytest.raises(ProviderError) as info:
        provider.fetch()
    message = str(info.value)
    assert f"JWT login with role 'scaling-app' at auth/{jwt_mount} failed" in message
    assert "audience" in message
    for part in jwt.split("."):
        assert_no_secret(part, message, repr(info.value))


# ---------------------------------------------------------------------------- Kubernetes


class FakeTokenReview:
    """The Kubernetes TokenReview API on loopback, as Vault's kubernetes auth calls it:
    it accepts the service-account tokens it was told about and records what it saw."""

    def __init__(self) -> None:
        self.accepted: dict[str, tuple[str, str]] = {}  # jwt -> (namespace, name)
        self.reviewed: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                review = json.loads(self.rfile.read(length))
                jwt = review["spec"]["token"]
                fake.reviewed.append(jwt)
                status: dict[str, Any] = {"authenticated": False}
                if jwt in fake.accepted:
                    namespace, name = fake.accepted[jwt]
                    status = {
                        "authenticated": True,
                        "user": {
                            "username": f"system:serviceaccount:{namespace}:{name}",
                            "uid": "5b6a1f0e-2a83-4c1e-9d0b-6f3c3c1b2a10",
                            "groups": ["system:serviceaccounts"],
                        },
                        "audiences": review["spec"].get("audiences") or ["vault"],
                    }
                body = json.dumps(
                    {
                        "apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenReview",
                        "status": status,
                    }
                ).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def token_review() -> Iterator[FakeTokenReview]:
    fake = FakeTokenReview()
    yield fake
    fake.stop()


def test_kubernetes_auth_with_the_service_account_token(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    token_review: FakeTokenReview,
    tmp_path: Path,
    vault_env: pytest.MonkeyPatch,
    self_signed: Any,
) -> None:
    mount = f"k8s-{uuid.uuid4().hex[:8]}"
    bao_root.sys.enable_auth_method("kubernetes", path=mount)
    try:
        bao_root.auth.kubernetes.configure(
            kubernetes_host=token_review.url,
            token_reviewer_jwt="reviewer-token",
            # Required when Vault runs outside a pod; unused over plain http on loopback.
            kubernetes_ca_cert=self_signed.pem,
            disable_local_ca_jwt=True,
            mount_point=mount,
        )
        bao_root.auth.kubernetes.create_role(
            "scaling-app",
            bound_service_account_names=["scaling-app"],
            bound_service_account_namespaces=["payments"],
            policies=[POLICY],
            ttl="10m",
            audience="vault",
            mount_point=mount,
        )
        signer = Signer()
        jwt_file = tmp_path / "token"
        first = signer.service_account_token()
        token_review.accepted[first] = ("payments", "scaling-app")
        write_atomically(jwt_file, first)
        auth = Counting(KubernetesAuth("scaling-app", jwt_path=jwt_file, mount_point=mount))
        provider = VaultProvider(kv_secret, url=bao.url, auth=auth)
        assert_key_is(provider.fetch(), KEY)
        assert token_review.reviewed == [first]

        # The kubelet rotates the projected token; the old one stops being valid.
        second = signer.service_account_token()
        token_review.accepted = {second: ("payments", "scaling-app")}
        write_atomically(jwt_file, second)
        bao_root.auth.token.revoke_accessor(auth.tokens[0].accessor)
        assert_key_is(provider.fetch(), KEY)
        assert token_review.reviewed == [first, second]
        assert auth.logins == 2
    finally:
        bao_root.sys.disable_auth_method(mount)


# ---------------------------------------------------------------------------- tokens


def test_token_from_vault_token_env(
    bao: Any, kv_secret: str, vault_env: pytest.MonkeyPatch
) -> None:
    vault_env.setenv("VAULT_ADDR", bao.url)
    vault_env.setenv("VAULT_TOKEN", bao.root_token)
    provider = VaultProvider(kv_secret)
    assert_key_is(provider.fetch(), KEY)
    assert_no_secret(bao.root_token, repr(provider), repr(provider.auth))


def test_token_from_home_vault_token_file(
    bao: Any, kv_secret: str, vault_env: pytest.MonkeyPatch
) -> None:
    Path(os.environ["HOME"], ".vault-token").write_text(bao.root_token + "\n")
    assert_key_is(VaultProvider(kv_secret, url=bao.url).fetch(), KEY)


def test_token_file_is_reread_after_the_token_is_revoked(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    tmp_path: Path,
    vault_env: pytest.MonkeyPatch,
) -> None:
    # An agent's token sink: the agent writes a new token when it re-authenticates.
    sink = tmp_path / "sink"
    first = bao_root.auth.token.create(policies=[POLICY], ttl="10m")["auth"]
    write_atomically(sink, first["client_token"])
    vault_env.setenv("VAULT_TOKEN_FILE", str(sink))
    auth = Counting(TokenAuth())
    provider = VaultProvider(kv_secret, url=bao.url, auth=auth)
    assert_key_is(provider.fetch(), KEY)
    assert auth.tokens[0].ttl is not None and 500 < auth.tokens[0].ttl <= 600
    second = bao_root.auth.token.create(policies=[POLICY], ttl="10m")["auth"]
    write_atomically(sink, second["client_token"])
    bao_root.auth.token.revoke_accessor(first["accessor"])
    assert_key_is(provider.fetch(), KEY)
    assert auth.logins == 2


def test_periodic_token_is_renewed(
    bao: Any,
    bao_root: hvac.Client,
    kv_secret: str,
    vault_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaling_credentials.vault")
    token = bao_root.auth.token.create(policies=[POLICY], period="60s")["auth"]
    clock = FakeClock()
    provider = VaultProvider(
        kv_secret, url=bao.url, auth=TokenAuth(token["client_token"]), clock=clock
    )
    provider.fetch()
    clock.advance(50)
    provider.fetch()
    assert "renewed the Vault token" in caplog.text
    assert_no_secret(token["client_token"], caplog.text)


def test_client_with_a_token_is_used_and_never_changed(
    bao: Any, kv_secret: str, vault_env: pytest.MonkeyPatch
) -> None:
    client = hvac.Client(url=bao.url, token=bao.root_token, timeout=5)
    provider = VaultProvider(kv_secret, client=client)
    assert_key_is(provider.fetch(), KEY)
    assert client.token == bao.root_token
    with pytest.raises(ConfigurationError, match="not both"):
        VaultProvider(kv_secret, client=client, url=bao.url)


# ---------------------------------------------------------------------------- reprs


def test_reprs_mask_credentials(tmp_path: Path) -> None:
    token = "s.TopSecretVaultTokenValue1"
    role_id, secret_id = str(uuid.uuid4()), str(uuid.uuid4())
    objects = [
        TokenAuth(token),
        TokenAuth(token_file=tmp_path / "t"),
        TokenAuth(),
        AppRoleAuth(role_id, secret_id),
        AppRoleAuth(role_id, secret_id_file=tmp_path / "s"),
        KubernetesAuth("app"),
        JWTAuth("app", tmp_path / "jwt"),
        VaultToken(token=token, ttl=60, renewable=True),
        VaultProvider(
            "scaling/app", url="http://127.0.0.1:8200", auth=AppRoleAuth(role_id, secret_id)
        ),
    ]
    for obj in objects:
        text = repr(obj)
        assert_no_secret(token, text, str(obj))
        assert_no_secret(role_id, text, str(obj))
        assert_no_secret(secret_id, text, str(obj))
    assert repr(AppRoleAuth(role_id, secret_id)) == (
        "AppRoleAuth(role_id='****', secret_id='****', mount_point='approle')"
    )
    assert repr(KubernetesAuth("app")) == (
        "KubernetesAuth(role='app', "
        "jwt_path='/var/run/secrets/kubernetes.io/serviceaccount/token', "
        "mount_point='kubernetes')"
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: TokenAuth(""),
        lambda: TokenAuth("t", token_file="/x"),
        lambda: AppRoleAuth(),
        lambda: AppRoleAuth("r", "s", secret_id_file="/x"),
        lambda: AppRoleAuth("r", "s", mount_point=""),
        lambda: KubernetesAuth(""),
        lambda: JWTAuth("app", ""),
    ],
)
def test_auth_arguments_are_checked(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):
        build()
