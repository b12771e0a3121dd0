"""LambdaExtensionProvider against a local server that follows the extension's protocol
(see conftest.FakeExtension), reading from moto."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from scaling_credentials import (
    ConfigurationError,
    InvalidKeyFormatError,
    ProviderError,
)
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret, good_value
from scaling_credentials_aws import LambdaExtensionProvider

KEY_A = good_value("alpha")
KEY_B = good_value("bravo")


@pytest.fixture
def extension(fake_extension: Callable[..., Any]) -> Any:
    return fake_extension()


def _get(extension: Any, query: str, headers: dict[str, str] | None = None) -> httpx.Response:
    url = f"http://127.0.0.1:{extension.port}/secretsmanager/get?{query}"
    return httpx.get(url, headers=headers or {}, trust_env=False)


# ---------------------------------------------------------------------- the stand-in itself


def test_the_stand_in_follows_the_documented_protocol(
    extension: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    version = put(sm, secret_name, SecretString=KEY_A)
    assert _get(extension, f"secretId={secret_name}").status_code == 400  # no token
    wrong = {"X-Aws-Parameters-Secrets-Token": "nope"}
    assert _get(extension, f"secretId={secret_name}", wrong).status_code == 403
    good = {"X-Aws-Parameters-Secrets-Token": extension.token}
    answer = _get(extension, f"secretId={secret_name}", good).json()
    assert answer["SecretString"] == KEY_A and answer["VersionId"] == version
    assert answer["VersionStages"] == ["AWSCURRENT"] and answer["Name"] == secret_name


# ---------------------------------------------------------------------- requests and answers


def test_request_carries_token_stage_and_version(
    extension: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    first = put(sm, secret_name, SecretString=KEY_A)
    put(sm, secret_name, SecretString=KEY_B)
    previous = LambdaExtensionProvider(
        secret_name, version_stage="AWSPREVIOUS", port=extension.port
    ).fetch()
    assert_key_is(previous, KEY_A)
    assert previous.version == first
    by_id = LambdaExtensionProvider(secret_name, version_id=first, port=extension.port).fetch()
    assert_key_is(by_id, KEY_A)
    params = [r.params for r in extension.requests]
    assert params == [
        {"secretId": secret_name, "versionStage": "AWSPREVIOUS"},
        {"secretId": secret_name, "versionId": first},
    ]
    assert {r.token for r in extension.requests} == {extension.token}


def test_secret_binary_arrives_base64_encoded(
    extension: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretBinary=KEY_A.encode())
    assert_key_is(LambdaExtensionProvider(secret_name, port=extension.port).fetch(), KEY_A)


def test_a_secret_name_with_slashes_and_an_arn_are_encoded(
    extension: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    arn = sm.describe_secret(SecretId=secret_name)["ARN"]
    assert_key_is(LambdaExtensionProvider(arn, port=extension.port).fetch(), KEY_A)
    assert extension.requests[-1].params["secretId"] == arn


def test_without_a_session_token_nothing_is_sent(
    extension: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    with pytest.raises(ProviderError, match="AWS_SESSION_TOKEN is not set"):
        LambdaExtensionProvider("x", port=extension.port).fetch()
    assert extension.requests == []


def test_snapstart_token_variable_is_used(
    extension: Any, sm: Any, secret_name: str, put: Callable[..., str], monkeypatch: Any
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", extension.token)
    assert_key_is(LambdaExtensionProvider(secret_name, port=extension.port).fetch(), KEY_A)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"Name": "x"}', "neither SecretString"),
        (b'{"SecretString": 42}', "SecretString is not a string"),
        (b'{"SecretBinary": "!!notbase64"}', "not base64"),
    ],
)
def test_answers_without_a_usable_value_are_invalid_key_format(
    fake_extension: Callable[..., Any], body: bytes, match: str
) -> None:
    extension = fake_extension(scripted=[(200, body)])
    with pytest.raises(InvalidKeyFormatError, match=match):
        LambdaExtensionProvider("x", port=extension.port).fetch()


def test_an_answer_holding_a_bad_value_never_quotes_it(
    fake_extension: Callable[..., Any],
) -> None:
    secret = "LEAKCHECK-extension-0123456789"
    body = json.dumps({"SecretString": f"sk_live_{secret}", "VersionId": "v"}).encode()
    binary = json.dumps({"SecretBinary": base64.b64encode(b"\xff" + secret.encode()).decode()})
    extension = fake_extension(scripted=[(200, body), (200, binary.encode())])
    provider = LambdaExtensionProvider("x", port=extension.port)
    for _ in range(2):
        with pytest.raises(InvalidKeyFormatError) as info:
            provider.fetch()
        assert_no_secret(secret, str(info.value), repr(info.value))


# ---------------------------------------------------------------------- after a rejection


def test_refresh_now_ignored_falls_back_to_a_direct_read(
    drive: Any,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    extension = fake_extension(honour_refresh_now=False)
    put(sm, secret_name, SecretString=KEY_A)
    provider = LambdaExtensionProvider(secret_name, port=extension.port)
    old = provider.fetch()
    version = put(sm, secret_name, SecretString=KEY_B)
    fresh = drive.refetch(provider, old)
    assert_key_is(fresh, KEY_B)
    assert fresh.version == version
    assert fresh.source == f"aws-sm:{secret_name}"  # it says where it really came from
    assert provider.fetch() == old  # later fetches go through the extension again


def test_a_400_to_refresh_now_then_the_rejected_key_goes_direct(
    drive: Any,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    put(sm, secret_name, SecretString=KEY_A)
    extension = fake_extension()
    provider = LambdaExtensionProvider(secret_name, port=extension.port)
    rejected = provider.fetch()
    put(sm, secret_name, SecretString=KEY_B)
    extension.scripted.append((400, b"unknown query parameter refreshNow"))
    # The extension refused refreshNow: the provider asks again without it, gets the
    # cached (rejected) key, and reads Secrets Manager directly.
    assert_key_is(drive.refetch(provider, rejected), KEY_B)
    assert [r.params.get("refreshNow") for r in extension.requests][-2:] == ["true", None]


def test_without_boto3_a_stale_extension_answer_is_returned_with_a_warning(
    drive: Any,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "boto3" else real_find_spec(name, *a),
    )
    extension = fake_extension(honour_refresh_now=False)
    put(sm, secret_name, SecretString=KEY_A)
    provider = LambdaExtensionProvider(secret_name, port=extension.port)
    old = provider.fetch()
    with caplog.at_level("WARNING", logger="scaling_credentials.aws"):
        assert drive.refetch(provider, old) == old
    assert "boto3 is not installed" in caplog.text
    assert_no_secret(KEY_A, caplog.text)


# ---------------------------------------------------------------------- configuration


def test_port_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LambdaExtensionProvider("x").port == 2773
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2999")
    provider = LambdaExtensionProvider("x")
    assert (provider.port, provider.url) == (2999, "http://localhost:2999")
    assert provider.describe() == "aws-lambda-extension:x?port=2999"
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "99999")
    with pytest.raises(ConfigurationError, match="PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"):
        LambdaExtensionProvider("x")


def test_bad_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="secret_id"):
        LambdaExtensionProvider("")
    with pytest.raises(ConfigurationError, match="looks like an API key") as info:
        LambdaExtensionProvider(KEY_A)
    assert_no_secret(KEY_A, str(info.value))
    with pytest.raises(ConfigurationError, match="port"):
        LambdaExtensionProvider("x", port=0)
    with pytest.raises(ConfigurationError, match="timeout"):
        LambdaExtensionProvider("x", timeout=0)


def test_importing_the_package_and_fetching_through_the_extension_never_import_boto3(
    extension: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    code = (
        "import sys\n"
        "import scaling_credentials_aws as aws\n"
        "from scaling_credentials import provider_from_uri\n"
        "aws.SecretsManagerProvider('prod/scaling'); provider_from_uri('aws-sm:prod/scaling')\n"
        "aws.ParameterStoreProvider('/prod/x'); provider_from_uri('aws-ssm:/prod/x')\n"
        "provider_from_uri('aws-lambda-extension:ssm:/prod/x')\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
        f"provider = provider_from_uri('aws-lambda-extension:{secret_name}')\n"
        f"key = aws.LambdaExtensionProvider({secret_name!r}, port={extension.port}).fetch()\n"
        f"assert key.reveal() == {KEY_A!r}\n"
        "loaded = sorted(m for m in ('boto3', 'botocore') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
