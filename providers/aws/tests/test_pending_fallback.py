"""pending_fallback: a Secrets Manager rotation left between setSecret (the old key revoked)
and finishSecret (AWSCURRENT moved), read by the boto3 provider and through the Lambda
extension stand-in, both against moto, through both drivers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from scaling_credentials import ConfigurationError, KeyCache, ScalingAuth, provider_from_uri
from scaling_credentials.testing import (
    FakeScalingAPI,
    rotate_and_revoke,
    run_rotation_tasks,
    run_rotation_threads,
)
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret, good_value
from scaling_credentials_aws import LambdaExtensionProvider, SecretsManagerProvider

KEY_A = good_value("alpha")
KEY_B = good_value("bravo")
KEY_C = good_value("charlie")


def stage_pending(sm: Any, name: str, value: str) -> str:
    """createSecret: a new version labelled AWSPENDING only; returns its VersionId."""
    answer = sm.put_secret_value(SecretId=name, SecretString=value, VersionStages=["AWSPENDING"])
    return str(answer["VersionId"])


def finish(sm: Any, name: str, version: str) -> None:
    """finishSecret: AWSCURRENT moves to ``version``; then the rotation drops AWSPENDING."""
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    current = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
    sm.update_secret_version_stage(
        SecretId=name,
        VersionStage="AWSCURRENT",
        MoveToVersionId=version,
        RemoveFromVersionId=current,
    )
    sm.update_secret_version_stage(
        SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=version
    )


@pytest.fixture(params=["aws-sm", "aws-lambda-extension"])
def make(
    request: pytest.FixtureRequest,
    moto_endpoint: str,
    boto_session: boto3.session.Session,
    fake_extension: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Any]:
    """A provider of either kind for a secret name, with the given options (the
    extension's direct reads through boto3 go to moto too)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)

    def build(name: str, **options: Any) -> Any:
        if request.param == "aws-sm":
            return SecretsManagerProvider(
                name, endpoint_url=moto_endpoint, session=boto_session, **options
            )
        extension = fake_extension()
        return LambdaExtensionProvider(name, port=extension.port, **options)

    return build


def test_a_rotation_at_the_pending_step_gives_the_pending_key_on_refetch_only(
    make: Callable[..., Any], drive: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    pending_version = stage_pending(sm, secret_name, KEY_B)
    provider = make(secret_name, pending_fallback=True)

    current = drive.fetch(provider)
    assert_key_is(current, KEY_A)  # a plain fetch never reads AWSPENDING
    assert "pending_fallback=true" in provider.describe()

    pending = drive.refetch(provider, current)
    assert_key_is(pending, KEY_B)
    assert pending.version == pending_version
    scheme = provider.describe().partition(":")[0]
    assert pending.source.startswith(f"{scheme}:{secret_name}")
    assert "stage=AWSPENDING" in pending.source
    assert "pending_fallback" not in pending.source  # the URI that reads that version

    # A rejected key that AWSCURRENT no longer holds: the current key, as always.
    assert_key_is(drive.refetch(provider, pending), KEY_A)
    assert_key_is(drive.fetch(provider), KEY_A)


def test_without_pending_fallback_the_rejected_current_key_comes_back(
    make: Callable[..., Any], drive: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    stage_pending(sm, secret_name, KEY_B)
    provider = make(secret_name)
    current = drive.fetch(provider)
    assert_key_is(drive.refetch(provider, current), KEY_A)


def test_after_finish_secret_the_new_current_key_is_read(
    make: Callable[..., Any], drive: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    version = stage_pending(sm, secret_name, KEY_B)
    provider = make(secret_name, pending_fallback=True)
    old = drive.fetch(provider)
    finish(sm, secret_name, version)
    key = drive.refetch(provider, old)
    assert_key_is(key, KEY_B)
    assert (key.version, key.source) == (version, provider.describe())


@pytest.mark.parametrize("pending", [None, KEY_A])
def test_no_other_key_at_pending_keeps_the_current_one(
    make: Callable[..., Any],
    drive: Any,
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    pending: str | None,
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    if pending is not None:
        stage_pending(sm, secret_name, pending)
    provider = make(secret_name, pending_fallback=True)
    current = drive.fetch(provider)
    key = drive.refetch(provider, current)
    assert_key_is(key, KEY_A)
    assert "AWSPENDING" not in key.source  # (the extension's comes from its direct read)


def test_a_pending_value_that_is_no_key_is_skipped_with_a_warning(
    make: Callable[..., Any],
    drive: Any,
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    stage_pending(sm, secret_name, "placeholder-LEAKCHECK-0123456789")
    provider = make(secret_name, pending_fallback=True)
    current = drive.fetch(provider)
    with caplog.at_level("WARNING", logger="scaling_credentials.aws"):
        assert_key_is(drive.refetch(provider, current), KEY_A)
    assert "keeping the AWSCURRENT key" in caplog.text
    assert_no_secret("LEAKCHECK", caplog.text)


def test_a_json_field_is_read_from_the_pending_version(
    make: Callable[..., Any], drive: Any, sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=json.dumps({"api_key": KEY_A, "owner": "ops"}))
    stage_pending(sm, secret_name, json.dumps({"api_key": KEY_B, "owner": "ops"}))
    provider = make(secret_name, field="api_key", pending_fallback=True)
    pending = drive.refetch(provider, drive.fetch(provider))
    assert_key_is(pending, KEY_B)
    assert "field=api_key" in pending.source and "stage=AWSPENDING" in pending.source


def test_the_extension_is_asked_for_awspending_with_refresh_now(
    fake_extension: Callable[..., Any], sm: Any, secret_name: str, put: Callable[..., str]
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    stage_pending(sm, secret_name, KEY_B)
    extension = fake_extension()
    provider = LambdaExtensionProvider(secret_name, port=extension.port, pending_fallback=True)
    assert_key_is(provider.refetch(provider.fetch()), KEY_B)
    assert [r.params for r in extension.requests] == [
        {"secretId": secret_name},
        {"secretId": secret_name, "refreshNow": "true"},
        {"secretId": secret_name, "versionStage": "AWSPENDING", "refreshNow": "true"},
    ]


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize("scheme", ["aws-sm", "aws-lambda-extension"])
def test_uri_parameter(scheme: str) -> None:
    provider = provider_from_uri(f"{scheme}:prod/scaling?pending_fallback=true")
    assert provider.pending_fallback is True  # type: ignore[attr-defined]
    assert provider.describe().endswith("?pending_fallback=true")
    plain = provider_from_uri(f"{scheme}:prod/scaling?pending_fallback=0")
    assert plain.pending_fallback is False  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="pending_fallback= in a"):
        provider_from_uri(f"{scheme}:prod/scaling?pending_fallback=maybe")
    with pytest.raises(ConfigurationError, match="reads AWSCURRENT"):
        provider_from_uri(f"{scheme}:prod/scaling?pending_fallback=true&stage=AWSPREVIOUS")
    with pytest.raises(ConfigurationError, match="reads AWSCURRENT"):
        provider_from_uri(f"{scheme}:prod/scaling?pending_fallback=true&version_id=v1")


# ---------------------------------------------------------------------- under load


def _single_user_rotation(api: FakeScalingAPI, sm: Any, name: str, first: str) -> Any:
    """AWS's single-user rotation, left at the pending step each time: finishSecret for
    the previous rotation, then createSecret (the new key at AWSPENDING) and setSecret
    (the key in service, the old one revoked): AWSCURRENT holds a revoked key until the
    next call finishes."""
    state: dict[str, str | None] = {"live": first, "pending": None}

    def write(new: str) -> None:
        state["pending"] = stage_pending(sm, name, new)

    def rotate(_: int) -> None:
        if state["pending"] is not None:
            finish(sm, name, state["pending"])
        state["live"] = rotate_and_revoke(api, write, state["live"] or "")

    return rotate


def test_single_user_rotation_under_threads_fails_no_request(
    api: FakeScalingAPI,
    sm: Any,
    moto_endpoint: str,
    boto_session: boto3.session.Session,
    secret_name: str,
    put: Callable[..., str],
) -> None:
    first = api.issue_key()
    put(sm, secret_name, SecretString=first)
    provider = SecretsManagerProvider(
        secret_name, endpoint_url=moto_endpoint, session=boto_session, pending_fallback=True
    )
    cache = KeyCache(provider, min_refresh_interval=0)
    run = run_rotation_threads(
        api, ScalingAuth(cache), _single_user_rotation(api, sm, secret_name, first)
    )
    assert run.failed == 0 and run.retried >= 1
    assert cache.stats.errors == 0


def test_single_user_rotation_through_the_extension_under_tasks_fails_no_request(
    api: FakeScalingAPI,
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    fake_extension: Callable[..., Any],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    first = api.issue_key()
    put(sm, secret_name, SecretString=first)
    extension = fake_extension()
    provider = LambdaExtensionProvider(secret_name, port=extension.port, pending_fallback=True)
    cache = KeyCache(provider, min_refresh_interval=0)
    run = run_rotation_tasks(
        api, ScalingAuth(cache), _single_user_rotation(api, sm, secret_name, first), tasks=50
    )
    assert run.failed == 0 and run.retried >= 1
