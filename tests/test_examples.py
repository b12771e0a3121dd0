"""The examples run as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
