"""The shared provider suite for the core's EnvProvider and FileProvider."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scaling_credentials import EnvProvider, FileProvider, Provider
from scaling_credentials.testing.provider_suite import ProviderTests


class TestEnvProvider(ProviderTests):
    VAR = "SCALING_TEST_SUITE_KEY"

    @pytest.fixture(autouse=True)
    def _clean(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def make_provider(self) -> Provider:
        return EnvProvider(self.VAR)

    def store(self, value: str) -> None:
        if "\x00" in value:
            pytest.skip("environment variables cannot hold NUL")
        self.monkeypatch.setenv(self.VAR, value)

    def remove(self) -> None:
        self.monkeypatch.delenv(self.VAR, raising=False)


class TestFileProvider(ProviderTests):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "key"

    def make_provider(self) -> Provider:
        return FileProvider(self.path)

    def store(self, value: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(value, encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class TestFileProviderJSONField(TestFileProvider):
    def make_provider(self) -> Provider:
        return FileProvider(self.path, field="api_key")

    def store(self, value: str) -> None:
        import json

        super().store(json.dumps({"api_key": value, "note": "rotated by ops"}))
