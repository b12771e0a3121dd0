"""What ``import scaling_credentials`` costs: checked in fresh interpreters, since this
test process has long since imported boto3, hvac and pytest."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = [
    "boto3",
    "botocore",
    "hvac",
    "scaling_credentials_aws",
    "scaling_credentials_vault",
    "requests",
    "aiohttp",
    "opentelemetry",
]


@functools.cache
def loaded_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; report which watched modules it loaded."""
    watched = [*HEAVY, "cachetools", "importlib.metadata", "pytest", "scaling_credentials"]
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps({{name: name in sys.modules for name in {watched!r}}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_import_loads_neither_boto3_nor_hvac() -> None:
    loaded = loaded_after("import scaling_credentials")
    assert loaded["scaling_credentials"]
    assert [name for name in HEAVY if loaded[name]] == []


def test_import_does_not_read_entry_points() -> None:
    # Entry points are read when a source URI is resolved, not at import time.
    assert not loaded_after("import scaling_credentials")["importlib.metadata"]


def test_cachetools_loads_with_the_first_rejected_key() -> None:
    # The memory of rejected keys is the cache's only use of cachetools: a cold start
    # that never sees a rejection does not pay for importing it.
    script = """
        from scaling_credentials import KeyCache
        from scaling_credentials.testing import MemoryProvider

        cache = KeyCache(MemoryProvider("scl_live_" + "a" * 32))
        key = cache.get()
        cache.refresh()
        """
    assert not loaded_after(script)["cachetools"]
    assert loaded_after(script + "cache.refresh(rejected=key)")["cachetools"]


def test_testing_helpers_need_neither_pytest_nor_the_providers() -> None:
    loaded = loaded_after("import scaling_credentials.testing")
    assert not loaded["pytest"]
    assert [name for name in HEAVY if loaded[name]] == []


def test_using_core_schemes_imports_no_provider_distribution() -> None:
    loaded = loaded_after(
        """
        from scaling_credentials import ScalingAuth, provider_from_uri, scaling_client
        from scaling_credentials._registry import installed_schemes

        provider_from_uri("env:X")
        installed_schemes()  # lists entry points without importing them
        ScalingAuth("env:X")
        scaling_client("file:/nonexistent").close()
        """
    )
    assert loaded["importlib.metadata"]  # the registry did look
    assert [name for name in HEAVY if loaded[name]] == []


def test_the_integrations_package_imports_no_third_party_library() -> None:
    code = (
        "import sys, scaling_credentials.integrations; "
        "print(','.join(m for m in ('requests', 'aiohttp', 'opentelemetry') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize(("module", "library"), [("requests", "requests"), ("aiohttp", "aiohttp")])
def test_an_integration_without_its_library_names_the_extra(module: str, library: str) -> None:
    code = (
        f"import sys; sys.modules[{library!r}] = None\n"
        "try:\n"
        f"    import scaling_credentials.integrations.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"pip install 'scaling-credentials[{module}]'" in proc.stdout
