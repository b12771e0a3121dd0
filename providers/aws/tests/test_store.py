"""store(key): a new Secrets Manager version (PutSecretValue) or Parameter Store version
(PutParameter) against moto, keeping what else the source holds; errors from a scripted
endpoint for what moto cannot produce; stores under load while requests rotate with them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    InvalidKeyFormatError,
    KeyCache,
    ProviderError,
    ScalingAuth,
    SecretNotFoundError,
)
from scaling_credentials.testing import (
    FakeScalingAPI,
    rotate_and_revoke,
    run_in_threads,
    run_rotation_threads,
)
from scaling_credentials.testing.provider_suite import (
    assert_equal_masked,
    assert_key_is,
    assert_no_secret,
    good_value,
)
from scaling_credentials_aws import (
    LambdaExtensionProvider,
    ParameterStoreProvider,
    SecretsManagerProvider,
)

KEY_A = good_value("alpha")
KEY_B = good_value("bravo")
JOIN_TIMEOUT = 60.0


def stages(sm: Any, name: str) -> dict[str, list[str]]:
    return dict(sm.describe_secret(SecretId=name)["VersionIdsToStages"])


def test_which_providers_can_store() -> None:
    assert SecretsManagerProvider.can_store is True
    assert ParameterStoreProvider.can_store is True
    assert LambdaExtensionProvider.can_store is False
    with pytest.raises(ConfigurationError, match="cannot store"):
        LambdaExtensionProvider("x").store(ApiKey(KEY_A))


# ---------------------------------------------------------------------- Secrets Manager


def test_store_puts_a_new_awscurrent_version(
    secrets_manager: Callable[..., Any], sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    first = put(sm, secret_name, SecretString=KEY_A)
    provider = secrets_manager(secret_name)
    version = provider.store(ApiKey(KEY_B))
    assert version != first
    assert stages(sm, secret_name) == {first: ["AWSPREVIOUS"], version: ["AWSCURRENT"]}
    key = provider.fetch()
    assert_key_is(key, KEY_B)
    assert key.version == version
    previous = secrets_manager(secret_name, version_stage="AWSPREVIOUS").fetch()
    assert_key_is(previous, KEY_A)


def test_store_into_a_json_field_keeps_the_other_fields(
    secrets_manager: Callable[..., Any], sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=json.dumps({"api_key": KEY_A, "owner": "ops", "n": 5}))
    provider = secrets_manager(secret_name, field="api_key")
    version = provider.store(ApiKey(KEY_B))
    current = sm.get_secret_value(SecretId=secret_name)
    assert current["VersionId"] == version
    assert_equal_masked(
        json.loads(current["SecretString"]), {"api_key": KEY_B, "owner": "ops", "n": 5}
    )


def test_a_binary_json_secret_stays_binary(
    secrets_manager: Callable[..., Any], sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretBinary=json.dumps({"api_key": KEY_A, "owner": "ops"}).encode())
    provider = secrets_manager(secret_name, field="api_key")
    provider.store(ApiKey(KEY_B))
    current = sm.get_secret_value(SecretId=secret_name, VersionStage="AWSCURRENT")
    assert "SecretString" not in current
    assert_equal_masked(json.loads(current["SecretBinary"]), {"api_key": KEY_B, "owner": "ops"})
    assert_key_is(provider.fetch(), KEY_B)


def test_a_field_store_into_a_secret_that_is_not_json_writes_nothing(
    secrets_manager: Callable[..., Any], sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    first = put(sm, secret_name, SecretString=KEY_A)
    with pytest.raises(InvalidKeyFormatError, match="expected a JSON object to write") as info:
        secrets_manager(secret_name, field="api_key").store(ApiKey(KEY_B))
    assert_no_secret(KEY_A, str(info.value), repr(info.value))
    assert_no_secret(KEY_B, str(info.value), repr(info.value))
    assert stages(sm, secret_name) == {first: ["AWSCURRENT"]}


def test_a_missing_secret_says_to_create_it(
    secrets_manager: Callable[..., Any], secret_name: str
) -> None:
    with pytest.raises(SecretNotFoundError, match="create it first") as info:
        secrets_manager(secret_name).store(ApiKey(KEY_B))
    assert "aws secretsmanager create-secret" in str(info.value)


@pytest.mark.parametrize("options", [{"version_stage": "AWSPREVIOUS"}, {"version_id": "v1"}])
def test_a_source_pinned_to_another_version_cannot_store(
    secrets_manager: Callable[..., Any], options: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError, match="new AWSCURRENT version"):
        secrets_manager("prod/scaling", **options).store(ApiKey(KEY_B))


def test_store_takes_an_api_key(secrets_manager: Callable[..., Any]) -> None:
    with pytest.raises(ConfigurationError, match="takes an ApiKey, got str") as info:
        secrets_manager("prod/scaling").store(KEY_B)
    assert_no_secret(KEY_B, str(info.value))


def test_stores_log_the_masked_key_only(
    secrets_manager: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    with caplog.at_level("INFO", logger="scaling_credentials.aws"):
        version = secrets_manager(secret_name).store(ApiKey(KEY_B))
    assert f"stored {ApiKey(KEY_B).masked} as version {version}" in caplog.text
    assert_no_secret(KEY_B, caplog.text)


# ---------------------------------------------------------------------- Parameter Store


def describe(ssm: Any, name: str) -> dict[str, Any]:
    found = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
    )["Parameters"]
    return dict(found[0])


def test_store_keeps_a_secure_string_with_its_kms_key(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    ssm.put_parameter(
        Name=parameter_name, Value=KEY_A, Type="SecureString", KeyId="alias/scaling-keys"
    )
    provider = parameter_store(parameter_name)
    assert provider.store(ApiKey(KEY_B)) == "2"
    after = describe(ssm, parameter_name)
    assert (after["Type"], after["KeyId"], after["Version"]) == (
        "SecureString",
        "alias/scaling-keys",
        2,
    )
    key = provider.fetch()
    assert_key_is(key, KEY_B)
    assert key.version == "2"
    assert_key_is(parameter_store(f"{parameter_name}:1").fetch(), KEY_A)  # kept


def test_store_keeps_a_string_and_an_advanced_tier(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    ssm.put_parameter(Name=parameter_name, Value=KEY_A, Type="String", Tier="Advanced")
    assert parameter_store(parameter_name).store(ApiKey(KEY_B)) == "2"
    after = describe(ssm, parameter_name)
    assert (after["Type"], after["Tier"]) == ("String", "Advanced")
    assert_equal_masked(ssm.get_parameter(Name=parameter_name)["Parameter"]["Value"], KEY_B)


def test_store_into_a_json_field_of_a_parameter_keeps_the_other_fields(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    document = {"api_key": KEY_A, "owner": "ops"}
    ssm.put_parameter(Name=parameter_name, Value=json.dumps(document), Type="SecureString")
    provider = parameter_store(parameter_name, field="api_key")
    assert provider.store(ApiKey(KEY_B)) == "2"
    value = ssm.get_parameter(Name=parameter_name, WithDecryption=True)["Parameter"]["Value"]
    assert_equal_masked(json.loads(value), {"api_key": KEY_B, "owner": "ops"})


def test_store_through_an_arn_writes_the_named_parameter(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str
) -> None:
    ssm.put_parameter(Name=parameter_name, Value=KEY_A, Type="SecureString")
    arn = f"arn:aws:ssm:us-east-1:123456789012:parameter{parameter_name}"
    assert parameter_store(arn).store(ApiKey(KEY_B)) == "2"
    assert_key_is(parameter_store(parameter_name).fetch(), KEY_B)


def test_a_pinned_parameter_cannot_store(parameter_store: Callable[..., Any]) -> None:
    with pytest.raises(ConfigurationError, match="pinned version or label"):
        parameter_store("/prod/scaling/api-key:3").store(ApiKey(KEY_B))


@pytest.mark.parametrize("selector", ["1", "live"])
def test_a_pinned_parameter_arn_cannot_store(
    parameter_store: Callable[..., Any], ssm: Any, parameter_name: str, selector: str
) -> None:
    ssm.put_parameter(Name=parameter_name, Value=KEY_A, Type="SecureString")
    ssm.label_parameter_version(Name=parameter_name, ParameterVersion=1, Labels=["live"])
    arn = f"arn:aws:ssm:us-east-1:123456789012:parameter{parameter_name}:{selector}"
    with pytest.raises(ConfigurationError, match="pinned version or label") as info:
        parameter_store(arn).store(ApiKey(KEY_B))
    assert repr(selector) in str(info.value)
    answer = ssm.get_parameter(Name=parameter_name, WithDecryption=True)["Parameter"]
    assert answer["Version"] == 1  # nothing written
    assert_key_is(parameter_store(parameter_name).fetch(), KEY_A)


def test_a_missing_parameter_says_to_create_it(
    parameter_store: Callable[..., Any], parameter_name: str
) -> None:
    with pytest.raises(SecretNotFoundError, match="create it first") as info:
        parameter_store(parameter_name).store(ApiKey(KEY_B))
    assert "aws ssm put-parameter" in str(info.value)


# ---------------------------------------------------------------------- permissions


def _scripted(provider_type: type[Any], endpoint: str, name: str, **options: Any) -> Any:
    session = boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    return provider_type(name, endpoint_url=endpoint, session=session, max_attempts=1, **options)


def test_a_denied_put_secret_value_names_the_actions(scripted_sm: Any) -> None:
    scripted_sm.script(
        scripted_sm.error(400, "AccessDeniedException", "not authorized: PutSecretValue")
    )
    provider = _scripted(SecretsManagerProvider, scripted_sm.endpoint, "prod/scaling")
    with pytest.raises(ProviderError) as info:
        provider.store(ApiKey(KEY_B))
    message = str(info.value)
    assert "secretsmanager:PutSecretValue" in message and "kms:GenerateDataKey" in message
    assert_no_secret(KEY_B, message, repr(info.value))
    (request,) = scripted_sm.received
    assert request["SecretId"] == "prod/scaling" and "ClientRequestToken" in request


def test_a_kms_failure_on_write_names_the_kms_actions(scripted_sm: Any) -> None:
    scripted_sm.script(scripted_sm.error(400, "EncryptionFailure", "KMS key disabled"))
    provider = _scripted(SecretsManagerProvider, scripted_sm.endpoint, "prod/scaling")
    with pytest.raises(ProviderError, match="kms:GenerateDataKey"):
        provider.store(ApiKey(KEY_B))


def test_a_denied_put_parameter_names_the_actions(scripted_sm: Any) -> None:
    found = {"Parameters": [{"Name": "/prod/k", "Type": "SecureString", "KeyId": "alias/k"}]}
    scripted_sm.script(
        (200, found), scripted_sm.error(400, "AccessDeniedException", "not authorized")
    )
    provider = _scripted(ParameterStoreProvider, scripted_sm.endpoint, "/prod/k")
    with pytest.raises(ProviderError) as info:
        provider.store(ApiKey(KEY_B))
    message = str(info.value)
    assert "ssm:PutParameter" in message and "kms:Encrypt" in message
    assert_no_secret(KEY_B, message)
    put_request = scripted_sm.received[-1]
    assert (put_request["Type"], put_request["KeyId"], put_request["Overwrite"]) == (
        "SecureString",
        "alias/k",
        True,
    )


def test_a_denied_describe_parameters_says_it_takes_every_resource(scripted_sm: Any) -> None:
    scripted_sm.script(scripted_sm.error(400, "AccessDeniedException", "not authorized"))
    provider = _scripted(ParameterStoreProvider, scripted_sm.endpoint, "/prod/k")
    with pytest.raises(ProviderError) as info:
        provider.store(ApiKey(KEY_B))
    assert "ssm:DescribeParameters" in str(info.value) and '"Resource": "*"' in str(info.value)


# ---------------------------------------------------------------------- concurrency and load


def test_concurrent_stores_into_a_field_lose_nothing_and_fetches_never_fail(
    secrets_manager: Callable[..., Any], sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=json.dumps({"api_key": KEY_A, "owner": "ops"}))
    provider = secrets_manager(secret_name, field="api_key")
    new_keys = [good_value(f"store{n}") for n in range(6)]
    roles = itertools.count()  # the first threads store one key each, the others fetch

    def work() -> list[str | None]:
        role = next(roles)
        if role < len(new_keys):
            return [provider.store(ApiKey(new_keys[role]))]
        return [provider.fetch().reveal() for _ in range(20)]

    results = run_in_threads(work, threads=len(new_keys) + 2, timeout=JOIN_TIMEOUT)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, [type(e).__name__ for e in errors]
    outcomes = [r for r in results if not isinstance(r, BaseException)]
    versions = [one[0] for one in outcomes if len(one) == 1]
    seen = [value for many in outcomes if len(many) > 1 for value in many]
    assert len(set(versions)) == len(new_keys)  # one version each
    assert_equal_masked(set(seen) - {KEY_A, *new_keys}, set())  # each seen was one of them
    final = json.loads(sm.get_secret_value(SecretId=secret_name)["SecretString"])
    assert final["owner"] == "ops"
    assert_equal_masked({final["api_key"]} - set(new_keys), set())  # one of the new keys


@pytest.mark.parametrize("kind", ["aws-sm", "aws-ssm"])
def test_rotation_written_through_store_fails_no_request(
    api: FakeScalingAPI,
    secrets_manager: Callable[..., Any],
    parameter_store: Callable[..., Any],
    sm: Any,
    ssm: Any,
    secret_name: str,
    parameter_name: str,
    put: Callable[..., str],
    kind: str,
) -> None:
    first = api.issue_key()
    if kind == "aws-sm":
        put(sm, secret_name, SecretString=json.dumps({"api_key": first, "owner": "ops"}))
        provider = secrets_manager(secret_name, field="api_key")
    else:
        ssm.put_parameter(Name=parameter_name, Value=first, Type="SecureString")
        provider = parameter_store(parameter_name)
    cache = KeyCache(provider, min_refresh_interval=0)
    live = [first]
    versions: list[str | None] = []

    def rotate(_: int) -> None:
        def write(new: str) -> None:
            versions.append(provider.store(ApiKey(new)))

        live.append(rotate_and_revoke(api, write, live[-1]))

    run = run_rotation_threads(api, ScalingAuth(cache), rotate)
    assert run.failed == 0 and run.retried >= 1
    assert len(set(versions)) == 3
    key = provider.fetch()
    assert_key_is(key, live[-1])
    assert key.version == versions[-1]
