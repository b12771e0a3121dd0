"""Bad cases against a real OpenBao server: typed errors with hints, and no secret (API
key, Vault token) in any message, repr or rendered traceback."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import pytest

from scaling_credentials import (
    ConfigurationError,
    InvalidKeyFormatError,
    ProviderError,
    ScalingCredentialsError,
    SecretNotFoundError,
)
from scaling_credentials.testing import free_port
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret, good_value
from scaling_credentials_vault import TokenAuth, VaultProvider

KEY = good_value("errors")


def rendered(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def assert_clean(error: BaseException, *secrets: str) -> None:
    """No secret in the message, repr or traceback, and nothing from hvac or requests
    (whose exceptions hold response bodies and request headers) anywhere in the chain."""
    texts = [str(error), repr(error), rendered(error)]
    for secret in secrets:
        assert_no_secret(secret, *texts)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__
        assert not module.startswith(("hvac", "requests", "urllib3")), module
        current = current.__cause__ or current.__context__


def fetch_error(provider: VaultProvider) -> ScalingCredentialsError:
    with pytest.raises(ScalingCredentialsError) as info:
        provider.fetch()
    return info.value


@pytest.fixture
def provider_for(bao: Any, vault_env: pytest.MonkeyPatch) -> Callable[..., VaultProvider]:
    def make(path: str, token: str | None = None, **options: Any) -> VaultProvider:
        return VaultProvider(path, url=bao.url, auth=TokenAuth(token or bao.root_token), **options)

    return make


def test_wrong_token(provider_for: Callable[..., VaultProvider], secret_path: str) -> None:
    wrong = "s.WrongTokenWrongTokenWrong1"
    error = fetch_error(provider_for(secret_path, wrong))
    assert type(error) is ProviderError
    assert "invalid, expired or revoked" in str(error)
    assert error.provider == f"vault:{secret_path}?mount=secret&field=api_key"
    assert_clean(error, wrong, "WrongTokenWrongToken")


def test_missing_path(provider_for: Callable[..., VaultProvider], secret_path: str) -> None:
    error = fetch_error(provider_for(secret_path))
    assert isinstance(error, SecretNotFoundError)
    assert f"no secret at secret/{secret_path}" in str(error)


def test_path_with_mount_prefix_gets_a_hint(
    provider_for: Callable[..., VaultProvider], write_kv2: Callable[..., int], secret_path: str
) -> None:
    write_kv2(secret_path, {"api_key": KEY})
    error = fetch_error(provider_for(f"secret/data/{secret_path}"))
    assert isinstance(error, SecretNotFoundError)
    assert f"vault:{secret_path}?mount=secret" in str(error)


def test_missing_mount(provider_for: Callable[..., VaultProvider], secret_path: str) -> None:
    error = fetch_error(provider_for(secret_path, mount_point="nosuchmount"))
    assert type(error) is ProviderError
    assert "no secrets engine is mounted at nosuchmount/" in str(error)


def test_missing_field_lists_fields_without_values(
    provider_for: Callable[..., VaultProvider], write_kv2: Callable[..., int], secret_path: str
) -> None:
    write_kv2(secret_path, {"token": KEY, KEY: "pasted as a name"})
    error = fetch_error(provider_for(secret_path))
    assert isinstance(error, InvalidKeyFormatError)
    assert "no field 'api_key'" in str(error)
    assert "'token'" in str(error)
    assert_clean(error, KEY)


@pytest.mark.parametrize(
    ("value", "kind"),
    [(12345, "number"), ({"nested": KEY}, "object"), ([KEY], "array"), (None, "null")],
)
def test_non_string_field(
    provider_for: Callable[..., VaultProvider],
    write_kv2: Callable[..., int],
    secret_path: str,
    value: object,
    kind: str,
) -> None:
    write_kv2(secret_path, {"api_key": value})
    error = fetch_error(provider_for(secret_path))
    assert isinstance(error, InvalidKeyFormatError)
    assert f"is a JSON {kind}, expected a string" in str(error)
    assert_clean(error, KEY)


def test_invalid_value_in_field(
    provider_for: Callable[..., VaultProvider], write_kv2: Callable[..., int], secret_path: str
) -> None:
    bad = "Bearer " + KEY
    write_kv2(secret_path, {"api_key": bad})
    error = fetch_error(provider_for(secret_path))
    assert isinstance(error, InvalidKeyFormatError)
    assert "Bearer" in str(error)
    assert_clean(error, KEY)


def test_deleted_version(
    provider_for: Callable[..., VaultProvider],
    write_kv2: Callable[..., int],
    bao_root: hvac.Client,
    secret_path: str,
) -> None:
    write_kv2(secret_path, {"api_key": good_value("one")})
    version = write_kv2(secret_path, {"api_key": KEY})
    provider = provider_for(secret_path)
    assert provider.fetch().version == str(version)
    bao_root.secrets.kv.v2.delete_latest_version_of_secret(path=secret_path)
    error = fetch_error(provider)
    assert isinstance(error, SecretNotFoundError)
    assert f"current version ({version})" in str(error)
    assert "was deleted" in str(error)
    assert f"undelete -versions={version}" in str(error)
    assert_clean(error, KEY)

    bao_root.secrets.kv.v2.destroy_secret_versions(path=secret_path, versions=[version])
    error = fetch_error(provider)
    assert isinstance(error, SecretNotFoundError)
    assert "was destroyed" in str(error)

    bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": KEY})
    assert provider.fetch().version == str(version + 1)


def test_permission_denied_names_path_policy_and_capability(
    provider_for: Callable[..., VaultProvider],
    write_kv2: Callable[..., int],
    bao_root: hvac.Client,
) -> None:
    write_kv2("elsewhere/app", {"api_key": KEY})
    token = bao_root.auth.token.create(policies=["scaling-read"], ttl="10m")["auth"]["client_token"]
    error = fetch_error(provider_for("elsewhere/app", token))
    assert type(error) is ProviderError
    message = str(error)
    assert "permission denied reading secret/data/elsewhere/app" in message
    assert "`read` capability" in message
    assert "scaling-read" in message
    assert 'path "secret/data/elsewhere/app"' in message
    assert_clean(error, KEY, token)


def test_kv1_on_a_kv2_mount_and_back(
    provider_for: Callable[..., VaultProvider],
    write_kv2: Callable[..., int],
    bao_root: hvac.Client,
    secret_path: str,
) -> None:
    write_kv2(secret_path, {"api_key": KEY})
    error = fetch_error(provider_for(secret_path, kv_version=1))
    assert type(error) is ProviderError
    assert "is a KV version 2 engine; use kv_version=2" in str(error)

    bao_root.secrets.kv.v1.create_or_update_secret(
        path=secret_path, secret={"api_key": KEY}, mount_point="kv1"
    )
    error = fetch_error(provider_for(secret_path, mount_point="kv1"))
    assert isinstance(error, SecretNotFoundError)
    assert "kv1/ is a KV version 1 engine: use kv_version=1" in str(error)


def test_kv1_answer_without_data_gives_no_kv2_hint(
    provider_for: Callable[..., VaultProvider],
    bao_root: hvac.Client,
    secret_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bao_root.secrets.kv.v1.create_or_update_secret(
        path=secret_path, secret={"api_key": KEY}, mount_point="kv1"
    )
    provider = provider_for(secret_path, mount_point="kv1", kv_version=1)
    assert_key_is(provider.fetch(), KEY)
    # An answer without "data" (an empty 200 or a 204, from a proxy say); KV v1 keeps
    # no versions, so no "deleted version" or "undelete" hint applies.
    monkeypatch.setattr(
        hvac.api.secrets_engines.kv_v1.KvV1,
        "read_secret",
        lambda self, path, mount_point="secret": {"warnings": None},
    )
    error = fetch_error(provider)
    assert type(error) is ProviderError
    message = str(error)
    assert f"answer for kv1/{secret_path} holds no data" in message
    assert "undelete" not in message
    assert "version" not in message.replace("KV version 1", "")
    assert_clean(error, KEY)


def test_unreachable_server(vault_env: pytest.MonkeyPatch) -> None:
    token = "s.UnreachableUnreachable12"
    provider = VaultProvider(
        "scaling/app", url=f"http://127.0.0.1:{free_port()}", auth=TokenAuth(token)
    )
    error = fetch_error(provider)
    assert type(error) is ProviderError
    assert "cannot reach Vault at http://127.0.0.1:" in str(error)
    assert "VAULT_ADDR" in str(error)
    assert_clean(error, token)


def test_sealed_then_stopped_server(
    start_server: Callable[..., Any], vault_env: pytest.MonkeyPatch
) -> None:
    server = start_server()
    root = server.client()
    root.secrets.kv.v2.create_or_update_secret(path="scaling/app", secret={"api_key": KEY})
    provider = VaultProvider("scaling/app", url=server.url, auth=TokenAuth(server.root_token))
    assert_key_is(provider.fetch(), KEY)

    root.sys.seal()
    error = fetch_error(provider)
    assert type(error) is ProviderError
    assert "is sealed" in str(error)
    assert "unseal" in str(error)
    assert_clean(error, KEY, server.root_token)

    server.stop()
    error = fetch_error(provider)
    assert type(error) is ProviderError
    assert "cannot reach Vault" in str(error)
    assert_clean(error, server.root_token)


def test_tls_verification_and_vault_cacert(
    start_server: Callable[..., Any], vault_env: pytest.MonkeyPatch
) -> None:
    server = start_server(tls=True)
    server.client().secrets.kv.v2.create_or_update_secret(
        path="scaling/app", secret={"api_key": KEY}
    )
    untrusted = VaultProvider("scaling/app", url=server.url, auth=TokenAuth(server.root_token))
    error = fetch_error(untrusted)
    assert type(error) is ProviderError
    assert "TLS verification" in str(error)
    assert "VAULT_CACERT" in str(error)
    assert_clean(error, server.root_token)

    vault_env.setenv("VAULT_CACERT", server.ca_cert)
    vault_env.setenv("VAULT_ADDR", server.url)
    trusted = VaultProvider("scaling/app", auth=TokenAuth(server.root_token))
    assert trusted.verify == server.ca_cert
    assert_key_is(trusted.fetch(), KEY)
    assert (
        VaultProvider(
            "scaling/app", url=server.url, verify=server.ca_cert, auth=TokenAuth(server.root_token)
        )
        .fetch()
        .reveal()
        == KEY
    )


def test_no_token_anywhere_is_a_configuration_error(
    bao: Any, vault_env: pytest.MonkeyPatch
) -> None:
    provider = VaultProvider("scaling/app", url=bao.url)
    with pytest.raises(ConfigurationError, match="VAULT_TOKEN"):
        provider.fetch()


def test_missing_address_is_a_configuration_error(vault_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="VAULT_ADDR"):
        VaultProvider("scaling/app")
    with pytest.raises(ConfigurationError, match="http"):
        VaultProvider("scaling/app", url="vault.example.com:8200")


@pytest.mark.parametrize(
    "options",
    [
        {"path": ""},
        {"path": "scaling/app", "kv_version": 3},
        {"path": "scaling/app", "field": ""},
        {"path": "scaling/app", "mount_point": "/"},
        {"path": "scaling/app", "timeout": 0},
        {"path": "scaling/app", "auth": "s.token"},
        {"path": "scaling/app", "verify": ""},
        {"path": "scaling/app", "verify": 1},
    ],
)
def test_bad_arguments(options: dict[str, Any], vault_env: pytest.MonkeyPatch) -> None:
    path = options.pop("path")
    with pytest.raises(ConfigurationError):
        VaultProvider(path, url="http://127.0.0.1:8200", **options)


def test_jwt_file_missing_is_a_clear_error(
    bao: Any, vault_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from scaling_credentials_vault import KubernetesAuth

    provider = VaultProvider(
        "scaling/app", url=bao.url, auth=KubernetesAuth("app", jwt_path=tmp_path / "missing")
    )
    error = fetch_error(provider)
    assert type(error) is ProviderError
    assert "does not exist" in str(error)
    assert "automountServiceAccountToken" in str(error)
