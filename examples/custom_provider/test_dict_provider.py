"""The third-party provider runs the project's shared provider suite."""

from __future__ import annotations

from scaling_credentials_keyring_example import STORE, DictProvider

from scaling_credentials import Provider
from scaling_credentials.testing.provider_suite import ProviderTests


class TestDictProvider(ProviderTests):
    def make_provider(self) -> Provider:
        return DictProvider("billing")

    def store(self, value: str) -> None:
        STORE["billing"] = value

    def remove(self) -> None:
        STORE.pop("billing", None)
