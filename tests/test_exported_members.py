"""Pin the public names: a rename or removal is a visible, deliberate decision."""

from __future__ import annotations

import importlib.metadata
import inspect
from types import ModuleType

import pytest

import scaling_credentials
import scaling_credentials.integrations.aiohttp
import scaling_credentials.integrations.opentelemetry
import scaling_credentials.integrations.requests
import scaling_credentials.testing
import scaling_credentials.testing.provider_suite
import scaling_credentials.toolkit

CORE = [
    "ApiKey",
    "CacheEvent",
    "CacheStats",
    "ChainProvider",
    "ConfigurationError",
    "EnvProvider",
    "FileProvider",
    "InvalidKeyFormatError",
    "KeyCache",
    "Provider",
    "ProviderError",
    "ProviderTimeoutError",
    "ScalingAPIError",
    "ScalingAuth",
    "ScalingCredentialsError",
    "SecretNotFoundError",
    "SourceURI",
    "__version__",
    "async_scaling_client",
    "provider_from_env",
    "provider_from_uri",
    "raise_for_scaling_error",
    "redact_logging",
    "scaling_client",
]

TESTING = [
    "AsyncClientFactory",
    "ClientFactory",
    "DemoOptions",
    "DemoReport",
    "FakeClock",
    "FakeScalingAPI",
    "FaultyProvider",
    "HostileHit",
    "HostileServer",
    "MemoryCache",
    "MemoryProvider",
    "PreforkRun",
    "RecordedRequest",
    "RotationRun",
    "ScriptedResponse",
    "SecretVolume",
    "WorkerReport",
    "free_port",
    "memory_cache",
    "rotate_and_revoke",
    "run_demo",
    "run_in_threads",
    "run_prefork_rotation",
    "run_rotation_tasks",
    "run_rotation_threads",
    "wait_child",
    "wait_for_port",
]

PROVIDER_SUITE = [
    "BAD_VALUES",
    "ProviderTests",
    "assert_equal_masked",
    "assert_key_is",
    "assert_no_secret",
    "assert_no_secret_in_error",
    "error_texts",
]

INTEGRATION_REQUESTS = ["ScalingRequestsAuth"]
INTEGRATION_AIOHTTP = ["ScalingMiddleware"]

TOOLKIT = [
    "KEY_PREFIX",
    "MAX_FILE_SIZE",
    "PerProcess",
    "after_fork",
    "decode_text",
    "field_from_json",
    "field_from_object",
    "flag",
    "format_query",
    "get_logger",
    "is_loopback",
    "json_type",
    "json_with_field",
    "looks_like_key",
    "make_key",
    "mask",
    "port_number",
    "read_capped_file",
    "redact",
    "seconds",
    "text_option",
    "whole_number",
]

OPENTELEMETRY = ["Instrumentation", "instrument", "source_attribute"]

MODULES = [
    (scaling_credentials, CORE),
    (scaling_credentials.testing, TESTING),
    (scaling_credentials.testing.provider_suite, PROVIDER_SUITE),
    (scaling_credentials.toolkit, TOOLKIT),
    (scaling_credentials.integrations.opentelemetry, OPENTELEMETRY),
    (scaling_credentials.integrations.requests, INTEGRATION_REQUESTS),
    (scaling_credentials.integrations.aiohttp, INTEGRATION_AIOHTTP),
]


@pytest.mark.parametrize(("module", "names"), MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_all_is_sorted_and_exactly_the_pinned_set(module: ModuleType, names: list[str]) -> None:
    assert module.__all__ == sorted(module.__all__)
    assert module.__all__ == names


@pytest.mark.parametrize(("module", "names"), MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_name_is_importable(module: ModuleType, names: list[str]) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)
    for name in names:
        assert getattr(module, name) is namespace[name]


@pytest.mark.parametrize(("module", "names"), MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_public_class_and_function_has_a_docstring(
    module: ModuleType, names: list[str]
) -> None:
    undocumented = [
        name
        for name in names
        if (inspect.isclass(getattr(module, name)) or inspect.isfunction(getattr(module, name)))
        and not inspect.getdoc(getattr(module, name))
    ]
    assert undocumented == []


def test_version_is_the_installed_distribution_s() -> None:
    assert scaling_credentials.__version__ == importlib.metadata.version("scaling-credentials")
    assert scaling_credentials.__version__.count(".") >= 2


def test_error_tree() -> None:
    sc = scaling_credentials
    for cls in (
        sc.ConfigurationError,
        sc.InvalidKeyFormatError,
        sc.ProviderError,
        sc.ScalingAPIError,
    ):
        assert issubclass(cls, sc.ScalingCredentialsError)
    assert issubclass(sc.ConfigurationError, ValueError)
    assert issubclass(sc.InvalidKeyFormatError, ValueError)
    assert issubclass(sc.SecretNotFoundError, sc.ProviderError)
    assert issubclass(sc.ProviderTimeoutError, sc.ProviderError)
    assert not issubclass(sc.ProviderError, ValueError)
    error = sc.ProviderError("x", provider="env:X")
    assert error.provider == "env:X"
    api_error = sc.ScalingAPIError("x", status_code=401, code="invalid_api_key")
    assert (api_error.status_code, api_error.type, api_error.code) == (401, None, "invalid_api_key")
    assert (api_error.request_id, api_error.response) == (None, None)


def test_providers_are_provider_subclasses() -> None:
    sc = scaling_credentials
    for provider in (sc.EnvProvider, sc.FileProvider, sc.ChainProvider):
        assert issubclass(provider, sc.Provider)
    assert issubclass(scaling_credentials.testing.MemoryProvider, sc.Provider)
