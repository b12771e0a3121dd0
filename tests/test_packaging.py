"""The distributions as users install them: the install commands of README.md and
examples/custom_provider/README.md, run as written (pip in a fresh virtual environment, in
a copy of this checkout), core alone first, then with each provider.

Packages come from PyPI through pip's and uv's caches (the build backend, httpx, boto3,
hvac); nothing else leaves the machine."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORES = shutil.ignore_patterns(
    ".git", ".venv", "dist", "site", "build", "__pycache__", "*.pyc", ".*_cache", "*.egg-info"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH"),
]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALING_API_KEY")}
    env.pop("VIRTUAL_ENV", None)
    env.update(UV_PYTHON_DOWNLOADS="never", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def console_commands(markdown: Path, section: str | None = None) -> list[str]:
    """The ``$ `` lines of the console blocks of a Markdown file (of its ``## section``
    only, when given), trailing comments dropped."""
    text = markdown.read_text(encoding="utf-8")
    if section is not None:
        found = re.search(rf"^## {section}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
        assert found, f"{markdown.name} has no section {section!r}"
        text = found.group(1)
    commands = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append(re.split(r"\s+#\s", line[2:])[0].strip())
    return commands


def kind(command: str) -> str:
    """How a README install command is tested: ``checkout`` (local paths), ``wheels``
    (built into dist/), or ``index`` (for when the packages are published: not run)."""
    if command.startswith("uv build") or "dist/" in command:
        return "wheels"
    if re.search(r"(^|\s)\.(/|\s|$)", command):
        return "checkout"
    return "index"


def readme_commands(which: str) -> list[str]:
    return [c for c in console_commands(ROOT / "README.md", "Install") if kind(c) == which]


def run(command: str, *, venv: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A README command: ``pip`` and ``pytest`` are the venv's, ``uv`` is uv."""
    argv = shlex.split(command)
    if argv[0] in ("pip", "pytest"):
        argv = [str(venv / "bin" / "python"), "-m", *argv]
    result = subprocess.run(
        argv, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"$ {command}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


def fresh_venv(path: Path) -> Path:
    """A virtual environment with pip (from uv's cache), nothing else installed."""
    subprocess.run(
        ["uv", "venv", "-q", "--seed", "--python", sys.executable, str(path)],
        env=environment(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return path


def schemes(venv: Path) -> set[str]:
    listing = subprocess.run(
        [str(venv / "bin" / "scaling-credentials"), "providers", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment(),
    )
    assert listing.returncode == 0, listing.stderr
    return {entry["scheme"] for entry in json.loads(listing.stdout)["installed"]}


def python(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment(),
    )


def assert_aws_provider_imports_no_boto3(venv: Path) -> None:
    found = python(
        venv,
        "import sys; from scaling_credentials import provider_from_uri\n"
        "p = provider_from_uri('aws-sm:prod/scaling?region=eu-west-1')\n"
        "print(type(p).__name__, 'boto3' in sys.modules)",
    )
    assert found.stdout.split() == ["SecretsManagerProvider", "False"], found.stderr


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as a user clones it (without the developer's venv and builds)."""
    copy = tmp_path_factory.mktemp("checkout") / "scaling-credentials"
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORES)
    return copy


def test_readme_install_commands_are_all_accounted_for() -> None:
    # The index lines stay, for when the packages are published; the others run below.
    index = readme_commands("index")
    assert index and all(re.match(r"pip install '?scaling-credentials", c) for c in index)
    assert readme_commands("checkout") and readme_commands("wheels")


def test_readme_install_from_a_checkout(checkout: Path, tmp_path: Path) -> None:
    commands = [c for c in console_commands(ROOT / "README.md", "Install") if " . " in f"{c} "]
    assert commands
    venv = fresh_venv(tmp_path / "venv")
    core, *with_providers = commands
    run(core, venv=venv, cwd=checkout)
    assert schemes(venv) == {"env", "file"}
    missing = python(
        venv,
        "from scaling_credentials import provider_from_uri\n"
        "try:\n    provider_from_uri('aws-sm:prod/scaling')\n"
        "except ValueError as exc:\n    print(exc)\n",
    )
    assert "scaling-credentials[aws]" in missing.stdout, missing.stderr
    assert python(venv, "import boto3").returncode != 0  # the core pulls in no AWS SDK
    for command in with_providers:
        run(command, venv=venv, cwd=checkout)
    assert {"aws-sm", "aws-lambda-extension", "vault"} <= schemes(venv)
    assert_aws_provider_imports_no_boto3(venv)

    # The third-party provider example, as its README says, in the same environment.
    for command in console_commands(checkout / "examples/custom_provider/README.md"):
        run(command, venv=venv, cwd=checkout)
    assert "keyring-example" in schemes(venv)


def test_readme_install_from_wheels(checkout: Path, tmp_path: Path) -> None:
    commands = readme_commands("wheels")
    assert len(commands) >= 2, commands
    venv = fresh_venv(tmp_path / "venv")
    for command in commands:
        run(command, venv=venv, cwd=checkout)
    assert {"env", "file", "aws-sm", "aws-lambda-extension"} <= schemes(venv)
    assert_aws_provider_imports_no_boto3(venv)
