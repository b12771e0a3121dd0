"""The examples run as written."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from scaling_credentials.testing import FakeScalingAPI, free_port
from scaling_credentials.testing.provider_suite import assert_no_secret

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("script", ["quickstart.py", "async_quickstart.py"])
def test_example_runs(script: str) -> None:
    for name in ("SCALING_API_KEY_SOURCE", "SCALING_API_KEY_FILE"):
        os.environ.pop(name, None)
    result = run(str(EXAMPLES / script))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "scl_live_" not in result.stdout.replace("scl_live_****", "")


def test_quickstart_survives_the_rotation() -> None:
    result = run(str(EXAMPLES / "quickstart.py"))
    assert "after rotation: HTTP 200, 1 retried request(s), 2 provider fetches" in result.stdout


def test_third_party_provider_example_passes_the_shared_suite() -> None:
    src = EXAMPLES / "custom_provider" / "src"
    result = run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(EXAMPLES / "custom_provider" / "test_dict_provider.py"),
        env={"PYTHONPATH": str(src)},
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "passed" in result.stdout


# --------------------------------------------------------------------------- the Lambda handler

LAMBDA_HANDLER = EXAMPLES / "lambda" / "handler.py"


@pytest.fixture
def lambda_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """Import examples/lambda/handler.py as Lambda does, with the given environment."""
    loaded: list[ModuleType] = []

    def load(**env: str) -> ModuleType:
        for name in list(os.environ):
            if name.startswith(("SCALING_", "AWS_")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        spec = importlib.util.spec_from_file_location("example_lambda_handler", LAMBDA_HANDLER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        module.CLIENT.close()


def test_lambda_handler_answers_a_key_source_failure_with_a_clear_error(
    lambda_handler: Callable[..., ModuleType],
    scaling_api: FakeScalingAPI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cases = {
        "missing": "env:SCALING_DOCS_ABSENT_VARIABLE",  # SecretNotFoundError
        "unreadable": f"file:{tmp_path}",  # a directory: ProviderError
    }
    for source in cases.values():
        module = lambda_handler(SCALING_API_KEY_SOURCE=source, SCALING_API_BASE_URL=scaling_api.url)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            answer = module.handler({}, None)
        assert answer["statusCode"] == 503
        assert json.loads(answer["body"]) == {"error": "scaling_api_key_unavailable"}
        (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "Scaling API key" in record.getMessage()
        assert source in record.getMessage()  # says which source failed
    assert scaling_api.requests == []  # nothing was sent without a key


def test_lambda_handler_answers_an_unreachable_api_with_a_clear_error(
    lambda_handler: Callable[..., ModuleType], caplog: pytest.LogCaptureFixture
) -> None:
    key = "scl_live_" + "unreach4ble" * 2
    module = lambda_handler(
        SCALING_API_KEY=key,
        SCALING_API_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        NO_PROXY="127.0.0.1",
    )
    with caplog.at_level(logging.ERROR):
        answer = module.handler({}, None)
    assert answer["statusCode"] == 502
    assert json.loads(answer["body"]) == {"error": "scaling_api_unreachable"}
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "ConnectError" in record.getMessage()
    assert_no_secret(key.removeprefix("scl_live_"), caplog.text, answer["body"])
