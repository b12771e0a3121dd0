"""examples/lambda/handler.py runs as written: through the extension stand-in, against
FakeScalingAPI, across a rotation, with module-level objects reused."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scaling_credentials.testing import FakeScalingAPI, free_port
from scaling_credentials.testing.provider_suite import assert_no_secret

HANDLER = Path(__file__).resolve().parents[3] / "examples" / "lambda" / "handler.py"


@pytest.fixture
def load_handler() -> Iterator[Callable[[], ModuleType]]:
    loaded: list[ModuleType] = []

    def load() -> ModuleType:
        spec = importlib.util.spec_from_file_location("example_lambda_handler", HANDLER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        module.CLIENT.close()
    sys.modules.pop("example_lambda_handler", None)


def test_the_lambda_example_survives_a_rotation(
    load_handler: Callable[[], ModuleType],
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extension = fake_extension()
    with FakeScalingAPI() as api:
        old = api.issue_key()
        put(sm, secret_name, SecretString=json.dumps({"api_key": old}))
        monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", str(extension.port))
        monkeypatch.setenv(
            "SCALING_API_KEY_SOURCE", f"aws-lambda-extension:{secret_name}?field=api_key"
        )
        monkeypatch.setenv("SCALING_API_BASE_URL", api.url)
        module = load_handler()

        first = module.handler({}, None)
        assert first["statusCode"] == 200
        assert "Primary on-call" in json.loads(first["body"])["schedules"]
        assert module.handler({}, None)["statusCode"] == 200

        new = api.rotate()
        put(sm, secret_name, SecretString=json.dumps({"api_key": new}))
        api.revoke(old)
        assert module.handler({}, None)["statusCode"] == 200

        # One read at the first request, one after the rejection; the extension was
        # asked to refresh (refreshNow) and it did.
        assert module.CACHE.stats.fetches == 2
        assert [r.params.get("refreshNow") for r in extension.requests] == [None, "true"]


def only_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """No key source but ``env`` (the AWS fixtures' fake credentials stay)."""
    for name in list(os.environ):
        if name.startswith("SCALING_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_the_lambda_example_answers_a_key_source_failure_with_a_clear_error(
    load_handler: Callable[[], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with FakeScalingAPI() as api:
        for source in (
            "env:SCALING_EXAMPLE_ABSENT_VARIABLE",  # SecretNotFoundError
            f"file:{tmp_path}",  # a directory: ProviderError
            "aws-sm:prod/absent?region=us-east-1",  # Secrets Manager unreachable
        ):
            only_env(monkeypatch, SCALING_API_KEY_SOURCE=source, SCALING_API_BASE_URL=api.url)
            module = load_handler()
            caplog.clear()
            with caplog.at_level(logging.ERROR):
                answer = module.handler({}, None)
            assert answer["statusCode"] == 503, source
            assert json.loads(answer["body"]) == {"error": "scaling_api_key_unavailable"}
            (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert "no Scaling API key from" in record.getMessage()
        assert api.requests == []  # nothing was sent without a key


def test_the_lambda_example_answers_an_unreachable_api_with_a_clear_error(
    load_handler: Callable[[], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "scl_live_" + "unreach4ble" * 2
    only_env(
        monkeypatch,
        SCALING_API_KEY=key,
        SCALING_API_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    )
    module = load_handler()
    with caplog.at_level(logging.ERROR):
        answer = module.handler({}, None)
    assert answer["statusCode"] == 502
    assert json.loads(answer["body"]) == {"error": "scaling_api_unreachable"}
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "ConnectError" in record.getMessage()
    assert_no_secret(key.removeprefix("scl_live_"), caplog.text, answer["body"])
