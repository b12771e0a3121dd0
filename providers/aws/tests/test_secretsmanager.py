"""SecretsManagerProvider against real GetSecretValue answers: moto over HTTP, and a
scripted endpoint for the error codes moto cannot produce."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    InvalidKeyFormatError,
    ProviderError,
    SecretNotFoundError,
    provider_from_uri,
)
from scaling_credentials.testing import free_port, run_in_threads, wait_child
from scaling_credentials.testing.provider_suite import (
    assert_equal_masked,
    assert_key_is,
    assert_no_secret,
    good_value,
)
from scaling_credentials_aws import LambdaExtensionProvider, SecretsManagerProvider

KEY_A = good_value("alpha")
KEY_B = good_value("bravo")
KEY_C = good_value("charlie")


_SESSIONS: list[boto3.session.Session] = []


def _provider(name: str, endpoint: str, **options: Any) -> SecretsManagerProvider:
    """A provider on ``endpoint`` with fake credentials; its boto3 session is shared, as
    building one costs a tenth of a second (tests of the default chain build their own)."""
    if not _SESSIONS:
        _SESSIONS.append(
            boto3.session.Session(
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        )
    options.setdefault("session", _SESSIONS[0])
    return SecretsManagerProvider(name, endpoint_url=endpoint, **options)


# ---------------------------------------------------------------------- values and versions


def test_secret_binary_is_read_as_utf8(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    version = put(sm, secret_name, SecretBinary=KEY_A.encode())
    key = _provider(secret_name, moto_endpoint).fetch()
    assert_key_is(key, KEY_A)
    assert key.version == version


def test_secret_binary_json_field(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretBinary=json.dumps({"api_key": KEY_A}).encode())
    assert_key_is(_provider(secret_name, moto_endpoint, field="api_key").fetch(), KEY_A)


def test_secret_binary_that_is_not_utf8_gives_a_typed_error_without_bytes(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretBinary=b"scl_live_\xff\xfeLEAKCHECK")
    with pytest.raises(InvalidKeyFormatError, match="not UTF-8") as info:
        _provider(secret_name, moto_endpoint).fetch()
    assert info.value.__cause__ is None
    assert_no_secret("LEAKCHECK", str(info.value), repr(info.value))


def test_json_field_missing_names_the_fields_not_the_values(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=json.dumps({"key": KEY_A}))
    with pytest.raises(InvalidKeyFormatError, match="no field 'api_key'") as info:
        _provider(secret_name, moto_endpoint, field="api_key").fetch()
    assert_no_secret(KEY_A, str(info.value))


def test_version_is_the_version_id_and_each_fetch_reads_awscurrent_afresh(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    provider = _provider(secret_name, moto_endpoint)
    first = put(sm, secret_name, SecretString=KEY_A)
    key = provider.fetch()
    assert (key, key.version) == (ApiKey(KEY_A), first)
    second = put(sm, secret_name, SecretString=KEY_B)  # moves AWSCURRENT
    key = provider.fetch()
    assert (key, key.version) == (ApiKey(KEY_B), second)
    assert provider.request_params() == {"SecretId": secret_name, "VersionStage": "AWSCURRENT"}


def test_version_stage_and_version_id_select_a_version(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    first = put(sm, secret_name, SecretString=KEY_A)
    put(sm, secret_name, SecretString=KEY_B)
    pending = sm.put_secret_value(
        SecretId=secret_name, SecretString=KEY_C, VersionStages=["AWSPENDING"]
    )["VersionId"]

    assert_key_is(_provider(secret_name, moto_endpoint).fetch(), KEY_B)
    previous = _provider(secret_name, moto_endpoint, version_stage="AWSPREVIOUS").fetch()
    assert (previous, previous.version) == (ApiKey(KEY_A), first)
    staged = _provider(secret_name, moto_endpoint, version_stage="AWSPENDING").fetch()
    assert (staged, staged.version) == (ApiKey(KEY_C), pending)
    by_id = _provider(secret_name, moto_endpoint, version_id=first)
    assert by_id.request_params() == {"SecretId": secret_name, "VersionId": first}
    assert_key_is(by_id.fetch(), KEY_A)


def test_missing_stage_or_version_is_secret_not_found(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    with pytest.raises(SecretNotFoundError, match="version stage or id"):
        _provider(secret_name, moto_endpoint, version_stage="AWSPENDING").fetch()
    with pytest.raises(SecretNotFoundError):
        _provider(secret_name, moto_endpoint, version_id="0" * 32 + "-0000").fetch()


def test_deleted_secret_is_secret_not_found_with_a_restore_hint(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    sm.delete_secret(SecretId=secret_name, RecoveryWindowInDays=7)
    with pytest.raises(SecretNotFoundError, match="marked for deletion") as info:
        _provider(secret_name, moto_endpoint).fetch()
    assert "restore-secret" in str(info.value)
    assert info.value.provider == f"aws-sm:{secret_name}"


# ---------------------------------------------------------------------- environment problems


def test_region_comes_from_an_arn(
    sm: Any,
    moto_endpoint: str,
    secret_name: str,
    put: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    arn = sm.describe_secret(SecretId=secret_name)["ARN"]
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    provider = SecretsManagerProvider(arn, endpoint_url=moto_endpoint)
    assert_key_is(provider.fetch(), KEY_A)


def test_no_region_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ProviderError, match="no AWS region") as info:
        SecretsManagerProvider("prod/scaling", endpoint_url=moto_endpoint).fetch()
    assert "AWS_REGION" in str(info.value) and "?region=" in str(info.value)


def test_no_credentials_explains_the_chain(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(ProviderError, match="no AWS credentials") as info:
        SecretsManagerProvider("prod/scaling", endpoint_url=moto_endpoint).fetch()
    assert "IRSA" in str(info.value) and "Pod Identity" in str(info.value)


def test_unreachable_endpoint_is_a_provider_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    provider = _provider("prod/scaling", endpoint, max_attempts=1, connect_timeout=1)
    with pytest.raises(ProviderError, match="cannot reach Secrets Manager after 1 attempt"):
        provider.fetch()


# ---------------------------------------------------------------------- scripted AWS errors


def _fetch_error(endpoint: str, **options: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        _provider("prod/scaling", endpoint, **options).fetch()
    return info.value


def test_access_denied_names_the_actions_needed(scripted_sm: Any) -> None:
    scripted_sm.script(
        scripted_sm.error(
            400,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/app/i-0 is not authorized to "
            "perform: secretsmanager:GetSecretValue on resource: prod/scaling",
        )
    )
    error = _fetch_error(scripted_sm.endpoint)
    assert type(error) is ProviderError
    message = str(error)
    assert "secretsmanager:GetSecretValue" in message and "kms:Decrypt" in message
    assert "assumed-role/app" in message  # AWS's own words help find the principal
    assert scripted_sm.received == [{"SecretId": "prod/scaling", "VersionStage": "AWSCURRENT"}]


def test_kms_access_denied_and_decryption_failure_name_kms_decrypt(scripted_sm: Any) -> None:
    scripted_sm.script(
        scripted_sm.error(400, "DecryptionFailure", "KMS could not decrypt: access denied")
    )
    assert "kms:Decrypt" in str(_fetch_error(scripted_sm.endpoint))
    scripted_sm.script(
        scripted_sm.error(400, "AccessDeniedException", "Access to KMS is not allowed")
    )
    assert "kms:Decrypt" in str(_fetch_error(scripted_sm.endpoint))


def test_throttling_is_retried_then_reported_with_the_attempts(scripted_sm: Any) -> None:
    scripted_sm.script(scripted_sm.error(400, "ThrottlingException", "Rate exceeded"))
    error = _fetch_error(scripted_sm.endpoint, max_attempts=2)
    assert "throttled" in str(error) and "after 2 attempts" in str(error)
    assert len(scripted_sm.received) == 2  # bounded: exactly max_attempts requests


def test_transient_internal_error_is_retried_to_success(scripted_sm: Any) -> None:
    scripted_sm.script(
        scripted_sm.error(500, "InternalServiceError", "try again"),
        (200, {"Name": "prod/scaling", "VersionId": "v-2", "SecretString": KEY_A}),
    )
    key = _provider("prod/scaling", scripted_sm.endpoint, max_attempts=2).fetch()
    assert (key, key.version) == (ApiKey(KEY_A), "v-2")


@pytest.mark.parametrize(
    "code", ["UnrecognizedClientException", "ExpiredTokenException", "InvalidSignatureException"]
)
def test_rejected_credentials_say_so(scripted_sm: Any, code: str) -> None:
    scripted_sm.script(scripted_sm.error(400, code, "The security token is invalid."))
    error = _fetch_error(scripted_sm.endpoint)
    assert "credentials were rejected" in str(error) and code in str(error)


def test_a_secret_with_neither_string_nor_binary_is_no_key(scripted_sm: Any) -> None:
    scripted_sm.script((200, {"Name": "prod/scaling", "VersionId": "v-1"}))
    with pytest.raises(InvalidKeyFormatError, match="neither SecretString nor SecretBinary"):
        _provider("prod/scaling", scripted_sm.endpoint).fetch()


# ---------------------------------------------------------------------- configuration and URIs


def test_uri_parameters(moto_endpoint: str) -> None:
    provider = provider_from_uri(
        "aws-sm:prod/scaling?field=api_key&region=eu-west-1&stage=AWSPREVIOUS"
    )
    assert isinstance(provider, SecretsManagerProvider)
    assert (provider.secret_id, provider.field) == ("prod/scaling", "api_key")
    assert (provider.region_name, provider.version_stage) == ("eu-west-1", "AWSPREVIOUS")
    assert provider.describe() == (
        "aws-sm:prod/scaling?field=api_key&region=eu-west-1&stage=AWSPREVIOUS"
    )
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/scaling-AbCdEf"
    plain = provider_from_uri(f"aws-sm:{arn}")
    assert isinstance(plain, SecretsManagerProvider)
    assert (plain.secret_id, plain.describe()) == (arn, f"aws-sm:{arn}")
    by_id = provider_from_uri("aws-sm:prod/scaling?version_id=abc")
    assert isinstance(by_id, SecretsManagerProvider) and by_id.version_id == "abc"
    extension = provider_from_uri("aws-lambda-extension:prod/scaling?field=api_key&stage=S")
    assert isinstance(extension, LambdaExtensionProvider)
    assert (extension.field, extension.version_stage) == ("api_key", "S")


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("aws-sm:prod/scaling?regoin=eu-west-1", "unknown parameter"),
        ("aws-sm:", "secret name or ARN"),
        ("aws-lambda-extension:x?port=http", "TCP port"),
        ("aws-lambda-extension:x?region=eu-west-1", "unknown parameter"),
    ],
)
def test_bad_uris_are_configuration_errors(uri: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        provider_from_uri(uri)


def test_bad_arguments_are_configuration_errors(boto_session: boto3.session.Session) -> None:
    with pytest.raises(ConfigurationError, match="secret_id"):
        SecretsManagerProvider("  ")
    with pytest.raises(ConfigurationError, match="looks like an API key") as info:
        SecretsManagerProvider(KEY_A)
    assert_no_secret(KEY_A, str(info.value))
    with pytest.raises(ConfigurationError, match="either client"):
        SecretsManagerProvider("x", client=object(), session=boto_session)
    with pytest.raises(ConfigurationError, match="max_attempts"):
        SecretsManagerProvider("x", max_attempts=0)
    with pytest.raises(ConfigurationError, match="read_timeout"):
        SecretsManagerProvider("x", read_timeout=0)


def test_client_config_bounds_retries_and_timeouts(moto_endpoint: str) -> None:
    provider = _provider("x", moto_endpoint, max_attempts=4, connect_timeout=1.5, read_timeout=2)
    config = provider._get_client().meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (1.5, 2.0)
    assert "scaling-credentials-aws" in config.user_agent_extra


# ---------------------------------------------------------------------- the client's life


class _CountingClients(SecretsManagerProvider):
    made = 0

    def _make_client(self) -> Any:
        type(self).made += 1
        time.sleep(0.01)  # widen the window in which a second creation could slip in
        return super()._make_client()


def test_one_client_is_created_and_shared_by_threads(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    provider = _CountingClients(secret_name, endpoint_url=moto_endpoint)
    results = run_in_threads(lambda: provider.fetch().reveal(), threads=8)
    assert_equal_masked(results, [KEY_A] * 8)
    assert _CountingClients.made == 1
    provider.fetch()
    assert _CountingClients.made == 1


def test_a_given_client_is_used_as_is(sm: Any, secret_name: str, put: Callable[..., str]) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    provider = SecretsManagerProvider(secret_name, client=sm)
    assert_key_is(provider.fetch(), KEY_A)
    assert provider._get_client() is sm


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_client(
    sm: Any, moto_endpoint: str, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    provider = _provider(secret_name, moto_endpoint)
    provider.fetch()
    parent_client = provider._get_client()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        try:
            reused = provider._client.peek() is parent_client
            ok = provider.fetch().reveal() == KEY_A
            fresh = provider._get_client() is not parent_client
            os.write(write_end, json.dumps([reused, ok, fresh]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    wait_child(pid, 30)  # its exit code says nothing: the child always leaves with 0
    with os.fdopen(read_end, "rb") as pipe:
        reused, ok, fresh = json.loads(pipe.read())
    assert (reused, ok, fresh) == (False, True, True)
    assert provider._get_client() is parent_client  # the parent keeps its own
