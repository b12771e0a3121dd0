"""The shared provider suite for the core's EnvProvider and FileProvider, and the suite's
own checks: that they fail for a provider that breaks the contract, and that a failure
shows no secret."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scaling_credentials import ApiKey, EnvProvider, FileProvider, Provider
from scaling_credentials.testing import MemoryProvider
from scaling_credentials.testing.provider_suite import ProviderTests, assert_no_secret


class TestEnvProvider(ProviderTests):
    VAR = "SCALING_TEST_SUITE_KEY"
    fetch_never_blocks = True  # afetch reads a dictionary on the loop

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


# ---------------------------------------------------------------------------- the suite's checks


class _MemorySuite(ProviderTests):
    """The suite run on a provider class of a test's choosing (called by hand)."""

    def __init__(self, provider_class: type[MemoryProvider]) -> None:
        self.provider = provider_class()

    def make_provider(self) -> Provider:
        return self.provider

    def store(self, value: str) -> None:
        self.provider.value = value

    def remove(self) -> None:
        self.provider.value = None


class SleepsOnTheLoop(MemoryProvider):
    async def afetch(self) -> ApiKey:
        time.sleep(0.2)  # noqa: ASYNC251 - a blocking call on the event loop's thread
        return self.fetch()


class FetchesOnTheLoopThenAwaits(MemoryProvider):
    async def afetch(self) -> ApiKey:
        key = self.fetch()
        await asyncio.sleep(0)  # yields, but after fetch() blocked the loop
        return key


class NeverYields(MemoryProvider):
    async def afetch(self) -> ApiKey:
        time.sleep(0.2)  # noqa: ASYNC251 - the same, without calling fetch()
        return ApiKey(self.value or "", source=self.describe())


class LooksUpOnTheLoop(MemoryProvider):
    async def afetch(self) -> ApiKey:
        return self.fetch()  # as EnvProvider does: its fetch reads a dictionary


class Threaded(MemoryProvider):
    """The default afetch: fetch in a worker thread."""


class NativeAsync(MemoryProvider):
    async def afetch(self) -> ApiKey:
        await asyncio.sleep(0)  # a native client awaiting its socket
        return ApiKey(self.value or "", source=self.describe())


@pytest.mark.parametrize(
    ("provider_class", "reason"),
    [
        (SleepsOnTheLoop, "called fetch\\(\\) on the event loop's thread"),
        (FetchesOnTheLoopThenAwaits, "called fetch\\(\\) on the event loop's thread"),
        (NeverYields, "completed without yielding to the event loop"),
        (LooksUpOnTheLoop, "called fetch\\(\\) on the event loop's thread"),
    ],
    ids=["sleeps-on-the-loop", "fetches-then-awaits", "never-yields", "looks-up-on-the-loop"],
)
def test_a_blocking_afetch_fails_the_suite(
    provider_class: type[MemoryProvider], reason: str
) -> None:
    suite = _MemorySuite(provider_class)
    with pytest.raises(AssertionError, match=reason):
        suite.test_afetch_does_not_block_the_event_loop()


@pytest.mark.parametrize("provider_class", [Threaded, NativeAsync])
def test_an_afetch_that_leaves_the_loop_free_passes_the_suite(
    provider_class: type[MemoryProvider],
) -> None:
    _MemorySuite(provider_class).test_afetch_does_not_block_the_event_loop()


def test_a_provider_whose_fetch_never_blocks_may_run_it_on_the_loop() -> None:
    suite = _MemorySuite(LooksUpOnTheLoop)
    suite.fetch_never_blocks = True
    suite.test_afetch_does_not_block_the_event_loop()


FAILING_CHECKS = """
import os

from scaling_credentials import ApiKey
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret

SECRET = os.environ["SUITE_SECRET"]


def test_a_leak_is_found():
    text = "the log said " + SECRET
    assert_no_secret(SECRET, text)


def test_another_key():
    assert_key_is(ApiKey(SECRET), "scl_live_someotherkey0123456789")
"""


@pytest.mark.parametrize("options", [[], ["--tb=long", "-vv"]], ids=["default", "long"])
def test_a_failing_check_shows_no_secret(tmp_path: Path, options: list[str]) -> None:
    secret = "scl_live_SUITESECRETmarker0123456789"
    (tmp_path / "test_checks.py").write_text(textwrap.dedent(FAILING_CHECKS))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options, "test_checks.py"],
        cwd=tmp_path,
        env={**os.environ, "SUITE_SECRET": secret},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "2 failed" in output, output[-2000:]
    assert "contains the secret (redacted here)" in output
    assert "expected scl_live_****6789" in output  # the masked forms only
    assert_no_secret(secret.removeprefix("scl_live_"), output)
