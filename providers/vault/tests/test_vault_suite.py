"""The shared provider suite for VaultProvider, against a real OpenBao dev server:
KV v2 and KV v1 with the root token, and KV v2 through AppRole with a read-only policy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import hvac
import pytest

from scaling_credentials import Provider
from scaling_credentials.testing.provider_suite import ProviderTests, good_value
from scaling_credentials_vault import AppRoleAuth, TokenAuth, VaultProvider


class TestVaultKV2(ProviderTests):
    mount = "secret"
    kv_version = 2

    @pytest.fixture(autouse=True)
    def _server(self, bao: Any, bao_root: hvac.Client, vault_env: pytest.MonkeyPatch) -> None:
        self.server = bao
        self.root = bao_root
        self.path = f"scaling/{uuid.uuid4().hex[:12]}"

    def make_provider(self) -> Provider:
        return VaultProvider(
            self.path,
            mount_point=self.mount,
            kv_version=self.kv_version,
            url=self.server.url,
            auth=TokenAuth(self.server.root_token),
        )

    def store(self, value: str) -> None:
        self.root.secrets.kv.v2.create_or_update_secret(
            path=self.path, secret={"api_key": value, "note": "rotated by ops"}
        )

    def remove(self) -> None:
        self.root.secrets.kv.v2.delete_metadata_and_all_versions(path=self.path)

    def test_version_is_the_kv_version(self) -> None:
        provider = self.make_provider()
        self.store(good_value("v1"))
        assert provider.fetch().version == "1"
        self.store(good_value("v2"))
        key = provider.fetch()
        assert key.version == "2"
        assert key.source == provider.describe()


class TestVaultKV1(TestVaultKV2):
    mount = "kv1"
    kv_version = 1

    def store(self, value: str) -> None:
        self.root.secrets.kv.v1.create_or_update_secret(
            path=self.path, secret={"api_key": value}, mount_point=self.mount
        )

    def remove(self) -> None:
        self.root.secrets.kv.v1.delete_secret(path=self.path, mount_point=self.mount)

    def test_version_is_the_kv_version(self) -> None:
        self.store(good_value("v1"))
        assert self.make_provider().fetch().version is None


class TestVaultKV2AppRole(TestVaultKV2):
    """The same suite as a real workload sees it: AppRole login, a read-only policy."""

    @pytest.fixture(autouse=True)
    def _approle(self, _server: None) -> Iterator[None]:
        role = f"suite-{uuid.uuid4().hex[:8]}"
        if "approle/" not in self.root.sys.list_auth_methods()["data"]:
            self.root.sys.enable_auth_method("approle")
        self.root.auth.approle.create_or_update_approle(
            role, token_policies=["scaling-read"], token_ttl="5m"
        )
        self.role_id = self.root.auth.approle.read_role_id(role)["data"]["role_id"]
        self.secret_id = self.root.auth.approle.generate_secret_id(role)["data"]["secret_id"]
        yield
        self.root.auth.approle.delete_role(role)

    def make_provider(self) -> Provider:
        return VaultProvider(
            self.path, url=self.server.url, auth=AppRoleAuth(self.role_id, self.secret_id)
        )
