"""The distributions as users install them: wheels built from this checkout, installed
into a fresh virtual environment, core alone and then with the [aws] extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        ["uv", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALING_API_KEY")}
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_core_alone_then_with_the_aws_extra(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    uv("build", "--all-packages", "--wheel", "-q", "-o", str(dist))
    venv = tmp_path / "venv"
    uv("venv", "-q", "--python", sys.executable, str(venv))
    python = venv / "bin" / "python"
    uv(
        "pip",
        "install",
        "-q",
        "--python",
        str(python),
        "--find-links",
        str(dist),
        "scaling-credentials",
    )

    listing = run(venv / "bin" / "scaling-credentials", "providers")
    assert listing.returncode == 0, listing.stderr
    assert "env" in listing.stdout and "file" in listing.stdout
    assert "pip install 'scaling-credentials[aws]'" in listing.stdout
    missing = run(
        python,
        "-c",
        "from scaling_credentials import provider_from_uri\n"
        "try:\n    provider_from_uri('aws-sm:prod/scaling')\n"
        "except ValueError as exc:\n    print(exc)\n",
    )
    assert "scaling-credentials[aws]" in missing.stdout, missing.stderr
    core_only = run(python, "-c", "import boto3")
    assert core_only.returncode != 0  # the core pulls in no AWS SDK

    uv(
        "pip",
        "install",
        "-q",
        "--python",
        str(python),
        "--find-links",
        str(dist),
        "scaling-credentials[aws]",
    )
    found = run(
        python,
        "-c",
        "import sys; from scaling_credentials import provider_from_uri\n"
        "p = provider_from_uri('aws-sm:prod/scaling?region=eu-west-1')\n"
        "print(type(p).__name__, 'boto3' in sys.modules)",
    )
    assert found.stdout.split() == ["SecretsManagerProvider", "False"], found.stderr
