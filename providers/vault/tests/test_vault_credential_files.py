"""Credential files (a token sink, ~/.vault-token, a secret ID file, a service-account
JWT) are read with the toolkit's capped read: typed errors that name the file and what
to do, never its content, and no blocking on a FIFO. No server needed: the login fails
before anything is sent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scaling_credentials import ProviderError, SecretNotFoundError
from scaling_credentials.testing.provider_suite import assert_no_secret
from scaling_credentials_vault import AppRoleAuth, JWTAuth, TokenAuth, VaultProvider

TOKEN = "hvs.CAESICredentialFileTokenValue0123"


def login_error(provider: VaultProvider) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        provider.fetch()
    return info.value


def test_empty_vault_token_file_says_to_log_in(
    vault_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = Path(os.environ["HOME"])
    (home / ".vault-token").write_text("  \n")
    provider = VaultProvider("scaling/api", url="http://127.0.0.1:1", auth=TokenAuth())
    error = login_error(provider)
    assert type(error) is ProviderError
    assert str(error).startswith(provider.describe() + ": ")
    assert f"the Vault token file {home / '.vault-token'} is empty; run bao login" in str(error)


def test_token_file_fifo_is_refused_without_blocking(
    vault_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fifo = tmp_path / "token-fifo"
    os.mkfifo(fifo)
    with pytest.raises(ProviderError, match="is a FIFO"):  # returns at once: nothing writes
        TokenAuth(token_file=fifo).read_token()


def test_credential_file_not_utf8_never_shows_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "secret-id"
    path.write_bytes(TOKEN.encode() + b"\xff")
    with pytest.raises(ProviderError, match="not UTF-8") as info:
        AppRoleAuth("role", secret_id_file=path).login(client=None)
    assert type(info.value) is ProviderError
    assert_no_secret(TOKEN, str(info.value), repr(info.value.__cause__))


def test_missing_credential_file_is_a_provider_error_not_a_missing_secret(
    tmp_path: Path,
) -> None:
    # The key's secret may well exist: what is missing is the login credential.
    with pytest.raises(ProviderError) as info:
        JWTAuth("ci", tmp_path / "nope").read_jwt()
    assert not isinstance(info.value, SecretNotFoundError)
    assert f"the JWT token file {tmp_path / 'nope'} does not exist" in str(info.value)


def test_oversized_credential_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(ProviderError, match="over the 65536-byte cap"):
        TokenAuth(token_file=path).read_token()
