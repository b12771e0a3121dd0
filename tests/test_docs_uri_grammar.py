"""One source of truth for the source URI grammar: the table in docs/configuration.md.

Every scheme a first-party distribution registers, each path form its ``from_uri``
recognises (``aws-lambda-extension:ssm:NAME``), and every parameter it accepts
(``SourceURI.check_params``, probed by giving it an unknown one) must be in that table,
and the table must list nothing the code does not accept. Every other place that spells a
URI form with its parameters (the docs, the READMEs, the CLI's ``--source`` help, the
providers' docstrings) must list the same parameters. When a provider learns a parameter,
these tests fail and say what to write where.

Path forms are found in ``from_uri``'s source: a string constant such as ``"ssm:"`` passed
to ``startswith``/``removeprefix`` or compared with the path.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from scaling_credentials import ConfigurationError, provider_from_uri
from scaling_credentials._registry import ENTRY_POINT_GROUP, FIRST_PARTY_SCHEMES
from scaling_credentials.cli import SOURCE_HELP

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "docs" / "configuration.md"
FIRST_PARTY = {distribution for distribution, _ in FIRST_PARTY_SCHEMES.values()}
PROBE = "zz_docs_probe"
# A URI form as the docs spell it: scheme, optional path-form prefix, a placeholder path
# (NAME, SECRET_ID, /path), optional parameters ([?a=A&b=B] or ?a=A&b=B).
FORM = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*):(?P<prefix>(?:[a-z][a-z0-9]*:)*)"
    r"(?P<path>/path|[A-Z][A-Z0-9_]*)"
    r"(?P<query>\[\?[^\]\s`]*\]|\?[^\s`)]*)?"
)
# Places that may spell a form with its parameters.
MENTIONS = sorted(
    {
        *ROOT.glob("*.md"),
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("examples/**/README.md"),
        *ROOT.glob("providers/*/README.md"),
        *ROOT.glob("src/**/*.py"),
        *ROOT.glob("providers/*/src/**/*.py"),
    }
)


@dataclass(frozen=True)
class Form:
    scheme: str
    prefix: str  # "" or a path form such as "ssm:"
    text: str
    params: frozenset[str]

    @property
    def key(self) -> tuple[str, str]:
        return self.scheme, self.prefix


def form_of(match: re.Match[str]) -> Form:
    query = match["query"] or ""
    return Form(
        scheme=match["scheme"],
        prefix=match["prefix"],
        text=match.group(0),
        params=frozenset(re.findall(r"([a-z_]+)=", query)),
    )


def documented() -> dict[tuple[str, str], Form]:
    """The forms in the first column of docs/configuration.md's source URI table."""
    forms: dict[tuple[str, str], Form] = {}
    for cell in re.findall(r"^\|\s*`([^`]+)`\s*\|", TRUTH.read_text(), re.MULTILINE):
        match = FORM.fullmatch(cell)
        if match:
            form = form_of(match)
            assert form.key not in forms, f"docs/configuration.md lists {cell} twice"
            forms[form.key] = form
    assert forms, "docs/configuration.md has no source URI table"
    return forms


def first_party_schemes() -> dict[str, Callable[..., object]]:
    """scheme -> the factory its entry point names, for first-party distributions."""
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.metadata["Name"] in FIRST_PARTY:
            found[ep.name] = ep.load()
    return found


def path_forms(factory: Callable[..., object]) -> set[str]:
    """The path prefixes (``"ssm:"``) that ``from_uri`` tests the path for."""
    function = getattr(factory, "__func__", factory)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    prefixes: set[str] = set()
    for node in ast.walk(tree):
        candidates: list[ast.expr] = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("startswith", "removeprefix"):
                candidates = list(node.args)
        elif isinstance(node, ast.Compare):
            candidates = [node.left, *node.comparators]
        for candidate in candidates:
            value = candidate.value if isinstance(candidate, ast.Constant) else None
            if isinstance(value, str) and re.fullmatch(r"[a-z][a-z0-9]*:", value):
                prefixes.add(value)
    return prefixes


def accepted(scheme: str, prefix: str) -> frozenset[str]:
    """The parameters ``scheme:prefix...`` accepts, as its check_params reports them."""
    path = "/probe" if scheme == "file" else "probe"
    uri = f"{scheme}:{prefix}{path}?{PROBE}=1"
    with pytest.raises(ConfigurationError) as caught:
        provider_from_uri(uri)
    found = re.search(r"accepted: (.*)$", str(caught.value))
    assert found, f"{uri}: from_uri did not report its accepted parameters: {caught.value}"
    names = found.group(1).strip()
    return frozenset() if names == "none" else frozenset(n.strip() for n in names.split(","))


def suggestion(form: Form, want: frozenset[str]) -> str:
    keep = [n for n in re.findall(r"([a-z_]+)=", form.text) if n in want]
    listed = "&".join(
        re.search(rf"{n}=[^&\]]*", form.text).group(0)  # type: ignore[union-attr]
        for n in keep
    )
    missing = "&".join(f"{n}=..." for n in sorted(want - form.params))
    query = "&".join(part for part in (listed, missing) if part)
    base = f"{form.scheme}:{form.prefix}" + FORM.match(form.text)["path"]  # type: ignore[index]
    return base + (f"[?{query}]" if query else "")


# --------------------------------------------------------------------------- the table


def test_every_installed_scheme_and_path_form_is_in_the_table() -> None:
    forms = documented()
    missing = []
    for scheme, factory in sorted(first_party_schemes().items()):
        for prefix in ["", *sorted(path_forms(factory))]:
            if (scheme, prefix) not in forms:
                params = sorted(accepted(scheme, prefix))
                query = "&".join(f"{n}=..." for n in params)
                row = f"{scheme}:{prefix}NAME" + (f"[?{query}]" if query else "")
                missing.append(f"add a row | `{row}` | <provider> | <install> |")
    assert not missing, (
        "docs/configuration.md's source URI table lacks installed forms:\n" + "\n".join(missing)
    )


def test_the_table_lists_only_what_is_installed() -> None:
    installed = first_party_schemes()
    extra = []
    for (scheme, prefix), form in documented().items():
        if scheme not in installed:
            extra.append(f"{form.text}: no first-party distribution registers {scheme}:")
        elif prefix and prefix not in path_forms(installed[scheme]):
            extra.append(f"{form.text}: {scheme}'s from_uri has no {prefix} path form")
    assert not extra, "docs/configuration.md documents forms the code lacks:\n" + "\n".join(extra)


def test_the_table_lists_exactly_the_accepted_parameters() -> None:
    installed = first_party_schemes()
    wrong = []
    for (scheme, prefix), form in sorted(documented().items()):
        if scheme not in installed:
            continue
        want = accepted(scheme, prefix)
        if form.params != want:
            added = ", ".join(sorted(want - form.params)) or "-"
            removed = ", ".join(sorted(form.params - want)) or "-"
            wrong.append(
                f"`{form.text}` (accepts but not listed: {added}; listed but refused: "
                f"{removed}): write `{suggestion(form, want)}`"
            )
    assert not wrong, "docs/configuration.md's source URI table is out of date:\n" + "\n".join(
        wrong
    )


# --------------------------------------------------------------------------- other mentions


def test_every_other_mention_lists_the_same_parameters() -> None:
    forms = documented()
    wrong = []
    for path in MENTIONS:
        if path == TRUTH:
            continue
        text = path.read_text(encoding="utf-8")
        for match in FORM.finditer(text):
            form = form_of(match)
            truth = forms.get(form.key)
            if truth is None or not match["query"]:
                continue
            if form.params != truth.params:
                line = text.count("\n", 0, match.start()) + 1
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: `{form.text}` differs from "
                    f"docs/configuration.md's `{truth.text}`"
                )
    assert not wrong, "\n".join(wrong)


def test_the_cli_source_help_spells_every_form_as_the_table() -> None:
    help_text = " ".join(SOURCE_HELP.split())
    missing = [form.text for form in documented().values() if form.text not in help_text]
    assert not missing, (
        "scaling_credentials.cli.SOURCE_HELP must spell every form as docs/configuration.md "
        "does; add: " + ", ".join(missing)
    )
