"""The provider's checked settings: what their repr shows (no credential) and how Vault's
address is checked and shown."""

from __future__ import annotations

from typing import Any

import hvac
import pytest

from scaling_credentials import ConfigurationError
from scaling_credentials.testing.provider_suite import assert_no_secret
from scaling_credentials_vault import TokenAuth, VaultProvider
from scaling_credentials_vault._config import VaultSettings, configure, safe_url

PASSWORD = "pw-in-the-vault-url-7Qx"
PROXY_PASSWORD = "pw-in-the-proxy-url-3Kd"


def settings_for(**options: Any) -> VaultSettings:
    arguments: dict[str, Any] = {
        "field": "api_key",
        "mount_point": "secret",
        "kv_version": 2,
        "url": None,
        "namespace": None,
        "auth": None,
        "client": None,
        "verify": True,
        "timeout": 5.0,
    }
    arguments.update(options)
    settings, _ = configure("scaling/api", **arguments)
    return settings


def test_settings_repr_shows_no_credential_from_the_url(vault_env: pytest.MonkeyPatch) -> None:
    settings = settings_for(url=f"https://ops:{PASSWORD}@vault.example.com:8200")
    text = repr(settings)
    assert_no_secret(PASSWORD, text, str(settings))
    assert_no_secret("ops:", text)
    assert "url='https://vault.example.com:8200'" in text
    assert "path='scaling/api'" in text


def test_settings_repr_shows_no_credential_from_the_client(
    vault_env: pytest.MonkeyPatch,
) -> None:
    client = hvac.Client(
        url=f"https://ops:{PASSWORD}@vault.example.com:8200",
        token="s.ClientTokenClientToken1",
        proxies={"https": f"http://proxy-user:{PROXY_PASSWORD}@proxy.example.com:3128"},
    )
    settings = settings_for(client=client)
    text = repr(settings)
    for secret in (PASSWORD, PROXY_PASSWORD, "s.ClientTokenClientToken1"):
        assert_no_secret(secret, text, str(settings))
    assert "http://proxy.example.com:3128" in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://ops:{PASSWORD}@[::1]:8200/v1", "https://[::1]:8200/v1"),
        (f"https://ops:{PASSWORD}@[2001:db8::5]/", "https://[2001:db8::5]/"),
        (f"https://{PASSWORD}@vault.example.com", "https://vault.example.com"),
        ("https://[::1]:8200", "https://[::1]:8200"),
        # Unusable addresses are still shown, without the userinfo and without raising.
        (f"https://ops:{PASSWORD}@vault.example.com:abc/v1", "https://vault.example.com:abc/v1"),
        (f"https://ops:{PASSWORD}@vault.example.com:99999", "https://vault.example.com:99999"),
        (f"https://ops:{PASSWORD}@[::1:8200/v1", "https://[::1:8200/v1"),
    ],
    ids=lambda value: value.replace(PASSWORD, "PASSWORD"),
)
def test_safe_url(url: str, shown: str) -> None:
    text = safe_url(url)
    assert_no_secret(PASSWORD, text)
    assert text == shown


def test_ipv6_address_keeps_its_brackets(vault_env: pytest.MonkeyPatch) -> None:
    settings = settings_for(url=f"https://ops:{PASSWORD}@[::1]:8200")
    assert_no_secret(PASSWORD, repr(settings))
    assert settings.safe_url == "https://[::1]:8200"


BAD_ADDRESSES = [
    "https://vault.example.com:99999",
    "https://vault.example.com:abc",
    "https://vault.example.com:0",
    f"https://ops:{PASSWORD}@vault.example.com:abc",
    f"https://ops:{PASSWORD}@vault.example.com:99999",
    f"https://ops:{PASSWORD}@[::1:8200",
]


@pytest.mark.parametrize("url", BAD_ADDRESSES, ids=lambda url: url.replace(PASSWORD, "PASSWORD"))
def test_bad_url_argument_is_a_configuration_error(url: str, vault_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as info:
        VaultProvider("scaling/api", url=url, auth=TokenAuth("s.x"))
    message = str(info.value)
    assert_no_secret(PASSWORD, message, repr(info.value))
    assert "url=" in message
    assert "VAULT_ADDR" not in message


@pytest.mark.parametrize("variable", ["VAULT_ADDR", "BAO_ADDR"])
@pytest.mark.parametrize("url", BAD_ADDRESSES, ids=lambda url: url.replace(PASSWORD, "PASSWORD"))
def test_bad_address_in_the_environment_names_the_variable(
    url: str, variable: str, vault_env: pytest.MonkeyPatch
) -> None:
    vault_env.setenv(variable, url)
    with pytest.raises(ConfigurationError) as info:
        VaultProvider("scaling/api", auth=TokenAuth("s.x"))
    message = str(info.value)
    assert_no_secret(PASSWORD, message, repr(info.value))
    assert variable in message


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://127.0.0.1:8200", False),
        ("http://[::1]:8200", False),
        ("http://[::ffff:127.0.0.1]:8200", False),
        ("http://LOCALHOST:8200", False),
        ("http://localhost.:8200", True),  # resolved through DNS
        ("http://vault.example.com:8200", True),
        ("https://vault.example.com:8200", False),
    ],
)
def test_plain_http_is_quiet_only_to_a_loopback_address(
    vault_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, url: str, warned: bool
) -> None:
    # The same loopback rule as the core's (toolkit.is_loopback), IPv4-mapped and any
    # case of localhost included.
    with caplog.at_level("WARNING", logger="scaling_credentials"):
        settings_for(url=url)
    assert any("plain http" in r.getMessage() for r in caplog.records) is warned
