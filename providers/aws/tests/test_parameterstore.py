"""ParameterStoreProvider against real GetParameter answers: moto over HTTP, and a
scripted endpoint for the error codes moto cannot produce; the Lambda extension
provider's ssm: sources against the extension stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from scaling_credentials import (
    ConfigurationError,
    InvalidKeyFormatError,
    KeyCache,
    ProviderError,
    ScalingAuth,
    SecretNotFoundError,
    provider_from_uri,
)
from scaling_credentials.testing import FakeScalingAPI, rotate_and_revoke, run_rotation_threads
from scaling_credentials.testing.provider_suite import (
    assert_key_is,
    assert_no_secret,
    assert_no_secret_in_error,
    good_value,
)
from scaling_credentials_aws import LambdaExtensionProvider, ParameterStoreProvider
from scaling_credentials_aws._values import key_from_parameter

KEY_A = good_value("alpha")
KEY_B = good_value("bravo")
KEY_C = good_value("charlie")


def put(ssm: Any, name: str, value: str, kind: str = "SecureString", **options: Any) -> str:
    """Create or overwrite ``name``; its new version (a str)."""
    answer = ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True, **options)
    return str(answer["Version"])


# ---------------------------------------------------------------------- values and versions


@pytest.mark.parametrize("kind", ["SecureString", "String"])
def test_a_parameter_is_read_decrypted_with_its_version(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str, kind: str
) -> None:
    version = put(ssm, parameter_name, KEY_A, kind)
    key = parameter_store(parameter_name).fetch()
    assert_key_is(key, KEY_A)
    assert (key.version, key.source) == (version, f"aws-ssm:{parameter_name}")


def test_each_fetch_reads_the_latest_version(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    provider = parameter_store(parameter_name)
    assert put(ssm, parameter_name, KEY_A) == "1"
    assert provider.fetch().version == "1"
    assert put(ssm, parameter_name, KEY_B) == "2"
    key = provider.fetch()
    assert_key_is(key, KEY_B)
    assert key.version == "2"
    pinned = parameter_store(f"{parameter_name}:1").fetch()  # NAME:VERSION pins a version
    assert_key_is(pinned, KEY_A)
    assert pinned.version == "1"


def test_a_json_field(parameter_store: Callable[..., Any], ssm: Any, parameter_name: str) -> None:
    put(ssm, parameter_name, json.dumps({"api_key": KEY_A, "owner": "ops"}))
    key = parameter_store(parameter_name, field="api_key").fetch()
    assert_key_is(key, KEY_A)
    assert key.source == f"aws-ssm:{parameter_name}?field=api_key"


def test_a_value_that_is_no_key_is_never_quoted(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    put(ssm, parameter_name, "sk_live_LEAKCHECK0123456789")
    with pytest.raises(InvalidKeyFormatError) as info:
        parameter_store(parameter_name).fetch()
    assert_no_secret("LEAKCHECK", str(info.value), repr(info.value))


def test_a_missing_parameter_or_version_is_secret_not_found(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    with pytest.raises(SecretNotFoundError, match="Parameter Store has no parameter") as info:
        parameter_store(parameter_name).fetch()
    assert info.value.provider == f"aws-ssm:{parameter_name}"
    put(ssm, parameter_name, KEY_A)
    with pytest.raises(SecretNotFoundError, match=":version or :label"):
        parameter_store(f"{parameter_name}:7").fetch()


def test_region_comes_from_an_arn(
    ssm: Any,
    moto_endpoint: str,
    parameter_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(ssm, parameter_name, KEY_A)
    arn = f"arn:aws:ssm:us-east-1:123456789012:parameter{parameter_name}"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    provider = ParameterStoreProvider(arn, endpoint_url=moto_endpoint)
    assert provider._region_from_arn() == "us-east-1"
    with pytest.raises(ProviderError) as info:  # no region at all: says how to set one
        ParameterStoreProvider(parameter_name, endpoint_url=moto_endpoint).fetch()
    assert "?region=... to the aws-ssm: URI" in str(info.value)


# ---------------------------------------------------------------------- scripted AWS errors


def _error(endpoint: str, **options: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        ParameterStoreProvider(
            "/prod/scaling/api-key",
            endpoint_url=endpoint,
            session=boto3.session.Session(
                region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
            ),
            **options,
        ).fetch()
    return info.value


def test_it_asks_for_decryption_and_access_denied_names_the_actions(scripted_sm: Any) -> None:
    scripted_sm.script(
        scripted_sm.error(
            400,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/app/i-0 is not authorized to "
            "perform: ssm:GetParameter on resource: /prod/scaling/api-key",
        )
    )
    error = _error(scripted_sm.endpoint)
    assert type(error) is ProviderError
    message = str(error)
    assert "ssm:GetParameter" in message and "kms:Decrypt" in message
    assert "assumed-role/app" in message
    assert scripted_sm.received == [{"Name": "/prod/scaling/api-key", "WithDecryption": True}]


def test_a_kms_key_problem_names_kms_decrypt(scripted_sm: Any) -> None:
    scripted_sm.script(scripted_sm.error(400, "InvalidKeyId", "the key is disabled"))
    message = str(_error(scripted_sm.endpoint))
    assert "kms:Decrypt" in message and "enabled" in message


def test_throttling_is_retried_then_reported(scripted_sm: Any) -> None:
    scripted_sm.script(scripted_sm.error(400, "ThrottlingException", "Rate exceeded"))
    message = str(_error(scripted_sm.endpoint, max_attempts=2))
    assert "Parameter Store throttled GetParameter" in message and "after 2 attempts" in message
    assert len(scripted_sm.received) == 2


def test_a_parameter_without_a_value_is_no_key(scripted_sm: Any) -> None:
    scripted_sm.script((200, {"Parameter": {"Name": "/prod/scaling/api-key", "Version": 1}}))
    with pytest.raises(InvalidKeyFormatError, match="no value"):
        _error(scripted_sm.endpoint)


# ---------------------------------------------------------------------- configuration


def test_uri_parameters() -> None:
    provider = provider_from_uri("aws-ssm:/prod/scaling/api-key?field=api_key&region=eu-west-1")
    assert isinstance(provider, ParameterStoreProvider)
    assert (provider.name, provider.field, provider.region_name) == (
        "/prod/scaling/api-key",
        "api_key",
        "eu-west-1",
    )
    assert provider.describe() == "aws-ssm:/prod/scaling/api-key?field=api_key&region=eu-west-1"
    with pytest.raises(ConfigurationError, match="unknown parameter"):
        provider_from_uri("aws-ssm:/prod/x?stage=AWSCURRENT")
    with pytest.raises(ConfigurationError, match="parameter name or ARN"):
        provider_from_uri("aws-ssm:")


def test_bad_arguments_are_configuration_errors(boto_session: boto3.session.Session) -> None:
    with pytest.raises(ConfigurationError, match="looks like an API key") as info:
        ParameterStoreProvider(KEY_A)
    assert_no_secret(KEY_A, str(info.value))
    with pytest.raises(ConfigurationError, match="either client"):
        ParameterStoreProvider("/x", client=object(), session=boto_session)
    with pytest.raises(ConfigurationError, match="max_attempts"):
        ParameterStoreProvider("/x", max_attempts=0)


# ---------------------------------------------------------------------- rotation under load


def _rotation(api: FakeScalingAPI, ssm: Any, name: str) -> Callable[[int], None]:
    """A first key in the parameter, and the runbook's rotation: a new key, a new
    version of the parameter, the old key revoked."""
    live = [api.issue_key()]
    put(ssm, name, live[0])

    def rotate(_: int) -> None:
        live.append(rotate_and_revoke(api, lambda new: put(ssm, name, new), live[-1]))

    return rotate


def test_rotation_under_threads_fails_no_request(
    api: FakeScalingAPI, parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    rotate = _rotation(api, ssm, parameter_name)
    provider = parameter_store(parameter_name)
    cache = KeyCache(provider, min_refresh_interval=0)
    run = run_rotation_threads(api, ScalingAuth(cache), rotate)
    assert run.failed == 0 and run.retried >= 1
    assert cache.peek() is not None and cache.peek() == provider.fetch()
    assert provider.fetch().version == "4"  # three rotations after the first version


# ---------------------------------------------------------------------- one reading of an answer


def _read_parameter_answer(
    via: str, document: dict[str, Any], scripted_sm: Any, fake_extension: Callable[..., Any]
) -> Any:
    """The key both providers make of the same GetParameter answer ``document``."""
    if via == "aws-ssm":
        scripted_sm.script((200, document))
        return ParameterStoreProvider(
            "/prod/x",
            endpoint_url=scripted_sm.endpoint,
            session=boto3.session.Session(
                region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
            ),
            max_attempts=1,
        ).fetch()
    extension = fake_extension(scripted=[(200, json.dumps(document).encode())])
    return LambdaExtensionProvider("ssm:/prod/x", port=extension.port).fetch()


@pytest.mark.parametrize("via", ["aws-ssm", "aws-lambda-extension"])
@pytest.mark.parametrize(
    ("version", "expected"), [(4, "4"), ("4", None), (True, None), (None, None), ("x", None)]
)
def test_both_providers_read_a_parameters_version_alike(
    scripted_sm: Any,
    fake_extension: Callable[..., Any],
    via: str,
    version: Any,
    expected: str | None,
) -> None:
    parameter: dict[str, Any] = {"Name": "/prod/x", "Value": KEY_A, "Type": "SecureString"}
    if version is not None:
        parameter["Version"] = version
    key = _read_parameter_answer(via, {"Parameter": parameter}, scripted_sm, fake_extension)
    assert_key_is(key, KEY_A)
    assert key.version == expected  # only an integer is a parameter's version


@pytest.mark.parametrize("via", ["aws-ssm", "aws-lambda-extension"])
@pytest.mark.parametrize(
    "document",
    [{"Parameter": {"Name": "/prod/x", "Version": 1}}, {"Parameter": {"Value": 5}}, {}],
)
def test_both_providers_refuse_an_answer_without_a_value_alike(
    scripted_sm: Any, fake_extension: Callable[..., Any], via: str, document: dict[str, Any]
) -> None:
    with pytest.raises(InvalidKeyFormatError, match=r"no Parameter\.Value string"):
        _read_parameter_answer(via, document, scripted_sm, fake_extension)


def test_key_from_parameter_reads_a_field_and_never_quotes_the_value() -> None:
    secret = "not-a-key-but-secret-all-the-same"
    key = key_from_parameter(
        {"Value": json.dumps({"api_key": KEY_A}), "Version": 2}, field="api_key", source="s:x"
    )
    assert_key_is(key, KEY_A)
    assert (key.version, key.source) == ("2", "s:x")
    with pytest.raises(InvalidKeyFormatError) as info:
        key_from_parameter({"Value": secret, "Version": 2}, field=None, source="s:x")
    assert_no_secret_in_error(secret, info.value)


# ---------------------------------------------------------------------- through the extension


@pytest.fixture
def extension(fake_extension: Callable[..., Any]) -> Any:
    return fake_extension()


def test_the_extension_reads_a_parameter_with_decryption(
    drive: Any, extension: Any, ssm: Any, parameter_name: str
) -> None:
    version = put(ssm, parameter_name, json.dumps({"api_key": KEY_A}))
    provider = LambdaExtensionProvider(
        f"ssm:{parameter_name}", field="api_key", port=extension.port
    )
    key = drive.fetch(provider)
    assert_key_is(key, KEY_A)
    assert key.version == version
    assert key.source == (
        f"aws-lambda-extension:ssm:{parameter_name}?field=api_key&port={extension.port}"
    )
    (request,) = extension.requests
    assert request.path == "/systemsmanager/parameters/get"
    assert request.params == {"name": parameter_name, "withDecryption": "true"}


def test_a_missing_parameter_through_the_extension_is_secret_not_found(
    drive: Any, extension: Any, parameter_name: str
) -> None:
    provider = LambdaExtensionProvider(f"ssm:{parameter_name}", port=extension.port)
    with pytest.raises(SecretNotFoundError, match="Parameter Store has no parameter"):
        drive.fetch(provider)


@pytest.mark.parametrize(
    "body", [b'{"Parameter": {"Name": "x"}}', b'{"Parameter": "x"}', b'{"Name": "x"}']
)
def test_an_extension_answer_without_a_value_is_no_key(
    fake_extension: Callable[..., Any], body: bytes
) -> None:
    extension = fake_extension(scripted=[(200, body)])
    with pytest.raises(InvalidKeyFormatError, match=r"no Parameter\.Value"):
        LambdaExtensionProvider("ssm:/x", port=extension.port).fetch()


def test_after_a_rejection_the_extension_path_reads_parameter_store_directly(
    drive: Any,
    extension: Any,
    ssm: Any,
    parameter_name: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_endpoint)
    put(ssm, parameter_name, KEY_A)
    provider = LambdaExtensionProvider(f"ssm:{parameter_name}", port=extension.port)
    old = drive.fetch(provider)
    put(ssm, parameter_name, KEY_B)
    assert drive.fetch(provider) == old  # the extension's cache still holds it
    fresh = drive.refetch(provider, old)
    assert_key_is(fresh, KEY_B)
    assert (fresh.version, fresh.source) == ("2", f"aws-ssm:{parameter_name}")
    # No refreshNow for parameters: none is documented.
    assert all("refreshNow" not in r.params for r in extension.requests)


def test_rotation_through_the_extension_under_threads_fails_no_request(
    api: FakeScalingAPI,
    extension: Any,
    ssm: Any,
    parameter_name: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_endpoint)
    rotate = _rotation(api, ssm, parameter_name)
    provider = LambdaExtensionProvider(f"ssm:{parameter_name}", port=extension.port)
    cache = KeyCache(provider, min_refresh_interval=0)
    run = run_rotation_threads(api, ScalingAuth(cache), rotate)
    assert run.failed == 0 and run.retried >= 1


@pytest.mark.parametrize(
    "options",
    [{"version_stage": "AWSPREVIOUS"}, {"version_id": "v1"}, {"pending_fallback": True}],
)
def test_secret_only_options_are_refused_for_a_parameter(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="apply to secrets"):
        LambdaExtensionProvider("ssm:/prod/x", **options)


@pytest.mark.parametrize("off", [False, "false", "0", "no", " Off "])
def test_pending_fallback_turned_off_is_accepted_for_a_parameter(off: Any) -> None:
    # The flag is read as flag() reads it: the string "false" is off, not a truthy value.
    provider = LambdaExtensionProvider("ssm:/prod/x", pending_fallback=off)
    assert provider.pending_fallback is False
    assert provider.describe() == "aws-lambda-extension:ssm:/prod/x"


@pytest.mark.parametrize("on", [True, "true", "1", "yes"])
def test_pending_fallback_turned_on_is_refused_for_a_parameter(on: Any) -> None:
    with pytest.raises(ConfigurationError, match="apply to secrets"):
        LambdaExtensionProvider("ssm:/prod/x", pending_fallback=on)
    with pytest.raises(ConfigurationError):
        provider_from_uri(f"aws-lambda-extension:ssm:/prod/x?pending_fallback={on}")


def test_extension_uri_for_a_parameter() -> None:
    provider = provider_from_uri("aws-lambda-extension:ssm:/prod/scaling/api-key?field=k")
    assert isinstance(provider, LambdaExtensionProvider)
    assert (provider.parameter, provider.field) == ("/prod/scaling/api-key", "k")
    assert provider.describe() == "aws-lambda-extension:ssm:/prod/scaling/api-key?field=k"
    with pytest.raises(ConfigurationError, match="parameter name after ssm:"):
        provider_from_uri("aws-lambda-extension:ssm:")
    with pytest.raises(ConfigurationError, match=r"unknown parameter.*accepted: field, port"):
        provider_from_uri("aws-lambda-extension:ssm:/x?stage=AWSCURRENT")
