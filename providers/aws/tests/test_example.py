"""examples/lambda/handler.py runs as written: through the extension stand-in, against
FakeScalingAPI, across a rotation, with module-level objects reused."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scaling_credentials.testing import FakeScalingAPI

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
