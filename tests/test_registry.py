"""Source URIs, the entry-point registry (first-party and third-party plugins) and
provider_from_env."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import pytest

from scaling_credentials import (
    ConfigurationError,
    EnvProvider,
    FileProvider,
    SourceURI,
    provider_from_env,
    provider_from_uri,
)
from scaling_credentials._registry import ENTRY_POINT_GROUP, installed_schemes
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret

MARKER = "LEAKMARKER5t6y"
KEY = f"scl_live_{MARKER}0123456789abcd"


def rendered(error: BaseException) -> str:
    return "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        ]
    )


# ---------------------------------------------------------------- SourceURI.parse


@pytest.mark.parametrize(
    ("uri", "scheme", "path", "params"),
    [
        ("env:NAME", "env", "NAME", {}),
        ("env:", "env", "", {}),
        ("ENV:NAME", "env", "NAME", {}),
        ("  env:NAME \n", "env", "NAME", {}),
        ("file:/p?field=f", "file", "/p", {"field": "f"}),
        ("file:/run/secrets/key", "file", "/run/secrets/key", {}),
        ("file:///abs/key", "file", "/abs/key", {}),
        ("file:///abs/key?field=api_key", "file", "/abs/key", {"field": "api_key"}),
        ("file:relative/key", "file", "relative/key", {}),
        ("file:/a%20b/c%3Fd", "file", "/a b/c?d", {}),
        ("file:/p?field=a%20b", "file", "/p", {"field": "a b"}),
        ("file:/p?field=", "file", "/p", {"field": ""}),
        ("vault://secret/scaling", "vault", "secret/scaling", {}),
        (
            "aws-sm:prod/scaling?field=api_key&region=eu-west-1&stage=AWSPREVIOUS",
            "aws-sm",
            "prod/scaling",
            {"field": "api_key", "region": "eu-west-1", "stage": "AWSPREVIOUS"},
        ),
        ("aws-lambda-extension:prod/scaling", "aws-lambda-extension", "prod/scaling", {}),
        ("my.plugin+v2:thing", "my.plugin+v2", "thing", {}),
    ],
)
def test_parse(uri: str, scheme: str, path: str, params: dict[str, str]) -> None:
    parsed = SourceURI.parse(uri)
    assert parsed.scheme == scheme
    assert parsed.path == path
    assert dict(parsed.params) == params


def test_parse_result_is_frozen_and_printable() -> None:
    parsed = SourceURI.parse("file:/p?field=f")
    assert str(parsed) == "file:/p?field=f"
    assert str(SourceURI.parse("env:X")) == "env:X"
    with pytest.raises(AttributeError):
        parsed.path = "/other"  # type: ignore[misc]
    assert parsed == SourceURI("file", "/p", {"field": "f"})


def test_duplicate_parameter_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'field' is given twice"):
        SourceURI.parse("file:/p?field=a&field=b")


@pytest.mark.parametrize(
    "uri", ["", "   ", "noscheme", ":path", "1env:x", "en v:x", "env_x:y", "/run/secrets/key"]
)
def test_malformed_uri(uri: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SourceURI.parse(uri)
    assert isinstance(info.value, ValueError)
    assert "expected scheme:path" in str(info.value)


@pytest.mark.parametrize("uri", [None, 42, b"env:X"])
def test_non_str_uri(uri: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a str"):
        SourceURI.parse(uri)  # type: ignore[arg-type]


def test_long_garbage_is_shortened_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        SourceURI.parse("x" * 500)
    assert "x" * 81 not in str(info.value)
    assert "..." in str(info.value)


@pytest.mark.parametrize(
    "pasted",
    [KEY, f"  {KEY}\n", f"Bearer {KEY}", f"SCALING_API_KEY={KEY}", f"export SCALING_API_KEY={KEY}"],
    ids=["bare", "padded", "bearer", "assignment", "export"],
)
def test_a_pasted_key_is_not_echoed(pasted: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        provider_from_uri(pasted)
    assert_no_secret(MARKER, rendered(info.value))


@pytest.mark.parametrize(
    "uri", [f"env:{KEY}", f"file:{KEY}", f"file:/p?field={KEY}"], ids=["env", "file", "field"]
)
def test_a_key_pasted_after_a_scheme_is_refused_without_echo(uri: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        provider_from_uri(uri)
    assert_no_secret(MARKER, rendered(info.value))


def test_parameter_value_is_not_echoed_for_an_unknown_parameter() -> None:
    with pytest.raises(ConfigurationError) as info:
        provider_from_uri(f"env:X?token={KEY}")
    assert_no_secret(MARKER, rendered(info.value))


# ---------------------------------------------------------------- check_params, require_path


def test_check_params_accepts_known_parameters() -> None:
    SourceURI("file", "/p", {"field": "f"}).check_params(["field"])
    SourceURI("env", "X", {}).check_params(())


def test_check_params_lists_unknown_and_accepted() -> None:
    uri = SourceURI("vault", "p", {"zeta": "1", "alpha": "2", "field": "f"})
    with pytest.raises(ConfigurationError) as info:
        uri.check_params(["field", "mount"])
    message = str(info.value)
    assert "alpha, zeta" in message
    assert "accepted: field, mount" in message
    assert "vault:" in message


def test_check_params_with_nothing_accepted() -> None:
    with pytest.raises(ConfigurationError, match="accepted: none"):
        SourceURI("env", "X", {"field": "f"}).check_params(())


def test_require_path() -> None:
    assert SourceURI("file", "/p").require_path("a path") == "/p"
    with pytest.raises(ConfigurationError, match="file: source URI needs a path"):
        SourceURI("file", "").require_path("a path")


# ---------------------------------------------------------------- provider_from_uri


def test_env_uri_builds_env_provider() -> None:
    provider = provider_from_uri("env:MY_KEY_VAR")
    assert isinstance(provider, EnvProvider)
    assert provider.name == "MY_KEY_VAR"
    assert provider.describe() == "env:MY_KEY_VAR"


def test_bare_env_uri_means_scaling_api_key() -> None:
    provider = provider_from_uri("env:")
    assert isinstance(provider, EnvProvider)
    assert provider.name == "SCALING_API_KEY"


def test_env_uri_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALING_REGISTRY_TEST_KEY", KEY)
    assert_key_is(provider_from_uri("env:SCALING_REGISTRY_TEST_KEY").fetch(), KEY)


def test_env_uri_takes_no_parameters() -> None:
    with pytest.raises(ConfigurationError, match="unknown parameter"):
        provider_from_uri("env:X?field=f")


def test_file_uri_builds_file_provider(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"api_key": KEY}))
    provider = provider_from_uri(f"file://{path}?field=api_key")
    assert isinstance(provider, FileProvider)
    assert provider.path == str(path)
    assert provider.field == "api_key"
    assert_key_is(provider.fetch(), KEY)


def test_file_uri_with_empty_field_means_no_field(tmp_path: Path) -> None:
    provider = provider_from_uri(f"file:{tmp_path}/k?field=")
    assert isinstance(provider, FileProvider)
    assert provider.field is None


def test_file_uri_percent_decoded_path(tmp_path: Path) -> None:
    path = tmp_path / "my key"
    path.write_text(KEY)
    provider = provider_from_uri(f"file:{tmp_path}/my%20key")
    assert_key_is(provider.fetch(), KEY)


def test_file_uri_needs_a_path_and_known_parameters() -> None:
    with pytest.raises(ConfigurationError, match="needs a path"):
        provider_from_uri("file:")
    with pytest.raises(ConfigurationError, match="accepted: field"):
        provider_from_uri("file:/p?region=x")


def test_unknown_scheme_lists_installed_schemes() -> None:
    with pytest.raises(ConfigurationError) as info:
        provider_from_uri("nosuch:thing")
    message = str(info.value)
    assert "'nosuch'" in message
    assert ENTRY_POINT_GROUP in message
    for scheme in installed_schemes():
        assert scheme.scheme in message
    assert "env" in message
    assert "file" in message


def test_installed_schemes_lists_the_built_ins_without_importing() -> None:
    schemes = {s.scheme: s for s in installed_schemes()}
    assert schemes["env"].distribution == "scaling-credentials"
    assert schemes["env"].value == "scaling_credentials._env:EnvProvider.from_uri"
    assert schemes["file"].value == "scaling_credentials._file:FileProvider.from_uri"
    assert schemes["file"].version
    assert [s.scheme for s in installed_schemes()] == sorted(schemes)


def _hide_distribution(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make importlib.metadata.entry_points answer as if ``name`` were not installed
    (the real entry points of every other distribution stay)."""
    real = importlib.metadata.entry_points

    def entry_points(*, group: str, **params: Any) -> importlib.metadata.EntryPoints:
        found = real(group=group, **params)
        return importlib.metadata.EntryPoints(
            ep for ep in found if ep.dist is None or ep.dist.metadata["Name"] != name
        )

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


@pytest.mark.parametrize(
    ("uri", "distribution", "extra"),
    [
        ("aws-sm:prod/scaling", "scaling-credentials-aws", "scaling-credentials[aws]"),
        ("aws-ssm:/prod/scaling", "scaling-credentials-aws", "scaling-credentials[aws]"),
        ("aws-lambda-extension:prod/x", "scaling-credentials-aws", "scaling-credentials[aws]"),
        ("vault:scaling?field=api_key", "scaling-credentials-vault", "scaling-credentials[vault]"),
    ],
)
def test_missing_first_party_extra_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, uri: str, distribution: str, extra: str
) -> None:
    _hide_distribution(monkeypatch, distribution)
    with pytest.raises(ConfigurationError) as info:
        provider_from_uri(uri)
    message = str(info.value)
    assert f"pip install '{extra}'" in message
    assert "installed schemes:" in message
    assert "env" in message
    # The other schemes keep working.
    assert isinstance(provider_from_uri("env:X"), EnvProvider)


# ---------------------------------------------------------------- third-party plugins

PLUGIN_MODULE = """
from scaling_credentials import ApiKey, Provider


class StaticProvider(Provider):
    def __init__(self, path, params):
        self.path = path
        self.params = params

    def fetch(self):
        return ApiKey("scl_live_fromplugin0123456789", source=self.describe())

    def describe(self):
        return "myscheme:" + self.path


def make(uri):
    uri.check_params(["flavour"])
    return StaticProvider(uri.path, dict(uri.params))


def not_a_provider(uri):
    return "just a string"
"""

BROKEN_MODULE = """
raise ImportError("brokenplugin needs a library that is not installed")
"""

SCRIPT = """
import json, sys
from scaling_credentials import ConfigurationError, provider_from_uri
from scaling_credentials._registry import installed_schemes

out = {}
def attempt(name, uri):
    try:
        provider = provider_from_uri(uri)
        out[name] = {"ok": True, "describe": provider.describe(),
                     "key": provider.fetch().masked, "type": type(provider).__name__}
    except ConfigurationError as exc:
        out[name] = {"ok": False, "error": str(exc)}

attempt("plugin", "myscheme:some/where?flavour=mint")
attempt("plugin-bad-param", "myscheme:x?colour=red")
attempt("broken", "brokenscheme:x")
attempt("not-provider", "notprovider:x")
attempt("env", "env:PLUGIN_TEST_KEY")
attempt("file", "file:" + sys.argv[1])
out["schemes"] = [[s.scheme, s.value, s.distribution, s.version] for s in installed_schemes()]
out["broken_imported"] = "brokenplugin" in sys.modules
print(json.dumps(out))
"""


def _write_distribution(root: Path, name: str, version: str, entry_points: str) -> None:
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test plugin\n"
    )
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("plugins")
    (root / "fakeplugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    (root / "brokenplugin.py").write_text(textwrap.dedent(BROKEN_MODULE))
    _write_distribution(
        root,
        "fakeplugin",
        "1.0",
        "myscheme = fakeplugin:make\nnotprovider = fakeplugin:not_a_provider",
    )
    _write_distribution(root, "brokenplugin", "2.3", "brokenscheme = brokenplugin:make")
    key_file = root / "key"
    key_file.write_text("scl_live_fromfile0123456789")
    script = root / "check_plugins.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PLUGIN_TEST_KEY"] = "scl_live_fromenv0123456789"
    done = subprocess.run(
        [sys.executable, str(script), str(key_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_third_party_plugin_builds_its_provider(plugin_run: dict[str, Any]) -> None:
    plugin = plugin_run["plugin"]
    assert plugin["ok"], plugin
    assert plugin["type"] == "StaticProvider"
    assert plugin["describe"] == "myscheme:some/where"
    assert plugin["key"] == "scl_live_****6789"


def test_third_party_plugin_uses_check_params(plugin_run: dict[str, Any]) -> None:
    result = plugin_run["plugin-bad-param"]
    assert not result["ok"]
    assert "colour" in result["error"]
    assert "accepted: flavour" in result["error"]


def test_installed_schemes_lists_third_party_with_distribution(
    plugin_run: dict[str, Any],
) -> None:
    schemes = {row[0]: row for row in plugin_run["schemes"]}
    assert schemes["myscheme"] == ["myscheme", "fakeplugin:make", "fakeplugin", "1.0"]
    assert schemes["brokenscheme"] == ["brokenscheme", "brokenplugin:make", "brokenplugin", "2.3"]
    assert schemes["env"][2] == "scaling-credentials"
    assert schemes["file"][2] == "scaling-credentials"
    # Listing does not import the plugins: only provider_from_uri("brokenscheme:") tried.
    assert plugin_run["broken_imported"] is False


def test_broken_plugin_fails_only_its_own_scheme(plugin_run: dict[str, Any]) -> None:
    broken = plugin_run["broken"]
    assert not broken["ok"]
    message = broken["error"]
    assert "brokenscheme" in message
    assert "brokenplugin" in message  # the distribution to reinstall
    assert "ImportError" in message
    assert "pip install" in message
    assert plugin_run["env"] == {
        "ok": True,
        "describe": "env:PLUGIN_TEST_KEY",
        "key": "scl_live_****6789",
        "type": "EnvProvider",
    }
    assert plugin_run["file"]["ok"], plugin_run["file"]
    assert plugin_run["plugin"]["ok"]


def test_factory_returning_a_non_provider_is_refused(plugin_run: dict[str, Any]) -> None:
    result = plugin_run["not-provider"]
    assert not result["ok"]
    assert "not a scaling_credentials.Provider" in result["error"]


# ---------------------------------------------------------------- provider_from_env


def test_env_source_uri_wins_over_everything(tmp_path: Path) -> None:
    environ = {
        "SCALING_API_KEY_SOURCE": "env:OTHER_VAR",
        "SCALING_API_KEY": KEY,
        "SCALING_API_KEY_FILE": str(tmp_path / "key"),
    }
    provider = provider_from_env(environ)
    assert isinstance(provider, EnvProvider)
    assert provider.name == "OTHER_VAR"


def test_env_key_wins_over_file(tmp_path: Path) -> None:
    environ = {"SCALING_API_KEY": KEY, "SCALING_API_KEY_FILE": str(tmp_path / "key")}
    provider = provider_from_env(environ)
    assert isinstance(provider, EnvProvider)
    assert provider.name == "SCALING_API_KEY"
    # The provider reads the mapping it was given, not os.environ.
    assert_key_is(provider.fetch(), KEY)


def test_env_file_when_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    provider = provider_from_env({"SCALING_API_KEY_FILE": str(path)})
    assert isinstance(provider, FileProvider)
    assert provider.path == str(path)
    assert_key_is(provider.fetch(), KEY)


def test_blank_source_and_file_are_ignored(tmp_path: Path) -> None:
    provider = provider_from_env(
        {"SCALING_API_KEY_SOURCE": "  ", "SCALING_API_KEY": KEY, "SCALING_API_KEY_FILE": " "}
    )
    assert isinstance(provider, EnvProvider)


def test_nothing_configured_explains_all_three() -> None:
    with pytest.raises(ConfigurationError) as info:
        provider_from_env({"UNRELATED": "x"})
    message = str(info.value)
    for name in ("SCALING_API_KEY_SOURCE", "SCALING_API_KEY", "SCALING_API_KEY_FILE"):
        assert name in message


def test_bad_source_uri_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        provider_from_env({"SCALING_API_KEY_SOURCE": "nosuch:x", "SCALING_API_KEY": KEY})


def test_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCALING_API_KEY_SOURCE", "SCALING_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCALING_API_KEY", KEY)
    provider = provider_from_env()
    assert isinstance(provider, EnvProvider)
    assert_key_is(provider.fetch(), KEY)
    monkeypatch.delenv("SCALING_API_KEY")
    with pytest.raises(ConfigurationError):
        provider_from_env()
