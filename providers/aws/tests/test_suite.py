"""The core's shared provider suite, run for the AWS providers against real answers:
SecretsManagerProvider and ParameterStoreProvider against moto over HTTP,
LambdaExtensionProvider (secrets and parameters) against a local extension stand-in that
reads from the same moto."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from scaling_credentials import Provider
from scaling_credentials.testing.provider_suite import ProviderTests
from scaling_credentials_aws import (
    LambdaExtensionProvider,
    ParameterStoreProvider,
    SecretsManagerProvider,
)


class _MotoSecret:
    """Arranges one secret in moto per test."""

    sm: Any
    name: str

    @pytest.fixture(autouse=True)
    def _secret(self, sm: Any) -> Iterator[None]:
        self.sm = sm
        self.name = f"suite/{uuid.uuid4().hex[:12]}"
        yield
        self.remove()

    def encode(self, value: str) -> dict[str, Any]:
        return {"SecretString": value}

    def store(self, value: str) -> None:
        if value == "":
            pytest.skip("Secrets Manager cannot hold an empty secret (minimum length 1)")
        arguments = self.encode(value)
        try:
            self.sm.put_secret_value(SecretId=self.name, **arguments)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            self.sm.create_secret(Name=self.name, **arguments)

    def remove(self) -> None:
        try:
            self.sm.delete_secret(SecretId=self.name, ForceDeleteWithoutRecovery=True)
        except ClientError:
            pass


class TestSecretsManagerProvider(_MotoSecret, ProviderTests):
    @pytest.fixture(autouse=True)
    def _endpoint(self, moto_endpoint: str, boto_session: boto3.session.Session) -> None:
        self.endpoint = moto_endpoint
        self.session = boto_session

    def make_provider(self) -> Provider:
        return SecretsManagerProvider(self.name, endpoint_url=self.endpoint, session=self.session)


class TestSecretsManagerProviderJSONField(TestSecretsManagerProvider):
    def make_provider(self) -> Provider:
        return SecretsManagerProvider(
            self.name, field="api_key", endpoint_url=self.endpoint, session=self.session
        )

    def encode(self, value: str) -> dict[str, Any]:
        return {"SecretString": json.dumps({"api_key": value, "owner": "platform"})}


class TestLambdaExtensionProvider(_MotoSecret, ProviderTests):
    # The extension caches on its own: new values show up through refetch().
    reads_fresh_each_fetch = False
    honour_refresh_now = True

    @pytest.fixture(autouse=True)
    def _extension(self, fake_extension: Callable[..., Any], moto_endpoint: str) -> None:
        self.extension = fake_extension(honour_refresh_now=self.honour_refresh_now)

    def make_provider(self) -> Provider:
        return LambdaExtensionProvider(self.name, port=self.extension.port)


class TestLambdaExtensionProviderWithoutRefreshNow(TestLambdaExtensionProvider):
    """An extension that ignores refreshNow: after a rejection the provider reads
    Secrets Manager directly through boto3 (pointed at moto by the standard
    AWS_ENDPOINT_URL_SECRETS_MANAGER variable)."""

    honour_refresh_now = False

    @pytest.fixture(autouse=True)
    def _direct_endpoint(self, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)


class _MotoParameter:
    """Arranges one SecureString parameter in moto per test."""

    ssm: Any
    name: str

    @pytest.fixture(autouse=True)
    def _parameter(self, ssm: Any) -> Iterator[None]:
        self.ssm = ssm
        self.name = f"/suite/{uuid.uuid4().hex[:12]}/api-key"
        yield
        self.remove()

    def encode(self, value: str) -> str:
        return value

    def store(self, value: str) -> None:
        encoded = self.encode(value)
        if not encoded or len(encoded) > 4096:
            pytest.skip("a standard parameter holds 1 to 4096 characters")
        self.ssm.put_parameter(Name=self.name, Value=encoded, Type="SecureString", Overwrite=True)

    def remove(self) -> None:
        try:
            self.ssm.delete_parameter(Name=self.name)
        except ClientError:
            pass


class TestParameterStoreProvider(_MotoParameter, ProviderTests):
    @pytest.fixture(autouse=True)
    def _endpoint(self, moto_endpoint: str, boto_session: boto3.session.Session) -> None:
        self.endpoint = moto_endpoint
        self.session = boto_session

    def make_provider(self) -> Provider:
        return ParameterStoreProvider(self.name, endpoint_url=self.endpoint, session=self.session)


class TestParameterStoreProviderJSONField(TestParameterStoreProvider):
    def make_provider(self) -> Provider:
        return ParameterStoreProvider(
            self.name, field="api_key", endpoint_url=self.endpoint, session=self.session
        )

    def encode(self, value: str) -> str:
        return json.dumps({"api_key": value, "owner": "platform"})


class TestLambdaExtensionParameter(_MotoParameter, ProviderTests):
    """``ssm:`` through the extension stand-in, which caches parameters with no way to
    refresh them: after a rejection the provider reads Parameter Store directly (pointed
    at moto by the standard AWS_ENDPOINT_URL_SSM variable)."""

    reads_fresh_each_fetch = False

    @pytest.fixture(autouse=True)
    def _extension(
        self,
        fake_extension: Callable[..., Any],
        moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_endpoint)
        self.extension = fake_extension()

    def make_provider(self) -> Provider:
        return LambdaExtensionProvider(f"ssm:{self.name}", port=self.extension.port)
