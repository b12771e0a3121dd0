"""Every Python code block in the docs runs as written, or is checked against the code.

How the ```python blocks of the documents in DOCUMENTS are tested (read this before you
add one):

* **Run** (the default). The blocks of one document run top to bottom in one namespace
  (a later block sees what an earlier one defined), in a temporary working directory and
  an environment where the Scaling API is a ``FakeScalingAPI``: ``SCALING_API_BASE_URL``
  points at it and ``SCALING_API_KEY`` holds a key it accepts, so ``scaling_client()``,
  ``ScalingAuth()`` and ``scaling-credentials check`` work as written. docs/aws.md also
  gets a moto Secrets Manager on 127.0.0.1 holding that key as ``prod/scaling-api-key``,
  with ``SCALING_API_KEY_SOURCE=aws-sm:prod/scaling-api-key``; docs/vault.md gets the
  ``VAULT_ADDR`` it exports (ENVIRONMENTS below).
* A block that cannot run says why in an HTML comment on the line just before its fence
  (invisible on GitHub and in the built site):

  - ``<!-- docs-test: type-check: WHY IT CANNOT RUN -->``: the block is type-checked with
    mypy (all such blocks in one run), not run. It must be self-contained (its imports
    included). The reason is required.
  - ``<!-- docs-test: signature -->``: the block is a call signature such as
    ``KeyCache(provider, *, ttl=None)``; it must match ``inspect.signature`` of the public
    object of that name (parameter names, kinds, order and defaults).

* Other blocks (console, yaml, json, toml) are not executed.

When a block fails, fix the block, not this test: the library's behaviour is the truth.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sybil import Document, Example, Region
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

from scaling_credentials.testing import FakeScalingAPI

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    {ROOT / "README.md", ROOT / "SECURITY.md", *ROOT.glob("docs/*.md")},
    key=lambda path: path.relative_to(ROOT).as_posix(),
)
# Where signature blocks look names up (public names only).
PUBLIC_MODULES = (
    "scaling_credentials",
    "scaling_credentials.integrations.aiohttp",
    "scaling_credentials.integrations.requests",
    "scaling_credentials.testing",
    "scaling_credentials_aws",
    "scaling_credentials_vault",
)
MODES = ("run", "type-check", "signature")
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<mode>[\w-]+)\s*(?::\s*(?P<reason>.*?))?\s*-->")
AWS_SECRET = "prod/scaling-api-key"


class Block(NamedTuple):
    """A ```python block and how it is tested."""

    mode: str
    reason: str
    source: str
    line: int  # of the first line of code, 1-based


def relative(path: Path | str) -> str:
    return Path(path).resolve().relative_to(ROOT).as_posix()


def directive_before(text: str, position: int) -> re.Match[str] | None:
    """The ``docs-test`` comment on the line just before ``position``, if any."""
    previous = text[:position].rstrip(" \t").removesuffix("\n").rsplit("\n", 1)[-1]
    return DIRECTIVE.fullmatch(previous.strip())


def python_blocks(document: Document) -> Iterator[Region]:
    """A sybil parser: one region per ```python block, with its mode."""
    for lexed in FencedCodeBlockLexer(language="python")(document):
        found = directive_before(document.text, lexed.start)
        mode = found["mode"] if found else "run"
        reason = (found["reason"] or "") if found else ""
        source = lexed.lexemes["source"]
        line = document.text.count("\n", 0, lexed.start) + 2
        block = Block(mode, reason, str(source), line)
        yield Region(lexed.start, lexed.end, block, EVALUATORS.get(mode))


def parse(path: Path) -> Document:
    return Document.parse(str(path), python_blocks)


# --------------------------------------------------------------------------- evaluators


def run_block(example: Example) -> None:
    block: Block = example.parsed
    code = compile("\n" * (block.line - 1) + block.source, example.path, "exec")
    exec(code, example.namespace)
    example.namespace.pop("__builtins__", None)


def public_object(dotted: str) -> Any:
    head, *rest = dotted.split(".")
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        if head in getattr(module, "__all__", ()):
            found = getattr(module, head)
            for attribute in rest:
                found = getattr(found, attribute)
            return found
    raise AssertionError(f"{dotted} is not a public name of {', '.join(PUBLIC_MODULES)}")


def _documented(block: Block) -> tuple[str, list[tuple[str, str, Any]]]:
    """(name, [(parameter, kind, default)]) of a signature block; default is the
    evaluated expression, or inspect.Parameter.empty."""
    name, _, parameters = block.source.strip().partition("(")
    tree = ast.parse(f"def documented({parameters}: ...")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    defaults: list[ast.expr | None] = [None] * (
        len(args.posonlyargs) + len(args.args) - len(args.defaults)
    ) + list(args.defaults)
    names = {"time": time}

    def value(node: ast.expr | None) -> Any:
        if node is None:
            return inspect.Parameter.empty
        return eval(ast.unparse(node), names)

    params: list[tuple[str, str, Any]] = []
    positional = [(a, "POSITIONAL_ONLY") for a in args.posonlyargs]
    positional += [(a, "POSITIONAL_OR_KEYWORD") for a in args.args]
    for (arg, kind), default in zip(positional, defaults, strict=True):
        params.append((arg.arg, kind, value(default)))
    if args.vararg:
        params.append((args.vararg.arg, "VAR_POSITIONAL", inspect.Parameter.empty))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append((arg.arg, "KEYWORD_ONLY", value(default)))
    if args.kwarg:
        params.append((args.kwarg.arg, "VAR_KEYWORD", inspect.Parameter.empty))
    return name.strip(), params


def _shown(params: list[tuple[str, str, Any]]) -> str:
    parts: list[str] = []
    star = False
    for name, kind, default in params:
        if kind == "KEYWORD_ONLY" and not star:
            parts.append("*")
            star = True
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "")
        star = star or kind == "VAR_POSITIONAL"
        if default is inspect.Parameter.empty:
            parts.append(prefix + name)
        elif callable(default):
            parts.append(f"{name}={default.__module__}.{default.__qualname__}")
        else:
            parts.append(f"{name}={default!r}")
    return "(" + ", ".join(parts) + ")"


def check_signature(example: Example) -> None:
    block: Block = example.parsed
    name, documented = _documented(block)
    actual = [
        (p.name, p.kind.name, p.default)
        for p in inspect.signature(public_object(name)).parameters.values()
    ]
    if documented != actual:
        raise AssertionError(
            f"{relative(example.path)}:{block.line}: the documented signature of {name} "
            f"differs from the code; document it as\n    {name}{_shown(actual)}\n"
            f"(the docs say {name}{_shown(documented)})"
        )


def not_run(example: Example) -> None:
    """type-check blocks are checked by test_type_check_blocks, all at once."""


EVALUATORS: dict[str, Callable[[Example], None]] = {
    "run": run_block,
    "signature": check_signature,
    "type-check": not_run,
}


# --------------------------------------------------------------------------- environments


def aws_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, key: str, tmp_path: Path
) -> None:
    """Secrets Manager on moto, holding ``key`` as AWS_SECRET, named by the source."""
    import boto3

    endpoint: str = request.getfixturevalue("moto_endpoint")  # the root conftest's
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
    secrets = boto3.client("secretsmanager", endpoint_url=endpoint)
    secrets.create_secret(Name=AWS_SECRET, SecretString=key)
    request.addfinalizer(
        lambda: secrets.delete_secret(SecretId=AWS_SECRET, ForceDeleteWithoutRecovery=True)
    )
    monkeypatch.setenv("SCALING_API_KEY_SOURCE", f"aws-sm:{AWS_SECRET}")


def vault_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, key: str, tmp_path: Path
) -> None:
    """The address the page exports (its blocks build providers; none logs in)."""
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example.com:8200")


Environment = Callable[[pytest.FixtureRequest, pytest.MonkeyPatch, str, Path], None]
ENVIRONMENTS: dict[str, Environment] = {
    "docs/aws.md": aws_environment,
    "docs/vault.md": vault_environment,
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Blocks may configure logging (SECURITY.md installs redact_logging()): undo it."""
    loggers: list[logging.Logger] = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    handlers = [handler for logger in loggers for handler in logger.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    saved = [(f, list(f.filters)) for f in [*loggers, *handlers]]
    root = logging.getLogger()
    level, root_handlers = root.level, list(root.handlers)
    yield
    for filterer, filters in saved:
        filterer.filters[:] = filters
    root.setLevel(level)
    root.handlers[:] = root_handlers


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("path", DOCUMENTS, ids=relative)
def test_python_blocks(
    path: Path,
    scaling_api: FakeScalingAPI,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("SCALING_", "AWS_", "VAULT_", "BAO_")):
            monkeypatch.delenv(name)
    key = scaling_api.issue_key()
    monkeypatch.setenv("SCALING_API_BASE_URL", scaling_api.url)
    monkeypatch.setenv("SCALING_API_KEY", key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)
    environment = ENVIRONMENTS.get(relative(path))
    if environment is not None:
        environment(request, monkeypatch, key, tmp_path)
    for example in parse(path).examples():
        example.evaluate()


# --------------------------------------------------------------------------- the conventions

FENCE_NEXT = re.compile(r"[ \t]*\n[ \t]*```python[ \t]*\n")


@pytest.mark.parametrize("path", DOCUMENTS, ids=relative)
def test_docs_test_comments_are_well_formed(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for found in DIRECTIVE.finditer(text):
        where = f"{relative(path)}:{text.count(chr(10), 0, found.start()) + 1}"
        assert found["mode"] in MODES[1:], f"{where}: unknown docs-test mode {found['mode']!r}"
        if found["mode"] == "type-check":
            assert found["reason"], f"{where}: say why the block cannot run"
        assert FENCE_NEXT.match(text, found.end()), (
            f"{where}: a docs-test comment goes on the line just before a ```python fence"
        )


# --------------------------------------------------------------------------- type-check blocks

MYPY_CONFIG = """\
[mypy]
python_version = 3.10
check_untyped_defs = True
warn_unused_ignores = True

[mypy-boto3.*,botocore.*,hvac.*,moto.*]
ignore_missing_imports = True
"""


@pytest.mark.slow
def test_type_check_blocks(tmp_path: Path) -> None:
    """The blocks marked ``type-check`` pass mypy: each is written to a file of its own,
    padded so that mypy's line numbers are the document's."""
    from mypy import api

    files: dict[str, str] = {}
    for path in DOCUMENTS:
        for example in parse(path).examples():
            block: Block = example.parsed
            if block.mode == "type-check":
                name = re.sub(r"\W", "_", relative(path)) + f"_line{block.line}.py"
                (tmp_path / name).write_text("\n" * (block.line - 1) + block.source)
                files[name] = relative(path)
    if not files:
        pytest.skip("no type-check blocks")
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    out, err, status = api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "docs"),
            "--no-error-summary",
            "--hide-error-context",
            *(str(tmp_path / name) for name in sorted(files)),
        ]
    )
    report = out + err
    for name, document in files.items():
        report = report.replace(str(tmp_path / name), document).replace(name, document)
    assert status == 0, report
