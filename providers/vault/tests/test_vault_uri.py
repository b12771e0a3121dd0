"""``vault:`` source URIs: parameters, auth methods with credentials from the environment
(never the URI), the entry point, and provider_from_env end to end against OpenBao."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import hvac
import pytest

from scaling_credentials import (
    ConfigurationError,
    SecretNotFoundError,
    provider_from_env,
    provider_from_uri,
)
from scaling_credentials._registry import installed_schemes
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret, good_value
from scaling_credentials_vault import (
    AppRoleAuth,
    JWTAuth,
    KubernetesAuth,
    TokenAuth,
    VaultProvider,
)

ADDR = "http://127.0.0.1:8200"


@pytest.fixture
def env(vault_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    vault_env.setenv("VAULT_ADDR", ADDR)
    return vault_env


def vault(uri: str) -> VaultProvider:
    provider = provider_from_uri(uri)
    assert isinstance(provider, VaultProvider)
    return provider


def test_entry_point_is_registered() -> None:
    schemes = {s.scheme: s for s in installed_schemes()}
    assert schemes["vault"].distribution == "scaling-credentials-vault"
    assert schemes["vault"].value == "scaling_credentials_vault._provider:VaultProvider.from_uri"


def test_defaults(env: pytest.MonkeyPatch) -> None:
    provider = vault("vault:scaling/api")
    assert (provider.path, provider.mount_point, provider.field) == (
        "scaling/api",
        "secret",
        "api_key",
    )
    assert provider.kv_version == 2
    assert provider.url == ADDR
    assert provider.namespace is None
    assert isinstance(provider.auth, TokenAuth)
    assert provider.describe() == "vault:scaling/api?mount=secret&field=api_key"
    assert vault("vault://scaling/api").path == "scaling/api"


def test_parameters(env: pytest.MonkeyPatch) -> None:
    provider = vault("vault:team/scaling?mount=kv&field=key&kv=1&namespace=team-a")
    assert (provider.path, provider.mount_point, provider.field) == ("team/scaling", "kv", "key")
    assert provider.kv_version == 1
    assert provider.namespace == "team-a"
    assert provider.describe() == "vault:team/scaling?mount=kv&field=key&kv=1"


def test_namespace_and_cacert_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("VAULT_NAMESPACE", "team-b")
    env.setenv("VAULT_CACERT", "/etc/ssl/vault-ca.pem")
    provider = vault("vault:scaling/api")
    assert provider.namespace == "team-b"
    assert provider.verify == "/etc/ssl/vault-ca.pem"


def test_approle_from_the_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    role_id, secret_id = str(uuid.uuid4()), str(uuid.uuid4())
    env.setenv("VAULT_ROLE_ID", role_id)
    env.setenv("VAULT_SECRET_ID", secret_id)
    provider = vault("vault:scaling/api?auth=approle&auth_mount=apps")
    assert isinstance(provider.auth, AppRoleAuth)
    assert provider.auth.mount_point == "apps"
    assert_no_secret(role_id, repr(provider))
    assert_no_secret(secret_id, repr(provider))

    env.delenv("VAULT_SECRET_ID")
    env.setenv("VAULT_SECRET_ID_FILE", str(tmp_path / "secret-id"))
    auth = vault("vault:scaling/api?auth=approle").auth
    assert isinstance(auth, AppRoleAuth)
    assert auth.secret_id_file == str(tmp_path / "secret-id")

    env.delenv("VAULT_SECRET_ID_FILE")
    with pytest.raises(ConfigurationError, match="VAULT_SECRET_ID"):
        vault("vault:scaling/api?auth=approle")
    env.delenv("VAULT_ROLE_ID")
    with pytest.raises(ConfigurationError, match="VAULT_ROLE_ID"):
        vault("vault:scaling/api?auth=approle")


def test_kubernetes_and_jwt(env: pytest.MonkeyPatch) -> None:
    auth = vault("vault:scaling/api?auth=kubernetes&role=scaling-app").auth
    assert isinstance(auth, KubernetesAuth)
    assert auth.role == "scaling-app"
    assert auth.jwt_path == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert auth.mount_point == "kubernetes"

    env.setenv("VAULT_JWT_PATH", "/var/run/secrets/tokens/vault")
    auth = vault("vault:scaling/api?auth=jwt&role=ci&auth_mount=jwt-ci").auth
    assert isinstance(auth, JWTAuth)
    assert (auth.role, auth.jwt_path, auth.mount_point) == (
        "ci",
        "/var/run/secrets/tokens/vault",
        "jwt-ci",
    )
    with pytest.raises(ConfigurationError, match="role=NAME"):
        vault("vault:scaling/api?auth=kubernetes")


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("vault:", "path"),
        ("vault:scaling/api?kv=3", "kv= .* 1 or 2"),
        ("vault:scaling/api?auth=ldap", "token, approle, kubernetes or jwt"),
        ("vault:scaling/api?auth=approle&role=x", "role= is for"),
        ("vault:scaling/api?role=x", "role= is for"),
        ("vault:scaling/api?colour=blue", "unknown parameter"),
        ("vault:scaling/api?auth=token&auth_mount=x", "auth_mount"),
    ],
)
def test_bad_uris(uri: str, match: str, env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=match):
        provider_from_uri(uri)


@pytest.mark.parametrize("name", ["token", "secret_id", "role_id", "jwt"])
def test_credentials_in_the_uri_are_refused_without_echoing_them(
    name: str, env: pytest.MonkeyPatch
) -> None:
    value = "s.ValueThatMustNotLeak123"
    with pytest.raises(ConfigurationError) as info:
        provider_from_uri(f"vault:scaling/api?{name}={value}")
    assert "must not carry credentials" in str(info.value)
    assert_no_secret(value, str(info.value), repr(info.value))


def test_no_vault_addr(vault_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="VAULT_ADDR"):
        provider_from_uri("vault:scaling/api")


def test_provider_from_env_end_to_end_with_approle(
    bao: Any, bao_root: hvac.Client, secret_path: str, vault_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if "approle/" not in bao_root.sys.list_auth_methods()["data"]:
        bao_root.sys.enable_auth_method("approle")
    role = f"uri-{uuid.uuid4().hex[:8]}"
    bao_root.auth.approle.create_or_update_approle(role, token_policies=["scaling-read"])
    key = good_value("uri")
    bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"token": key})
    (tmp_path / "secret-id").write_text(
        bao_root.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    )
    vault_env.setenv("VAULT_ADDR", bao.url)
    vault_env.setenv("VAULT_ROLE_ID", bao_root.auth.approle.read_role_id(role)["data"]["role_id"])
    vault_env.setenv("VAULT_SECRET_ID_FILE", str(tmp_path / "secret-id"))
    vault_env.setenv("SCALING_API_KEY_SOURCE", f"vault:{secret_path}?auth=approle&field=token")
    fetched = provider_from_env().fetch()
    assert_key_is(fetched, key)
    assert fetched.version == "1"
    assert fetched.source == f"vault:{secret_path}?mount=secret&field=token"


def test_namespace_is_sent(bao: Any, bao_root: hvac.Client, vault_env: pytest.MonkeyPatch) -> None:
    namespace = f"team{uuid.uuid4().hex[:6]}"
    bao_root.sys.create_namespace(namespace)  # OpenBao has namespaces since 2.3
    scoped = hvac.Client(url=bao.url, token=bao.root_token, namespace=namespace)
    scoped.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    key = good_value("namespace")
    scoped.secrets.kv.v2.create_or_update_secret(path="scaling/app", secret={"api_key": key})
    vault_env.setenv("VAULT_NAMESPACE", namespace)
    vault_env.setenv("VAULT_TOKEN", bao.root_token)
    provider = VaultProvider("scaling/app", url=bao.url)
    assert_key_is(provider.fetch(), key)
    vault_env.delenv("VAULT_NAMESPACE")
    outside = VaultProvider("scaling/app", url=bao.url)
    with pytest.raises(SecretNotFoundError):
        outside.fetch()


def test_openbao_variable_names_are_read_too(
    bao: Any, bao_root: hvac.Client, secret_path: str, vault_env: pytest.MonkeyPatch
) -> None:
    key = good_value("bao")
    bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": key})
    vault_env.setenv("BAO_ADDR", bao.url)
    vault_env.setenv("BAO_TOKEN", bao.root_token)
    vault_env.setenv("BAO_NAMESPACE", "")  # empty means unset
    provider = vault(f"vault:{secret_path}")
    assert provider.url == bao.url
    assert provider.namespace is None
    assert_key_is(provider.fetch(), key)
    vault_env.setenv("VAULT_ADDR", "http://127.0.0.1:1")  # VAULT_* wins
    assert vault(f"vault:{secret_path}").url == "http://127.0.0.1:1"
